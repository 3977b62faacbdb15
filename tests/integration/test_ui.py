"""`genlib ui` serves the MLflow UI on genlib's own store (a real server on loopback), prints the
runs page of the latest experiment, and phones nobody home."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from genlib.tracking import Tracker

pytestmark = pytest.mark.integration

# Environment variables under which MLflow turns its telemetry off by itself (CI systems, pytest):
# removed from the server's environment, so that only genlib's own default can turn it off.
MLFLOW_CI_MARKERS = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS",
                     "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION",
                     "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID",
                     "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, data: dict | None = None) -> bytes:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


def test_ui_prints_the_runs_page_of_the_latest_experiment_and_has_telemetry_off(genlib_home):
    tracker = Tracker()
    with tracker.run("genlib-digits", "train-vae", tags={"genlib.stage": "train"}) as run_id:
        tracker.log_metrics(run_id, {"val_loss": 1.5}, step=1)
    experiment = tracker.experiment_id("genlib-digits")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_CI_MARKERS}
    proc = subprocess.Popen([sys.executable, "-m", "genlib.cli", "ui", "--no-browser", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while not any(line.startswith("runs of genlib-digits") for line in lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"genlib ui printed no runs page: {''.join(lines)[-3000:]}")
            time.sleep(0.3)
        printed = next(line for line in lines if line.startswith("runs of genlib-digits")).split(": ", 1)[1].strip()
        assert printed == f"{base}/#/experiments/{experiment}/runs?workflowType=machine_learning"
        found = json.loads(_get(base + "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment]}))
        assert [r["info"]["run_id"] for r in found["runs"]] == [run_id]
        telemetry = json.loads(_get(base + "/ajax-api/3.0/mlflow/ui-telemetry"))
        assert telemetry["disable_ui_telemetry"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_telemetry_is_off_by_default_and_a_users_setting_wins():
    code = "import genlib, os; print(os.environ['MLFLOW_DISABLE_TELEMETRY'], os.environ['RAY_USAGE_STATS_ENABLED'])"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "RAY_USAGE_STATS_ENABLED")}
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert default.stdout.split() == ["true", "0"]
    mine = subprocess.run([sys.executable, "-c", code], env={**env, "MLFLOW_DISABLE_TELEMETRY": "false"},
                          capture_output=True, text=True, check=True)
    assert mine.stdout.split() == ["false", "0"]

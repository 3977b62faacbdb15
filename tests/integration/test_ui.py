"""`genlib ui` serves the MLflow UI on genlib's own store (a real server on loopback)."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from genlib.tracking import Tracker

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, data: dict | None = None) -> bytes:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


def test_ui_serves_genlib_runs(genlib_home):
    tracker = Tracker()
    with tracker.run("genlib-digits", "train-vae") as run_id:
        tracker.log_metrics(run_id, {"val_loss": 1.5}, step=0)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "genlib.cli", "ui", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                page = _get(base + "/").decode()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"MLflow UI did not come up: {proc.stdout.read() if proc.poll() is not None else 'timeout'}")
                time.sleep(0.5)
        assert "MLflow" in page or "<div id=\"root\"" in page
        found = json.loads(_get(base + "/api/2.0/mlflow/runs/search",
                                {"experiment_ids": [tracker.experiment_id("genlib-digits")]}))
        assert [r["info"]["run_id"] for r in found["runs"]] == [run_id]
    finally:
        proc.terminate()
        proc.wait(timeout=30)

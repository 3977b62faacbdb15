"""MLflow server mode: `genlib server` on loopback (2 workers, its default), two pipelines logging to it at
once: two server processes writing to one SQLite store."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from genlib.cli import server_command, server_env
from genlib.tracking import Tracker

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_server(genlib_home, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "mlflow-server.log", "w")
    proc = subprocess.Popen(server_command("127.0.0.1", port, workers=2), stdout=log, stderr=subprocess.STDOUT,
                            env=server_env())
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(tmp_path / 'mlflow-server.log').read_text()}")
            time.sleep(0.5)
    yield url, tmp_path / "mlflow-server.log"
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_two_pipelines_at_once_lose_nothing_and_stop_training_when_validation_stalls(ray_local, mlflow_server,
                                                                                      prefect_api):
    """Each pipeline trains the exact independent-pixel model for up to 3 epochs with a patience of 1:
    its first EM step fits it exactly (one worker: every image counted once), so epoch 2 does not
    improve on epoch 1 and training stops there, its best checkpoint (epoch 1) selected."""
    url, server_log = mlflow_server
    base = {**os.environ, "MLFLOW_TRACKING_URI": url, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address,
            "PREFECT_API_URL": prefect_api}
    procs = []
    for i in range(2):  # a writer for each of the server's workers; one Prefect API, Ray, MLflow server, GENLIB_HOME
        env = dict(base)
        cmd = [sys.executable, "-m", "genlib.cli", "pipeline", "digits-quick", "--models=[{family: categorical}]",
               "--train.epochs=3", "--train.patience=1", "--train.num_workers=1", "--eval.n_generated=0", "--reweight.retrain=[]",
               f"--tracking.run_name=pipeline-{i}", f"--train.seed={i}"]  # no stage shared through the cache
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
    for text in (*outputs, server_log.read_text()):
        assert "database is locked" not in text

    tracker = Tracker(url)
    experiment = tracker.experiment_id("genlib-digits")
    parents = tracker.client.search_runs([experiment], filter_string="tags.`genlib.stage` = 'pipeline'")
    assert sorted(r.info.run_name for r in parents) == [f"pipeline-{i}" for i in range(2)]
    for parent in parents:
        assert parent.info.status == "FINISHED"
        assert {"report.html", "summary.json", "summary.md"} <= set(tracker.list_artifacts(parent.info.run_id))
        children = {r.info.run_name: r for r in tracker.child_runs(parent.info.run_id)}
        assert set(children) == {"train-categorical", "evaluate-categorical"}
        train_run = children["train-categorical"]
        assert [m.step for m in tracker.client.get_metric_history(train_run.info.run_id, "val_loss")] == [1, 2]
        assert train_run.data.tags["genlib.stopped_early_at_epoch"] == "2"
        assert train_run.data.tags["genlib.selected_epoch"] == "1"
        assert "checkpoint/model.safetensors" in tracker.list_artifacts(train_run.info.run_id)
        assert 2.0 < children["evaluate-categorical"].data.metrics["test_bpd"] < 3.0

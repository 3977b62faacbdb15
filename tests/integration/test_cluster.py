"""Ray cluster mode on a simulated two-node cluster (real raylets, one CPU each), in its own
process so that it does not disturb the session's local Ray."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genlib.tracking import Tracker

pytestmark = pytest.mark.integration


def test_two_node_training_recovers_a_lost_worker_in_one_mlflow_run(genlib_home, tmp_path):
    out = tmp_path / "report.json"
    job = Path(__file__).with_name("cluster_job.py")
    done = subprocess.run([sys.executable, str(job), str(out), str(tmp_path / "shared-storage")],
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["nodes"] == 2
    assert "2 nodes: set train.storage_path" in report["refused"]

    tracker = Tracker()
    runs = tracker.client.search_runs([tracker.experiment_id("genlib-digits")])
    assert [r.info.run_id for r in runs] == [report["run_id"]]  # the refused attempt opened no run
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["genlib.resumed_from_epoch"] == "1"
    history = tracker.client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2, 3]  # each epoch once, across the restart
    assert report["epoch"] == 3

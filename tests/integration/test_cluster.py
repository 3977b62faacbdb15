"""Ray cluster mode on a simulated two-node cluster (real raylets, one CPU each), in its own
process so that it does not disturb the session's local Ray."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genlib.config import DataConfig
from genlib.data.prepare import prepare
from genlib.models.io import read_sampling_weights, read_state
from genlib.tracking import Tracker

pytestmark = pytest.mark.integration


def test_two_node_training_recovers_a_lost_worker_in_one_mlflow_run_with_its_sampling_weights(genlib_home, tmp_path):
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
    assert run.info.status == "FINISHED" and run.data.tags["genlib.resumed_from_epoch"] == "3"
    history = tracker.client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2, 3, 4]  # each epoch once, across the restart
    assert report["epoch"] == 4
    # Adaptive reweighting: computed once, before epoch 3, on both nodes; epoch 4, in the restarted
    # worker group, drew from the weights restored from epoch 3's checkpoint (not the uniform start,
    # and not recomputed).
    updates = tracker.client.get_metric_history(run.info.run_id, "reweight_ess_fraction")
    assert [m.step for m in updates] == [3] and updates[0].value >= 0.2 - 1e-6
    folders = {p.name: p for p in (tmp_path / "shared-storage").glob("**/epoch_0000[34]")}
    assert set(folders) == {"epoch_00003", "epoch_00004"}
    third, fourth = (read_sampling_weights(folders[f"epoch_0000{e}"]) for e in (3, 4))
    assert third.std() > 0 and third.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(fourth, third)
    # The training context resumed too: images seen by both workers over four epochs, counted once.
    n = prepare(DataConfig(source="digits")).manifest["splits"]["train"]
    assert read_state(folders["epoch_00004"])["images_seen"] == 4 * 2 * math.ceil(n / 2)

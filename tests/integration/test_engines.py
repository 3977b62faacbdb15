"""The engines as a user meets them: Ctrl-C, a second Ray instance on the machine, resources the
cluster does not have. The real `genlib` command (in subprocesses where it must own its process)
against this session's Ray, which for genlib's own instance is someone else's."""

import os
import subprocess
import sys

import pytest

from genlib import paths
from genlib.tracking import Tracker

pytestmark = pytest.mark.integration

TRAIN = ["train", "digits-quick", "--models=[]", "--model.hidden=8", "--train.epochs=4", "--train.num_workers=1",
         "--eval.n_samples=16", "--train.sample_every=10", "--train.select_by=last"]


def _genlib(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genlib.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _steps(tracker: Tracker, run_id: str) -> list[int]:
    return [m.step for m in tracker.client.get_metric_history(run_id, "val_loss")]


def test_ctrl_c_marks_the_run_killed_and_the_same_command_resumes_after_the_last_reported_epoch(
        ray_local, genlib_home):
    """Ctrl-C right after epoch 1's report (before Ray Train's controller records it), then again
    after epoch 3: each relaunch resumes in the same MLflow run, each epoch logged once."""
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    tracker = Tracker()
    for epoch, logged in ((1, [1]), (3, [1, 2, 3])):
        # The first time with Ray Train's controller polling the workers only every 3 s (genlib's
        # default: 0.2 s): the Ctrl-C surely lands before Ray records epoch 1's checkpoint.
        slow = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "3"} if epoch == 1 else {}
        stopped = _genlib({**env, **slow, "GENLIB_CHAOS_INTERRUPT_DRIVER_AT_EPOCH": str(epoch)}, *TRAIN)
        assert stopped.returncode == 130, stopped.stderr[-3000:]
        assert "is marked KILLED; the same command resumes it from its last checkpoint" in stopped.stderr
        (run,) = tracker.client.search_runs([tracker.experiment_id("genlib-digits")])
        assert run.info.status == "KILLED" and _steps(tracker, run.info.run_id) == logged
        assert not (paths.home() / "checkpoints").exists()  # no local copy of a checkpoint, half-made or whole
        if epoch == 3:
            assert run.data.tags["genlib.resumed_from_epoch"] == "1"
    done = _genlib(env, *TRAIN)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = tracker.client.search_runs([tracker.experiment_id("genlib-digits")])
    assert run.info.status == "FINISHED" and run.data.tags["genlib.resumed_from_epoch"] == "3"
    assert _steps(tracker, run.info.run_id) == [1, 2, 3, 4]


def test_genlib_starts_its_own_ray_instance_beside_another_one(ray_local, genlib_home):
    """Another Ray instance runs on this machine (the session's): without RAY_ADDRESS genlib starts
    its own and runs there, and Ray's state API does not trip over the two."""
    other = ray_local.get_runtime_context().gcs_address
    jobs_before = len(ray_local._private.state.jobs())
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = _genlib(env, *TRAIN, "--train.epochs=1")
    assert done.returncode == 0, done.stderr[-3000:]
    started = next(line for line in done.stderr.splitlines() if line.startswith("genlib: started a local Ray"))
    assert other.split(":")[-1] not in started.split(" at ")[1]
    assert "Found multiple active Ray instances" not in done.stdout + done.stderr
    assert len(ray_local._private.state.jobs()) == jobs_before  # nothing ran on the other instance


@pytest.mark.parametrize("override,asked", [("--train.gpus_per_worker=1", "1 CPU + 1 GPU"),
                                            ("--train.cpus_per_worker=64", "64 CPU"),
                                            ("--train.num_workers=64", "1 CPU")])
def test_resources_the_cluster_lacks_are_refused_before_anything_starts(ray_local, genlib_home, capsys,
                                                                        override, asked):
    from genlib.cli import main

    cpus = ray_local.cluster_resources()["CPU"]
    assert main([*TRAIN, override]) == 2
    err = capsys.readouterr().err
    assert f"workers of {asked} each cannot be placed on this Ray cluster (1 node): it has {cpus:g} CPU, 0 GPU" in err
    assert "Lower train.num_workers, train.cpus_per_worker or train.gpus_per_worker" in err
    assert not genlib_home.exists() or not any(genlib_home.iterdir())  # no dataset, no MLflow run

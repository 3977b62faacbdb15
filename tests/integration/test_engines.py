"""The engines as a user meets them: Ctrl-C, a second Ray instance on the
machine, resources the cluster does not have. The real `genlib` command (in subprocesses where it
must own its process) against this session's Ray, which for genlib's own instance is someone else's."""

import os
import subprocess
import sys

import pytest

from genlib import paths
from genlib.tracking import Tracker

pytestmark = pytest.mark.integration

TRAIN = ["train", "digits-quick", "--models=[]", "--model.hidden=8", "--train.epochs=2", "--train.num_workers=1",
         "--eval.n_samples=16", "--train.sample_every=10", "--train.select_by=last"]


def _genlib(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genlib.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _run(tracker: Tracker):
    (run,) = tracker.client.search_runs([tracker.experiment_id("genlib-digits")])  # one job, one MLflow run
    return run, [m.step for m in tracker.client.get_metric_history(run.info.run_id, "val_loss")]


def test_a_job_stopped_by_ctrl_c_resumes_in_one_run_each_epoch_logged_once(ray_local, genlib_home):
    """1. genlib's own Ray instance, beside the session's: Ctrl-C right after epoch 1's report,
    before Ray Train's controller records it. 2. The same command, joining the session's Ray,
    finishes the job from there. (A driver killed outright, ``GENLIB_CHAOS_KILL_DRIVER_AT_EPOCH``,
    takes the same resume path with the run left RUNNING.)"""
    other = ray_local.get_runtime_context().gcs_address
    jobs_before = len(ray_local._private.state.jobs())
    own = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    joined = {**own, "RAY_ADDRESS": other}
    tracker = Tracker()

    # Ray Train's controller polls the workers every 3 s here (genlib's default: 0.2 s), so the
    # Ctrl-C surely lands before Ray has recorded epoch 1's checkpoint.
    first = _genlib({**own, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "3", "GENLIB_CHAOS_INTERRUPT_DRIVER_AT_EPOCH": "1"},
                    *TRAIN)
    assert first.returncode == 130, first.stderr[-3000:]
    assert "is marked KILLED; the same command resumes it from its last checkpoint" in first.stderr
    started = next(line for line in first.stderr.splitlines() if line.startswith("genlib: started a local Ray"))
    assert other.split(":")[-1] not in started.split(" at ")[1]
    assert "its dashboard is off, GENLIB_RAY_DASHBOARD=1 turns it on" in started
    assert "Found multiple active Ray instances" not in first.stdout + first.stderr
    assert len(ray_local._private.state.jobs()) == jobs_before  # nothing ran on the other instance
    run, logged = _run(tracker)
    assert run.info.status == "KILLED" and logged == [1]
    assert not (paths.home() / "checkpoints").exists()  # no local copy of a checkpoint, half-made or whole

    done = _genlib(joined, *TRAIN)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"genlib: joining the Ray cluster at {other}" in done.stderr
    run, logged = _run(tracker)
    assert run.info.status == "FINISHED" and run.data.tags["genlib.resumed_from_epoch"] == "1"
    assert run.data.tags["genlib.driver_relaunched"] == "true" and logged == [1, 2]


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

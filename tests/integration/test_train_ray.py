"""Real Ray Train (local cluster, gloo), real MLflow (SQLite): training, resume, failure."""

import pytest

from genlib import paths
from genlib.data.prepare import prepare
from genlib.models.io import load_model, read_state
from genlib.presets import load_config
from genlib.stages.train import train
from genlib.tracking import Tracker

pytestmark = pytest.mark.integration

from tests.conftest import QUICK


def _history(tracker, run_id, key):
    return [m.step for m in tracker.client.get_metric_history(run_id, key)]


def test_two_workers_ddp_logs_epochs_samples_and_checkpoint(vae_two_workers, monkeypatch):
    home, cfg, result = vae_two_workers
    monkeypatch.setenv("GENLIB_HOME", str(home))
    dataset = prepare(cfg.data).path
    tracker = Tracker()
    run = tracker.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.num_workers"] == "2" and run.data.params["model.family"] == "vae"
    assert dataset.name.endswith(run.data.tags["genlib.dataset_hash"][:12])
    assert _history(tracker, result.run_id, "train_loss") == [1, 2, 3]  # epochs count from 1
    assert _history(tracker, result.run_id, "val_loss") == [1, 2, 3]
    artifacts = {a.path for a in tracker.client.list_artifacts(result.run_id, "samples")}
    assert artifacts == {"samples/epoch_0002.png", "samples/epoch_0003.png"}
    ckpt = {a.path for a in tracker.client.list_artifacts(result.run_id, "checkpoint")}
    assert {"checkpoint/model.safetensors", "checkpoint/state.json", "checkpoint/optimizers.pt"} <= ckpt
    assert run.inputs.dataset_inputs[0].dataset.digest == run.data.tags["genlib.dataset_hash"][:32]
    # The selected checkpoint is the one with the lowest validation loss.
    val = {m.step: m.value for m in tracker.client.get_metric_history(result.run_id, "val_loss")}
    assert result.epoch == min(val, key=val.get)
    assert read_state(result.checkpoint)["epoch"] == result.epoch
    assert val[3] < val[1] and load_model(result.checkpoint).config == cfg.model
    # The memorization curve (train.eval_every=2): epoch 1, then every second epoch.
    for key in ("during_training_copy_rate_pixel", "during_training_copy_rate_pixel_robust"):
        assert _history(tracker, result.run_id, key) == [1, 2], key
    assert all(0.0 <= m.value <= 1.0 for m in tracker.client.get_metric_history(
        result.run_id, "during_training_copy_rate_pixel_robust"))


def test_evaluate_a_training_run_by_id(vae_two_workers, monkeypatch, tmp_path, capsys):
    """`genlib evaluate --run ID` finds the run's checkpoint, config and dataset by itself."""
    from genlib.cli import main
    from genlib.report import collect, render

    home, cfg, trained = vae_two_workers
    monkeypatch.setenv("GENLIB_HOME", str(home))
    assert main(["evaluate", "--run", trained.run_id, "--eval.n_generated=60", "--eval.copying_cells=1",
                 "--eval.knn=ivf", "--eval.iwae_k=4"]) == 0
    out = capsys.readouterr().out
    assert "test_iwae4_bpd" in out and "report.html" in out
    tracker = Tracker()
    runs = tracker.client.search_runs([tracker.get_run(trained.run_id).info.experiment_id],
                                      filter_string=f"tags.`genlib.train_run_id` = '{trained.run_id}'")
    assert len(runs) == 1 and runs[0].data.params["quality.n_generated"] == "60"
    scores = runs[0].data.metrics
    assert 0.5 <= scores["knn_recall_pixel"] <= 1.0  # the approximate index, its recall logged
    assert 0.0 < scores["test_iwae4_bpd"] <= scores["test_elbo_bpd"] + 0.01 < 5.0 and scores["fid_domain"] > 0
    assert runs[0].info.status == "FINISHED" and "report.html" in tracker.list_artifacts(runs[0].info.run_id)
    assert "memorization/during_training.png" in tracker.list_artifacts(runs[0].info.run_id)  # the training's curve
    # The report was rendered from the scores in memory; it is the page the recorded run gives.
    logged = tracker.download_artifacts(runs[0].info.run_id, "report.html", tmp_path).read_text()
    assert logged == render("genlib evaluation: vae", [collect(tracker, runs[0].info.run_id)])

    assert main(["evaluate", "--run", runs[0].info.run_id]) == 2  # an evaluate run is not a training run
    assert "is a 'evaluate' run; pass the id of a genlib training run" in capsys.readouterr().err
    assert main(["evaluate", "digits-quick"]) == 2
    assert "--run RUN_ID" in capsys.readouterr().err


def test_failure_without_retries_marks_run_failed(ray_local, monkeypatch):
    monkeypatch.setenv("GENLIB_CHAOS_KILL_AT_EPOCH", "1")
    cfg = load_config("digits-quick", QUICK + ["train.epochs=2", "train.num_workers=1", "train.max_failures=0"])
    tracker = Tracker()
    from ray.train import WorkerGroupError

    with pytest.raises(WorkerGroupError):  # Ray Train's error for a worker group that died for good
        train(cfg, prepare(cfg.data).path, tracker)
    runs = tracker.client.search_runs([tracker.experiment_id("genlib-digits")])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not (paths.home() / "checkpoints").exists()


def test_non_finite_loss_fails_the_run_naming_the_step_and_keeps_the_last_checkpoint(ray_local, monkeypatch):
    # digits train split: 1259 images, batch 128 → 10 steps per epoch; step 15 is in epoch 2.
    monkeypatch.setenv("GENLIB_CHAOS_NAN_AT_STEP", "15")
    cfg = load_config("digits-quick", QUICK + ["train.epochs=3", "train.num_workers=2", "train.max_failures=2"])
    tracker = Tracker()
    with pytest.raises(FloatingPointError, match=r"non-finite training loss at optimizer step 15 \(epoch 2") as err:
        train(cfg, prepare(cfg.data).path, tracker)
    (run,) = tracker.client.search_runs([tracker.experiment_id("genlib-digits")])
    assert run.info.status == "FAILED" and run.data.tags["genlib.nonfinite_step"] == "15"
    assert _history(tracker, run.info.run_id, "train_loss") == [1]  # the poisoned epoch is not logged
    last_good = str(err.value).split("Last good checkpoint: ")[1].split(". Lower")[0]
    assert read_state(last_good)["epoch"] == 1
    model = load_model(last_good)
    assert all(p.isfinite().all() for p in model.parameters())

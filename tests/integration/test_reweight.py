"""DB-VAE reweighting end to end: a real VAE run, reweighting its own training set as it trains on one
Ray Train worker (``train.reweight_every``; on two, with a restart: test_cluster.py) → `genlib reweight`
→ weights file in MLflow, and weights refused for another dataset. (Retraining with them on two
workers: test_pipeline.py.)"""


import numpy as np
import pytest

from genlib.cli import main
from genlib.config import DataConfig
from genlib.data.dataset import DatasetVersion
from genlib.data.prepare import prepare
from genlib.data.weights import read_weights
from genlib.models.io import load_model, read_sampling_weights
from genlib.presets import load_config
from genlib.stages.train import train
from genlib.tracking import Tracker
from genlib.train.adaptive import recompute_weights

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, ray_local):
    """One VAE trained on digits with class 3 thinned to 10 % in train, on one worker, its sampling weights
    recomputed from itself before epoch 2, in its own GENLIB_HOME, shared by this module's tests:
    (home, config, training result). (Two workers resuming with adaptive weights: test_cluster.py.)"""
    home = tmp_path_factory.mktemp("reweight") / "genlib-home"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GENLIB_HOME", str(home))
        cfg = load_config("digits-quick", ["train.epochs=2", "train.num_workers=1", "train.reweight_every=1",
                                           "train.batch_size=64", "models=[]",
                                           "model={family: vae, hidden: 8, latent_dim: 4}", "data.rare_class=3",
                                           "data.rare_keep=0.1", "reweight.classifier_seeds=1",
                                           "reweight.classifier_epochs=1"])
        return home, cfg, train(cfg, prepare(cfg.data).path)


def test_reweight_command_logs_the_weights_file_and_its_diagnostics(vae_run, monkeypatch, tmp_path, capsys):
    home, cfg, vae = vae_run
    monkeypatch.setenv("GENLIB_HOME", str(home))
    assert main(["reweight", "--vae-run", vae.run_id, "--reweight.bins=8"]) == 0
    out = capsys.readouterr().out
    run_id = out.split("MLflow run ")[1].split(":")[0]
    tracker = Tracker()
    run = tracker.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["genlib.vae_run_id"] == vae.run_id
    assert run.data.params["reweight.bins"] == "8" and run.data.params["reweight.method"] == "knn"
    assert run.data.metrics["ess_fraction"] >= 0.2 - 1e-6 and 0 < run.data.metrics["tau"] <= 1
    assert {"ess", "ess_fraction", "max_mean_ratio", "label_3_weight_ratio"} <= set(run.data.metrics)
    assert set(tracker.list_artifacts(run_id)) >= {
        "weights.parquet", "reweight/weight_histogram.png", "reweight/most_weighted.png",
        "reweight/least_weighted.png", "reweight/per_label.json"}

    downloaded, meta = read_weights(tracker.download_artifacts(run_id, "weights.parquet", tmp_path))
    local, _ = read_weights(out.split("weights file ")[1].split()[0])
    assert downloaded.equals(local) and meta["vae_run_id"] == vae.run_id
    assert len(downloaded) == prepare(cfg.data).manifest["splits"]["train"]
    assert downloaded["weight"].sum() == pytest.approx(1.0)
    # Training with them, on two DDP ranks: the pipeline's reweighted VAE (test_pipeline.py); the
    # sampler on one rank: test_sampling.py.


def test_weights_for_another_dataset_are_refused_before_training(vae_run, monkeypatch, capsys):
    home, cfg, vae = vae_run
    monkeypatch.setenv("GENLIB_HOME", str(home))
    assert main(["reweight", "--vae-run", vae.run_id, "--reweight.method=kde"]) == 0
    weights = capsys.readouterr().out.split("weights file ")[1].split()[0]
    other = load_config("digits-quick", ["models=[]", "model={family: vae}", "data.seed=7", f"train.weights={weights}"])
    with pytest.raises(ValueError, match="compute weights for this dataset with genlib reweight"):
        train(other, prepare(DataConfig(source="digits", seed=7)).path)
    assert main(["reweight", "--vae-run", "not-a-run"]) == 2


def test_adaptive_weights_on_one_worker_come_from_the_model_after_the_previous_epoch(vae_run, monkeypatch):
    home, cfg, vae = vae_run
    monkeypatch.setenv("GENLIB_HOME", str(home))
    ess = Tracker().client.get_metric_history(vae.run_id, "reweight_ess_fraction")
    assert [m.step for m in ess] == [2] and ess[0].value >= cfg.reweight.min_ess - 1e-6  # one update, before epoch 2
    # The weights epoch 2 drew from (kept in its checkpoint) are those of the model after epoch 1.
    folders = {p.name: p for p in home.glob("ray_results/**/epoch_0000[12]")}
    assert set(folders) == {"epoch_00001", "epoch_00002"}
    first = read_sampling_weights(folders["epoch_00001"])
    np.testing.assert_allclose(first, 1 / len(first))  # epoch 1: the uniform start
    version = DatasetVersion(prepare(cfg.data).path)
    expected, _ = recompute_weights(load_model(folders["epoch_00001"]), cfg, version, rank=0, world=1)
    np.testing.assert_allclose(read_sampling_weights(folders["epoch_00002"]), expected, rtol=1e-4)

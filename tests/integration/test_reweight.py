"""DB-VAE reweighting end to end: a real VAE run on two Ray Train workers, reweighting its own training
set as it trains (``train.reweight_every``; resuming with the weights after a lost worker:
test_cluster.py) → `genlib reweight` → weights file in MLflow, and weights refused for another
dataset. (Retraining with them on two workers: test_pipeline.py.)"""


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


def test_reweight_command_logs_the_weights_file_and_its_diagnostics(vae_two_workers, monkeypatch, tmp_path, capsys):
    home, cfg, vae = vae_two_workers
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


def test_weights_for_another_dataset_are_refused_before_training(vae_two_workers, monkeypatch, capsys):
    home, cfg, vae = vae_two_workers
    monkeypatch.setenv("GENLIB_HOME", str(home))
    assert main(["reweight", "--vae-run", vae.run_id, "--reweight.method=kde"]) == 0
    weights = capsys.readouterr().out.split("weights file ")[1].split()[0]
    other = load_config("digits-quick", ["models=[]", "model={family: vae}", "data.seed=7", f"train.weights={weights}"])
    with pytest.raises(ValueError, match="compute weights for this dataset with genlib reweight"):
        train(other, prepare(DataConfig(source="digits", seed=7)).path)
    assert main(["reweight", "--vae-run", "not-a-run"]) == 2


def test_adaptive_weights_on_two_workers_come_from_the_model_after_the_previous_epoch(vae_two_workers, monkeypatch):
    home, cfg, vae = vae_two_workers
    monkeypatch.setenv("GENLIB_HOME", str(home))
    ess = Tracker().client.get_metric_history(vae.run_id, "reweight_ess_fraction")
    assert [m.step for m in ess] == [3] and ess[0].value >= cfg.reweight.min_ess - 1e-6  # one update, before epoch 3
    # The weights epoch 3 drew from (kept in its checkpoint) are those of the model after epoch 2, as one
    # process computes them from that checkpoint: the two ranks' gathered latents give the same weights.
    folders = {p.name: p for p in home.glob("ray_results/**/epoch_0000[23]")}
    assert set(folders) == {"epoch_00002", "epoch_00003"}
    second = read_sampling_weights(folders["epoch_00002"])
    np.testing.assert_allclose(second, 1 / len(second))  # epochs 1 and 2: the uniform start
    version = DatasetVersion(prepare(cfg.data).path)
    expected, _ = recompute_weights(load_model(folders["epoch_00002"]), cfg, version, rank=0, world=1)
    third = read_sampling_weights(folders["epoch_00003"])
    assert third.std() > 0
    np.testing.assert_allclose(third, expected, rtol=1e-4)

"""Both translators through the real `genlib pipeline` (Prefect test server, Ray Train on two workers, MLflow
on SQLite) on the paired digits task at 8×8, then `genlib translate` from the registered model. At 8×8 domain
B is the digits version itself (the same content hash), so the session's digits feature network serves it."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration

MODELS = ("[{family: pix2pix, generator_channels: 8, discriminator_channels: 8, d_layers: 1}, "
          "{family: cyclegan, generator_channels: 8, res_blocks: 1, discriminator_channels: 8, d_layers: 1}]")
OVERRIDES = ["--data.image_size=8", "--train.epochs=2", "--train.num_workers=2", "--train.sample_every=2",
             "--eval.n_generated=100", "--eval.copying_cells=2", "--eval.robust_copies=none", f"--models={MODELS}"]


@pytest.fixture(scope="module")
def translators(tmp_path_factory, ray_local, prefect_api, _digits_domain_cache):
    """(env, home, tracker, the pipeline's runs by name): pix2pix and CycleGAN trained and evaluated on the
    paired digits task (CycleGAN ignores the pairing; its evaluation still has the true targets)."""
    from genlib.tracking import Tag, Tracker
    from tests.conftest import _install_domain_network

    home = tmp_path_factory.mktemp("translation") / "genlib-home"
    _install_domain_network(_digits_domain_cache, home)
    env = {**os.environ, "GENLIB_HOME": str(home), "GENLIB_OFFLINE": "1", "PREFECT_API_URL": prefect_api,
           "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "genlib.cli", "pipeline", "digits-pix2pix", *OVERRIDES],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tracker = Tracker(f"sqlite:///{home / 'mlflow.db'}")
    (parent,) = tracker.find_runs("genlib-digits-edges", {Tag.STAGE: "pipeline"})
    runs = {r.info.run_name: r for r in tracker.child_runs(parent.info.run_id)}
    return env, home, tracker, runs, done.stdout


def test_both_translators_train_on_two_workers_and_log_translation_grids(translators):
    _, _, tracker, runs, stdout = translators
    assert set(runs) == {"train-pix2pix", "evaluate-pix2pix", "train-cyclegan", "evaluate-cyclegan"}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    for family in ("pix2pix", "cyclegan"):
        run = runs[f"train-{family}"]
        assert run.data.params["train.num_workers"] == "2" and run.data.params["data.source"] == "digits-edges"
        assert [m.step for m in tracker.client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
        assert {a.path for a in tracker.client.list_artifacts(run.info.run_id, "samples")} == {"samples/epoch_0002.png"}
        assert f"[{family}] epoch 2/2" in stdout


def test_the_evaluation_scores_translations_against_targets_and_the_target_domain(translators):
    _, _, tracker, runs, stdout = translators
    pix2pix = runs["evaluate-pix2pix"].data.metrics
    cyclegan = runs["evaluate-cyclegan"].data.metrics
    for direction, scores in (("a2b", pix2pix), ("a2b", cyclegan), ("b2a", cyclegan)):
        assert 0 <= scores[f"l1_{direction}"] <= 1 and scores[f"psnr_{direction}"] > 0
        assert -1 <= scores[f"ssim_{direction}"] <= 1
        assert scores[f"fid_domain_{direction}"] > 0 and 0 <= scores[f"precision_domain_{direction}"] <= 1
        assert 0 <= scores[f"content_accuracy_domain_{direction}"] <= 1  # the digits' classes, kept or not
        assert 0 <= scores[f"copy_rate_pixel_{direction}"] <= 1
    assert "l1_b2a" not in pix2pix and "cycle_l1_a" not in pix2pix  # one direction only
    assert 0 <= cyclegan["cycle_l1_a"] <= 1 and 0 <= cyclegan["cycle_l1_b"] <= 1
    params = runs["evaluate-cyclegan"].data.params
    assert params["b2a.quality.reference_split"] == "test" and params["eval.directions"] == "a2b, b2a"
    # each direction in its target domain's own feature network
    assert params["a2b.quality.extractor_weights_sha256"] != params["b2a.quality.extractor_weights_sha256"]
    artifacts = set(tracker.list_artifacts(runs["evaluate-cyclegan"].info.run_id))
    assert artifacts >= {"samples/translations.png", "memorization/closest_pairs_a2b.png",
                         "memorization/closest_pairs_b2a.png", "report.html"}
    assert "l1_a2b" in stdout and "content_accuracy_domain_a2b" in stdout  # the summary's columns
    assert "Translate images:  .venv/bin/genlib translate" in stdout and "Draw samples" not in stdout
    assert "no likelihood" not in stdout  # a translator is not a sampler without one


def test_genlib_translate_writes_the_registered_models_translations(translators, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from genlib import cli
    from genlib.config import DataConfig
    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.models.io import load_model
    from genlib.runs import model_checkpoint

    _, home, tracker, _, _ = translators
    monkeypatch.setenv("GENLIB_HOME", str(home))  # the store `genlib translate` reads the registry from
    version = DatasetVersion(prepare(DataConfig(source="digits-edges", image_size=8)).path)
    inputs = np.array(version.domain("a").images("test")[:5])
    model = load_model(model_checkpoint(tracker, "models:/genlib-digits-edges-cyclegan/1")).eval()
    np.savez(tmp_path / "edges.npz", images=inputs, levels=17)
    expected = model.translate(torch.from_numpy(inputs).permute(0, 3, 1, 2)).numpy()
    for output in ("out.npz", "pngs"):
        assert cli.main(["translate", "--model", "models:/genlib-digits-edges-cyclegan/1", "--input",
                         str(tmp_path / "edges.npz"), "-o", str(tmp_path / output)]) == 0
        assert "5 images translated a2b by CycleGAN" in capsys.readouterr().out
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_array_equal(out["images"], expected)
        assert int(out["levels"]) == 17
    first = np.asarray(Image.open(tmp_path / "pngs" / "000000.png"))
    np.testing.assert_array_equal(first, np.round(expected[0, 0].astype(float) * 255 / 16).astype(np.uint8))
    assert cli.main(["sample", "--model", "models:/genlib-digits-edges-pix2pix/1", "-o", str(tmp_path / "g.png")]) == 2
    assert "does not sample from noise, it translates images" in capsys.readouterr().err

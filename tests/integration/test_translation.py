"""A translator through the real pipeline flow (Prefect test server, Ray Train on two workers, MLflow on
SQLite): CycleGAN — two generators, two discriminators, a history pool — on the paired digits task at 8×8 (it
ignores the pairing; its evaluation scores both directions against the true targets), then `genlib translate`
from the registered model. At 8×8 domain B is the digits version itself (the same content hash), so the
session's digits feature network serves it. pix2pix trains data-parallel in test_families_ddp.py and is scored
in tests/unit/test_translate_eval.py; bench/translation.py trains both on one and two Ray workers."""

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration

OVERRIDES = ["data.image_size=8", "train.epochs=2", "train.num_workers=2", "train.sample_every=2",
             "eval.n_generated=100", "eval.copying_cells=2", "eval.robust_copies=none",
             "models=[{family: cyclegan, generator_channels: 8, res_blocks: 1, discriminator_channels: 8, d_layers: 1}]"]


@pytest.fixture(scope="module")
def translators(tmp_path_factory, ray_local, prefect_api, _digits_domain_cache):
    """(home, tracker, the pipeline's runs by name, its summary as printed)."""
    from flows.pipeline import pipeline
    from genlib.stages.summary import format_summary
    from genlib.tracking import Tag, Tracker
    from tests.conftest import _install_domain_network

    home = tmp_path_factory.mktemp("translation") / "genlib-home"
    _install_domain_network(_digits_domain_cache, home)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GENLIB_HOME", str(home))
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        summary = pipeline("digits-pix2pix", OVERRIDES)
    tracker = Tracker(f"sqlite:///{home / 'mlflow.db'}")
    (parent,) = tracker.find_runs("genlib-digits-edges", {Tag.STAGE: "pipeline"})
    runs = {r.info.run_name: r for r in tracker.child_runs(parent.info.run_id)}
    return home, tracker, runs, format_summary(summary)


def test_a_translator_trains_on_two_workers_and_logs_translation_grids(translators):
    _, tracker, runs, _ = translators
    assert set(runs) == {"train-cyclegan", "evaluate-cyclegan"}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    run = runs["train-cyclegan"]
    assert run.data.params["train.num_workers"] == "2" and run.data.params["data.source"] == "digits-edges"
    assert [m.step for m in tracker.client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
    assert {a.path for a in tracker.client.list_artifacts(run.info.run_id, "samples")} == {"samples/epoch_0002.png"}


def test_the_evaluation_scores_translations_against_targets_and_the_target_domain(translators):
    _, tracker, runs, summary = translators
    cyclegan = runs["evaluate-cyclegan"].data.metrics
    for direction, scores in (("a2b", cyclegan), ("b2a", cyclegan)):
        assert 0 <= scores[f"l1_{direction}"] <= 1 and scores[f"psnr_{direction}"] > 0
        assert -1 <= scores[f"ssim_{direction}"] <= 1
        assert scores[f"fid_domain_{direction}"] > 0 and 0 <= scores[f"precision_domain_{direction}"] <= 1
        assert 0 <= scores[f"content_accuracy_domain_{direction}"] <= 1  # the digits' classes, kept or not
        assert 0 <= scores[f"copy_rate_pixel_{direction}"] <= 1
    assert 0 <= cyclegan["cycle_l1_a"] <= 1 and 0 <= cyclegan["cycle_l1_b"] <= 1
    params = runs["evaluate-cyclegan"].data.params
    assert params["b2a.quality.reference_split"] == "test" and params["eval.directions"] == "a2b, b2a"
    # each direction in its target domain's own feature network
    assert params["a2b.quality.extractor_weights_sha256"] != params["b2a.quality.extractor_weights_sha256"]
    artifacts = set(tracker.list_artifacts(runs["evaluate-cyclegan"].info.run_id))
    assert artifacts >= {"samples/translations.png", "memorization/closest_pairs_a2b.png",
                         "memorization/closest_pairs_b2a.png", "report.html"}
    assert "l1_a2b" in summary and "content_accuracy_domain_a2b" in summary  # the summary's columns
    assert "Translate images:  .venv/bin/genlib translate" in summary and "Draw samples" not in summary
    assert "no likelihood" not in summary  # a translator is not a sampler without one


def test_genlib_translate_writes_the_registered_models_translations(translators, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from genlib import cli
    from genlib.config import DataConfig
    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.models.io import load_model
    from genlib.runs import model_checkpoint

    home, tracker, _, _ = translators
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
    assert cli.main(["sample", "--model", "models:/genlib-digits-edges-cyclegan/1", "-o", str(tmp_path / "g.png")]) == 2
    assert "does not sample from noise, it translates images" in capsys.readouterr().err

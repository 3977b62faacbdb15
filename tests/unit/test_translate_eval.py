"""The translation evaluation (genlib/evaluate/translate.py) against direct computations on its model's outputs."""

import numpy as np
import pytest
import torch

from genlib.config import DataConfig
from genlib.data.dataset import DatasetVersion
from genlib.data.prepare import prepare
from genlib.evaluate.translate import translation_scores
from genlib.evaluate.translation import ssim
from genlib.models import build_model_for
from genlib.presets import config_from_dict
from genlib.tracking import TRANSLATIONS
from tests.families import TINY


def _setup(source: str, family: str):
    version = DatasetVersion(prepare(DataConfig(source=source, image_size=8)).path)
    cfg = config_from_dict({"model": {"family": family, **TINY[family]}, "eval": {"n_generated": 0}})
    torch.manual_seed(0)
    return version, cfg, build_model_for(cfg.model, version).eval()


def _test_images(version: DatasetVersion, domain: str) -> torch.Tensor:
    return torch.from_numpy(np.array(version.domain(domain).images("test"))).permute(0, 3, 1, 2)


def _merged(parts):
    metrics, params, figures = {}, {}, {}
    for part in parts:
        metrics |= part.metrics
        params |= part.params
        figures |= part.figures
    return metrics, params, figures


def _no_references(domain):
    raise AssertionError("eval.n_generated=0 scores nothing in feature space")


def test_paired_translations_are_scored_against_their_targets():
    version, cfg, model = _setup("digits-edges", "pix2pix")
    metrics, params, figures = _merged(translation_scores(model, cfg, version, _no_references))
    out = model.translate(_test_images(version, "a")).double() / 16
    target = _test_images(version, "b").double() / 16
    mse = ((out - target) ** 2).flatten(1).mean(1)
    assert metrics["l1_a2b"] == pytest.approx(float((out - target).abs().mean()), rel=1e-12)
    assert metrics["psnr_a2b"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), rel=1e-9)
    assert metrics["ssim_a2b"] == pytest.approx(float(ssim(model.translate(_test_images(version, "a")),
                                                           _test_images(version, "b"), 17).mean()), rel=1e-12)
    assert set(metrics) == {"l1_a2b", "psnr_a2b", "ssim_a2b"}  # one direction, no cycle
    assert params["a2b.n"] == len(out) and params["eval.kind"] == "paired"
    assert figures[TRANSLATIONS].size[1] > 3 * 48  # three rows (input, translation, target) of 48-pixel tiles


def test_unpaired_translations_get_the_cycle_error_and_the_kept_truth_both_ways():
    version, cfg, model = _setup("digits-bold", "cyclegan")
    metrics, params, _ = _merged(translation_scores(model, cfg, version, _no_references))
    a, b = _test_images(version, "a"), _test_images(version, "b")
    back_a = model.translate(model.translate(a, "a2b"), "b2a")
    back_b = model.translate(model.translate(b, "b2a"), "a2b")
    assert metrics["cycle_l1_a"] == pytest.approx(float((back_a.double() - a.double()).abs().mean() / 16), rel=1e-12)
    assert metrics["cycle_l1_b"] == pytest.approx(float((back_b.double() - b.double()).abs().mean() / 16), rel=1e-12)
    for direction, source in (("a2b", a), ("b2a", b)):  # against the true translations kept aside at prepare
        truth = torch.from_numpy(np.array(version.truth(direction))).permute(0, 3, 1, 2).double() / 16
        out = model.translate(source, direction).double() / 16
        mse = ((out - truth) ** 2).flatten(1).mean(1)
        assert metrics[f"l1_{direction}"] == pytest.approx(float((out - truth).abs().mean()), rel=1e-12)
        assert metrics[f"psnr_{direction}"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), rel=1e-9)
        # SSIM itself is checked against a reference implementation in test_translation_metrics.py
        assert metrics[f"ssim_{direction}"] == pytest.approx(float(ssim(model.translate(source, direction), (
            truth * 16).round().to(torch.uint8), 17).mean()), rel=1e-12)
    assert params["b2a.truth"].startswith("the source's true translations")

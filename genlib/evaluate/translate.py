"""Score an image-to-image translator: pure functions from a model and a two-domain dataset version to
metrics and figures, per direction it translates ("a2b", "b2a").

For each direction the source domain's test images are translated, and
  * where the true translations are known (paired data; an unpaired task that kept them aside):
    L1, PSNR and SSIM to them (``translation.py``);
  * in the target domain's feature space (its own ``References``, unless ``eval.n_generated`` is 0):
    FID, KID, precision/recall and density/coverage against the target domain's test images, the
    share of translations the target domain's classifier gives the source image's class (content
    preserved: labelled data only), and memorization against the target domain's train split;
  * with both directions, the cycle error: |back(there(x)) − x| in [0, 1] units per domain;
and a gallery of input | translation | truth. Every metric name ends in its direction (``fid_domain_a2b``)
or its domain (``cycle_l1_a``). Nothing here knows MLflow (the evaluate stage records the parts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from genlib.config import Config
from genlib.data.dataset import DatasetVersion
from genlib.data.kinds import DIRECTIONS
from genlib.evaluate.references import References
from genlib.evaluate.suite import SAMPLE_BATCH, Scores, memorization, sample_quality
from genlib.evaluate.translation import paired_metrics
from genlib.figures import image_grid
from genlib.models import GenerativeModel
from genlib.tracking import TRANSLATIONS, directed_path

GALLERY = 8  # images per direction in the figures


def nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) arrays (a dataset's) → a uint8 (N, C, H, W) tensor."""
    return torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)


@torch.no_grad()
def translate_all(model: GenerativeModel, images: torch.Tensor, direction: str, desc: str | None = None) -> torch.Tensor:
    """``model.translate`` over uint8 (N, C, H, W) images in batches: uint8 (N, C', H, W) on the CPU."""
    steps = range(0, len(images), SAMPLE_BATCH)
    if desc:
        steps = tqdm(steps, desc=desc, leave=False)
    return torch.cat([model.translate(images[i:i + SAMPLE_BATCH], direction).cpu() for i in steps])


def _displayable(images: torch.Tensor, levels: int, channels: int) -> torch.Tensor:
    """uint8 images on 256 levels with ``channels`` channels (grey repeated), so that domains of
    different levels and channels tile into one picture."""
    out = (images.float() * (255.0 / (levels - 1))).round().to(torch.uint8)
    return out.repeat(1, channels // out.shape[1], 1, 1) if out.shape[1] != channels else out


def gallery(model: GenerativeModel, version: DatasetVersion, split: str = "test", n: int = GALLERY):
    """One picture, per direction: a row of source images, the row of their translations and, where the
    truth is known for the split, the row of true targets. PIL image."""
    rows, channels = [], max(model.shape[0], model.source_shape[0])
    for direction in model.directions:
        source, target = DIRECTIONS[direction]
        x = nchw(version.domain(source).images(split)[:n])
        truth = version.truth(direction) if split == "test" else (
            version.domain(target).images(split)[:n] if version.kind == "paired" else None)
        (_, source_levels), (_, target_levels) = model.domain_spec(source), model.domain_spec(target)
        rows += [_displayable(x, source_levels, channels),
                 _displayable(translate_all(model, x, direction), target_levels, channels)]
        if truth is not None:
            rows.append(_displayable(nchw(truth[:n]), target_levels, channels))
    return image_grid(torch.cat(rows), 256, nrow=min(n, len(rows[0])))


def translation_scores(model: GenerativeModel, cfg: Config, version: DatasetVersion,
                       references: Callable[[str], References]) -> list[Scores]:
    """Every part of the evaluation of a translator on ``version``'s test splits; ``references(domain)``:
    the References of a domain (loaded by the caller, once per domain)."""
    parts, translated, inputs = [], {}, {}
    protocol: dict[str, Any] = {"eval.split": "test", "eval.kind": version.kind,
                                "eval.directions": ", ".join(model.directions), "eval.device": model.device.type}
    for direction in model.directions:
        source, target = DIRECTIONS[direction]
        x = inputs[source] = nchw(version.domain(source).images("test"))
        out = translated[direction] = translate_all(model, x, direction, desc=f"translating {len(x)} images {direction}")
        protocol[f"{direction}.n"] = len(x)
        metrics: dict[str, float] = {}
        truth = version.truth(direction)
        if truth is not None:
            metrics |= {f"{k}_{direction}": v
                        for k, v in paired_metrics(out, nchw(truth), model.domain_spec(target)[1]).items()}
            protocol[f"{direction}.truth"] = ("the paired images" if version.kind == "paired"
                                              else "the source's true translations, kept aside at prepare")
        parts.append(Scores(metrics, {}, {}, {}))
        if cfg.eval.n_generated > 0:
            parts += _feature_scores(out, x, version.domain(source).labels("test"), references(target), cfg, direction)
    for direction in model.directions:  # cycle error: there and back again
        source, target = DIRECTIONS[direction]
        back = f"{target}2{source}"
        if back in model.directions:
            x = inputs[source]  # read once per domain, above
            again = translate_all(model, translated[direction], back)
            levels = model.domain_spec(source)[1]
            parts.append(Scores({f"cycle_l1_{source}": float((again.double() - x.double()).abs().mean() / (levels - 1))},
                                {}, {}, {}))
    figures = {TRANSLATIONS: gallery(model, version)}
    return [Scores({}, protocol, figures, {}), *parts]


def _feature_scores(out: torch.Tensor, x: torch.Tensor, source_labels: np.ndarray | None, refs: References,
                    cfg: Config, direction: str) -> list[Scores]:
    """Sample quality and memorization of translations ``out`` in the target domain's features, and
    content preservation when the source images are labelled and the extractor classifies."""
    features = refs.extractor(out)
    quality = sample_quality(features, refs)
    logits = refs.extractor.class_logits(features)
    if source_labels is not None and logits is not None:
        quality.metrics[f"content_accuracy_{refs.extractor.name}"] = float((logits.argmax(1) == source_labels).mean())
        quality.params["quality.content_accuracy"] = ("top-1 agreement of the target domain's classifier with the "
                                                      "source image's class")
    remembered = memorization(out, features, refs, cfg.eval.copying_cells, cfg.eval.knn, cfg.eval.knn_probes,
                              cfg.eval.robust_copies)
    return [_directed(quality, direction), _directed(remembered, direction)]


def _directed(scores: Scores, direction: str) -> Scores:
    """The same scores with metric names, params and artifact paths marked by ``direction``."""
    return Scores({f"{k}_{direction}": v for k, v in scores.metrics.items()},
                  {f"{direction}.{k}": v for k, v in scores.params.items()},
                  {directed_path(p, direction): f for p, f in scores.figures.items()},
                  {directed_path(p, direction): t for p, t in scores.tables.items()})

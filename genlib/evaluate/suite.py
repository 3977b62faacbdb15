"""The evaluation stage: score a trained checkpoint and record everything in one MLflow run.

For one checkpoint and one dataset version it measures
  * likelihood on the test split (``likelihood.py``) when the model declares ``log_prob``;
  * sample quality of ``eval.n_generated`` samples against the test split in an extractor's
    feature space (``fid.py``): FID, KID, precision and recall;
  * memorization against the train split (``memorization.py``), in pixel and feature space:
    copy rate, authenticity, the data-copying z-score, a per-class table when the data is
    labelled, and a gallery of the closest generated/train pairs;
and logs the figures (samples, interpolations, traversals) and an HTML report of it all.

Reference statistics and train→train neighbours depend on the dataset version only, so they are
computed once per dataset hash (``cache.py``), not once per model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from genlib.config import Config
from genlib.data.dataset import DatasetVersion
from genlib.evaluate.cache import cached_arrays
from genlib.evaluate.features import EXTRACTORS, Extractor, cached_features
from genlib.evaluate.fid import frechet_distance, gaussian_stats, kid, precision_recall
from genlib.evaluate.likelihood import likelihood_metrics
from genlib.evaluate.memorization import (Neighbours, approximate_neighbours, authenticity, copy_rate,
                                          data_copying_zscore, nearest_neighbours, recall_at_k)
from genlib.report import evaluation_report
from genlib.runs import trained_run
from genlib.figures import image_grid
from genlib.models.base import INTERPOLATE, TRAVERSE
from genlib.models.io import load_model
from genlib.tracking import Tracker
from genlib.train.launch import experiment_name

SAMPLE_BATCH = 256


@dataclass(frozen=True)
class EvalResult:
    run_id: str  # the MLflow run holding the metrics, figures and report
    metrics: dict[str, float]


@dataclass
class Scores:
    """What one part of the evaluation found, ready to log."""
    metrics: dict[str, float]
    params: dict[str, Any]  # the protocol behind the metrics
    figures: dict[str, Any]  # artifact path → PIL image
    tables: dict[str, list[dict[str, Any]]]  # artifact path → rows


@torch.no_grad()
def generate(model, n: int, seed: int) -> torch.Tensor:
    """``n`` samples, uint8 (n, C, H, W), drawn in batches under a seeded generator."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    batches = [model.sample(min(SAMPLE_BATCH, n - i), generator=generator).cpu()
               for i in tqdm(range(0, n, SAMPLE_BATCH), desc=f"sampling {n} images", leave=False)]
    return torch.cat(batches)


def reference_stats(extractor: Extractor, version: DatasetVersion, split: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean, covariance and n of a split's features, cached by (hash, split, extractor, n)."""
    feats = cached_features(extractor, version, split)
    key = f"{version.content_hash[:16]}-{split}-{extractor.preprocessing}-{len(feats)}-gaussian"
    stats = cached_arrays(key, lambda: dict(zip(("mu", "sigma"), gaussian_stats(feats))))
    return stats["mu"], stats["sigma"], len(feats)


def sample_quality(f_gen: np.ndarray, extractor: Extractor, version: DatasetVersion) -> Scores:
    """FID, KID and precision/recall of generated features against the test split."""
    f_test = cached_features(extractor, version, "test")
    mu, sigma, n_ref = reference_stats(extractor, version, "test")
    fd = frechet_distance(*gaussian_stats(f_gen), mu, sigma)
    kid_mean, kid_std = kid(f_test, f_gen, subsets=50, subset_size=min(1000, len(f_test), len(f_gen)))
    precision, recall = precision_recall(f_test, f_gen)
    name = extractor.name
    metrics = {f"fid_{name}": fd.value, f"kid_{name}": kid_mean, f"kid_{name}_std": kid_std,
               f"precision_{name}": precision, f"recall_{name}": recall,
               **{f"{name}_extractor_{k}": v for k, v in extractor.info.items()}}
    params = {"quality.extractor": extractor.preprocessing, "quality.n_generated": len(f_gen),
              "quality.reference_split": "test", "quality.n_reference": n_ref,
              "fid.clipped_eigenvalues": fd.clipped_eigenvalues}
    return Scores(metrics, params, {}, {})


def train_neighbours(version: DatasetVersion, train_px: np.ndarray) -> Neighbours:
    """Each training image's nearest other training image in pixel space, cached per dataset."""
    key = f"{version.content_hash[:16]}-train-{len(train_px)}-pixel-self-nn"
    found = cached_arrays(key, lambda: nearest_neighbours(train_px, train_px, k=1, exclude_self=True)._asdict())
    return Neighbours(found["distances"], found["indices"])


def train_search(queries: np.ndarray, train: np.ndarray, method: str, probes: int) -> tuple[Neighbours, dict]:
    """Nearest two training neighbours of each query: exact, or from the IVF index with its recall
    against exact search measured on a sample of the queries (logged with the metrics)."""
    if method == "exact":
        return nearest_neighbours(queries, train, k=2), {}
    if method != "ivf":
        raise ValueError(f"eval.knn must be 'exact' or 'ivf', got {method!r}")
    found = approximate_neighbours(queries, train, k=2, probes=probes)
    check = np.random.default_rng(0).choice(len(queries), min(200, len(queries)), replace=False)
    exact = nearest_neighbours(queries[check], train, k=2)
    recall = recall_at_k(Neighbours(found.distances[check], found.indices[check]), exact)
    return found, {"recall": recall}


def memorization(generated: torch.Tensor, f_gen: np.ndarray, extractor: Extractor, version: DatasetVersion,
                 cells: int, knn: str = "exact", probes: int = 8) -> Scores:
    """Copy rate, authenticity and data-copying z of samples against the train split."""
    train_images = torch.from_numpy(np.array(version.images("train"))).permute(0, 3, 1, 2)  # (N, C, H, W)
    train_px, gen_px = train_images.flatten(1).float().numpy(), generated.flatten(1).float().numpy()
    f_train, f_test = cached_features(extractor, version, "train"), cached_features(extractor, version, "test")
    name = extractor.name
    (nn_px, px_check), (nn_feat, feat_check) = (train_search(gen_px, train_px, knn, probes),
                                                train_search(f_gen, f_train, knn, probes))
    copy_px, copied = copy_rate(nn_px)
    auth_px, authentic = authenticity(nn_px, train_neighbours(version, train_px))
    metrics = {"copy_rate_pixel": copy_px, f"copy_rate_{name}": copy_rate(nn_feat)[0], "authenticity_pixel": auth_px,
               **{f"knn_{k}_pixel": v for k, v in px_check.items()},
               **{f"knn_{k}_{name}": v for k, v in feat_check.items()}}
    params = {"memorization.reference_split": "train", "memorization.n_reference": len(train_px),
              "memorization.copy_threshold": "d1/d2 < 1/3",
              "memorization.knn": knn if knn == "exact" else f"ivf, {probes} probes of ~sqrt(N) cells"}
    try:
        metrics[f"data_copying_z_{name}"], _ = data_copying_zscore(f_train, f_test, f_gen, cells)
        params["data_copying.cells"] = cells
    except ValueError as err:  # too few samples per cell: say so in the run rather than guess
        params["data_copying.skipped"] = str(err)
    closest = np.argsort(nn_px.distances[:, 0])[:16]
    pairs = torch.stack([generated[closest], train_images[nn_px.indices[closest, 0]]], 1).flatten(0, 1)
    figures = {"memorization/closest_pairs.png": image_grid(pairs, version.levels, nrow=8)}
    tables = {}
    if version.num_classes:
        # A sample's class is that of its nearest training image in feature space: it works for
        # unconditional models too, and shows which classes are over- or under-produced.
        assigned = version.labels("train")[nn_feat.indices[:, 0]]
        tables["memorization/per_class.json"] = per_class_table(assigned, version.labels("train"), copied, authentic)
    return Scores(metrics, params, figures, tables)


def per_class_table(assigned: np.ndarray, train_labels: np.ndarray, copied: np.ndarray,
                    authentic: np.ndarray) -> list[dict[str, Any]]:
    """Per class: share of samples vs share of training data, copy rate and authenticity."""
    rows = []
    for label in np.unique(train_labels):
        mine = assigned == label
        n = int(mine.sum())
        rows.append({"class": int(label), "samples": n, "sample_share": n / len(assigned),
                     "train_share": float((train_labels == label).mean()),
                     "copy_rate_pixel": float(copied[mine].mean()) if n else None,
                     "authenticity_pixel": float(authentic[mine].mean()) if n else None})
    return rows


def sample_figures(model, cfg: Config) -> dict[str, Any]:
    """The final sample grid, and interpolation / traversal grids where the model supports them."""
    seed = cfg.train.seed
    figures = {"samples/final.png": image_grid(model.sample(cfg.eval.n_samples,
                                                            generator=torch.Generator().manual_seed(seed)),
                                               model.levels)}
    if INTERPOLATE in model.capabilities:
        path = model.interpolate(rows=8, steps=8, generator=torch.Generator().manual_seed(seed))
        figures["samples/interpolation.png"] = image_grid(path, model.levels, nrow=8)
    if TRAVERSE in model.capabilities:
        figures["samples/traversals.png"] = image_grid(model.traverse(steps=9), model.levels, nrow=9)
    return figures


def evaluate(cfg: Config, checkpoint: str | Path, dataset: str | Path, tracker: Tracker | None = None,
             parent_run_id: str | None = None, train_run_id: str | None = None) -> EvalResult:
    """Score ``checkpoint`` on ``dataset`` in a new (nested) MLflow run, with an HTML report."""
    tracker = tracker or Tracker(cfg.tracking.tracking_uri)
    version = DatasetVersion(dataset)
    model = load_model(checkpoint)
    model.eval()
    tags = {"genlib.stage": "evaluate", "genlib.family": cfg.model.family, "genlib.model": cfg.model.label,
            "genlib.dataset_hash": version.content_hash, "genlib.preset": cfg.name,
            "genlib.dataset": f"{version.manifest['source']}-{version.content_hash[:12]}"}
    if train_run_id:
        tags["genlib.train_run_id"] = train_run_id
    with tracker.run(experiment_name(cfg), f"evaluate-{cfg.model.label}", parent_run_id, tags) as run_id:
        test = version.dataset("test")
        tracker.log_params(run_id, {"eval.split": "test", "eval.n": len(test), "eval.iwae_k": cfg.eval.iwae_k,
                                    "eval.seed": cfg.train.seed, "checkpoint": str(checkpoint)})
        tracker.log_dataset(run_id, version.manifest, version.path, context="test")
        metrics = likelihood_metrics(model, test, cfg.eval.iwae_k, cfg.eval.batch_size, cfg.train.seed)
        tracker.log_metrics(run_id, metrics)
        parts = [Scores({}, {}, sample_figures(model, cfg), {})]
        if cfg.eval.n_generated > 0:
            extractor = EXTRACTORS.get(cfg.eval.extractor)(version)
            generated = generate(model, cfg.eval.n_generated, cfg.train.seed + 1)
            f_gen = extractor(generated)
            parts += [sample_quality(f_gen, extractor, version),
                      memorization(generated, f_gen, extractor, version, cfg.eval.copying_cells,
                                   cfg.eval.knn, cfg.eval.knn_probes)]
        for part in parts:
            _log(tracker, run_id, part)
            metrics.update(part.metrics)
        tracker.log_text(run_id, evaluation_report(tracker, [run_id], title=f"genlib evaluation: {cfg.model.label}"),
                         "report.html")
    return EvalResult(run_id, metrics)


def evaluate_run(train_run_id: str, overrides: list[str] | None = None,
                 tracker: Tracker | None = None) -> EvalResult:
    """Evaluate the checkpoint a training run selected, on the dataset version it was trained on.

    The config is the one stored in the checkpoint, with ``overrides`` (e.g. ``eval.n_generated=5000``)
    applied; the new run is nested where the training run is (under its pipeline run, if any)."""
    tracker = tracker or Tracker()
    run = trained_run(tracker, train_run_id, overrides)
    return evaluate(run.config, run.checkpoint, run.dataset, tracker, run.parent_run_id, train_run_id)


def _log(tracker: Tracker, run_id: str, scores: Scores) -> None:
    tracker.log_metrics(run_id, scores.metrics)
    tracker.log_params(run_id, scores.params)
    for path, figure in scores.figures.items():
        tracker.log_image(run_id, figure, path)
    for path, rows in scores.tables.items():
        tracker.log_dict(run_id, rows, path)

"""Run the evaluation metrics on a trained checkpoint and record them in MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genlib.config import Config
from genlib.data.dataset import DatasetVersion
from genlib.evaluate.likelihood import likelihood_metrics
from genlib.figures import image_grid
from genlib.evaluate.features import EXTRACTORS, cached_features
from genlib.evaluate.fid import frechet_distance, gaussian_stats, kid, precision_recall
from genlib.evaluate.memorization import authenticity, copy_rate, data_copying_zscore, nearest_neighbours
from genlib.models.base import INTERPOLATE, TRAVERSE
from genlib.models.io import load_model
from genlib.tracking import Tracker
from genlib.train.launch import experiment_name


def sample_quality(model, version: DatasetVersion, cfg: Config):
    """Quality and memorization metrics of ``eval.n_generated`` samples, with their protocol.

    Returns (metrics, protocol params, figures). Quality is measured against the test split in
    the extractor's feature space; memorization against the train split, in pixel space and in
    feature space."""
    ex = EXTRACTORS.get(cfg.eval.extractor)(version)
    n = cfg.eval.n_generated
    generator = torch.Generator().manual_seed(cfg.train.seed + 1)
    generated = torch.cat([model.sample(min(256, n - i), generator=generator).cpu() for i in range(0, n, 256)])
    f_gen, f_test, f_train = ex(generated), cached_features(ex, version, "test"), cached_features(ex, version, "train")
    fd = frechet_distance(*gaussian_stats(f_gen), *gaussian_stats(f_test))
    kid_mean, kid_std = kid(f_test, f_gen, subsets=50, subset_size=min(1000, len(f_test), n))
    precision, recall = precision_recall(f_test, f_gen)
    name = ex.name
    metrics = {f"fid_{name}": fd.value, f"kid_{name}": kid_mean, f"kid_{name}_std": kid_std,
               f"precision_{name}": precision, f"recall_{name}": recall,
               **{f"{name}_extractor_{k}": v for k, v in ex.info.items()}}
    train_images = torch.from_numpy(np.array(version.images("train"))).permute(0, 3, 1, 2)  # (N, C, H, W)
    train_px = train_images.flatten(1).float().numpy()
    gen_px = generated.flatten(1).float().numpy()
    nn_px = nearest_neighbours(gen_px, train_px, k=2)
    metrics["copy_rate_pixel"], _ = copy_rate(nn_px)
    metrics[f"copy_rate_{name}"], _ = copy_rate(nearest_neighbours(f_gen, f_train, k=2))
    metrics["authenticity_pixel"], _ = authenticity(nn_px, nearest_neighbours(train_px, train_px, k=1, exclude_self=True))
    params = {"quality.extractor": ex.preprocessing, "quality.n_generated": n, "quality.reference_split": "test",
              "quality.n_reference": len(f_test), "memorization.reference_split": "train",
              "memorization.n_reference": len(f_train), "fid.clipped_eigenvalues": fd.clipped_eigenvalues}
    try:
        metrics[f"data_copying_z_{name}"], _ = data_copying_zscore(f_train, f_test, f_gen, cfg.eval.copying_cells)
        params["data_copying.cells"] = cfg.eval.copying_cells
    except ValueError as err:  # too few samples per cell: say so in the run rather than guess
        params["data_copying.skipped"] = str(err)
    closest = np.argsort(nn_px.distances[:, 0])[:16]
    pairs = torch.stack([generated[closest], train_images[nn_px.indices[closest, 0]]], 1).flatten(0, 1)
    figures = {"memorization/closest_pairs.png": image_grid(pairs, model.levels, nrow=8)}
    return metrics, params, figures


@dataclass(frozen=True)
class EvalResult:
    run_id: str  # the MLflow run holding the metrics and the final sample grid
    metrics: dict[str, float]


def evaluate(cfg: Config, checkpoint: str | Path, dataset: str | Path, tracker: Tracker | None = None,
             parent_run_id: str | None = None, train_run_id: str | None = None) -> EvalResult:
    """Score ``checkpoint`` on the test split of ``dataset`` in a new (nested) MLflow run."""
    tracker = tracker or Tracker(cfg.tracking.tracking_uri)
    version = DatasetVersion(dataset)
    model = load_model(checkpoint)
    tags = {"genlib.stage": "evaluate", "genlib.family": cfg.model.family, "genlib.model": cfg.model.label,
            "genlib.dataset_hash": version.content_hash, "genlib.preset": cfg.name}
    if train_run_id:
        tags["genlib.train_run_id"] = train_run_id
    with tracker.run(experiment_name(cfg), f"evaluate-{cfg.model.label}", parent_run_id, tags) as run_id:
        test = version.dataset("test")
        tracker.log_params(run_id, {"eval.split": "test", "eval.n": len(test), "eval.iwae_k": cfg.eval.iwae_k,
                                    "eval.seed": cfg.train.seed, "checkpoint": str(checkpoint)})
        tracker.log_dataset(run_id, version.manifest, version.path, context="test")
        metrics = likelihood_metrics(model, test, cfg.eval.iwae_k, cfg.eval.batch_size, cfg.train.seed)
        tracker.log_metrics(run_id, metrics)
        generator = torch.Generator().manual_seed(cfg.train.seed)
        grid = image_grid(model.sample(cfg.eval.n_samples, generator=generator), model.levels)
        tracker.log_image(run_id, grid, "samples/final.png")
        if INTERPOLATE in model.capabilities:
            steps = 8
            path = model.interpolate(rows=8, steps=steps, generator=torch.Generator().manual_seed(cfg.train.seed))
            tracker.log_image(run_id, image_grid(path, model.levels, nrow=steps), "samples/interpolation.png")
        if cfg.eval.n_generated > 0:
            quality, params, figures = sample_quality(model, version, cfg)
            metrics.update(quality)
            tracker.log_params(run_id, params)
            tracker.log_metrics(run_id, quality)
            for name, figure in figures.items():
                tracker.log_image(run_id, figure, name)
        if TRAVERSE in model.capabilities:
            steps = 9
            tracker.log_image(run_id, image_grid(model.traverse(steps=steps), model.levels, nrow=steps),
                              "samples/traversals.png")
    return EvalResult(run_id, metrics)

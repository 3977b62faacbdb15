"""Run the evaluation metrics on a trained checkpoint and record them in MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from genlib.config import Config
from genlib.data.dataset import DatasetVersion
from genlib.evaluate.likelihood import likelihood_metrics
from genlib.figures import image_grid
from genlib.models.base import INTERPOLATE, TRAVERSE
from genlib.models.io import load_model
from genlib.tracking import Tracker
from genlib.train.launch import experiment_name


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
        if TRAVERSE in model.capabilities:
            steps = 9
            tracker.log_image(run_id, image_grid(model.traverse(steps=steps), model.levels, nrow=steps),
                              "samples/traversals.png")
    return EvalResult(run_id, metrics)

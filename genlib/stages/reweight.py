"""The reweight stage: DB-VAE sampling weights from a trained VAE run, in one MLflow run.

The weighting is ``genlib.evaluate.reweight`` (pure, over latent arrays); the file it hands to
training is ``genlib.data.weights``. This stage loads the VAE, writes the weights file and records
its diagnostics and figures.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlib import paths
from genlib.data.dataset import DatasetVersion
from genlib.data.weights import WEIGHTS_FILE, weights_table, write_weights
from genlib.evaluate.debias import classifier_check
from genlib.evaluate.reweight import (
    diagnostics,
    estimate_weights,
    extreme_samples,
    latent_means,
    per_label_table,
    sample_losses,
    weight_histogram,
)
from genlib.models.io import load_model
from genlib.runs import trained_run
from genlib.tracking import (
    LEAST_WEIGHTED,
    MOST_WEIGHTED,
    PER_LABEL,
    WEIGHT_HISTOGRAM,
    Stage,
    Tag,
    Tracker,
    experiment_name,
)


@dataclass(frozen=True)
class ReweightResult:
    run_id: str  # the MLflow run holding the weights file, diagnostics and figures
    weights_path: Path  # local copy of the weights file
    diagnostics: dict[str, float]


def reweight(vae_run_id: str, dataset: str | os.PathLike | None = None, overrides: list[str] | None = None,
             tracker: Tracker | None = None, parent_run_id: str | None = None) -> ReweightResult:
    """Weights for the train split of ``dataset`` (default: the one the VAE trained on) from the
    latent means of the VAE trained in run ``vae_run_id``; one MLflow run with the weights file.

    ``overrides`` change the ``reweight`` section of the VAE run's config (``reweight.method=gmm``)."""
    tracker = tracker or Tracker()
    vae = trained_run(tracker, vae_run_id, overrides)
    cfg = vae.config.reweight
    version = DatasetVersion(dataset or vae.dataset)
    model = load_model(vae.checkpoint)
    if (tuple(version.shape), version.levels) != (tuple(model.shape), model.levels):
        raise ValueError(f"the VAE models {model.shape} images with {model.levels} levels, the dataset has "
                         f"{version.shape} with {version.levels}; reweight a dataset of the kind it was trained on")
    images = torch.from_numpy(np.array(version.images("train"))).permute(0, 3, 1, 2)  # (N, C, H, W)
    labels = version.labels("train") if version.num_classes else None
    model_labels = labels if model.num_classes else None
    z = latent_means(model, images, labels=model_labels)
    losses = sample_losses(model, images, labels=model_labels, seed=cfg.seed) if "elbo" in cfg.signals else None
    weights, log_density, tau = estimate_weights(z, cfg, losses)
    params = cfg.params()
    key = f"{version.content_hash[:12]}-{vae_run_id[:12]}-{_digest(params)}"
    path = write_weights(weights_table(weights, log_density, labels), paths.home() / "weights" / key / WEIGHTS_FILE,
                         {"dataset_hash": version.content_hash, "vae_run_id": vae_run_id, "split": "train",
                          "params": params, "key": key})
    stats = {**diagnostics(weights), "tau": tau}
    tags = {Tag.STAGE: Stage.REWEIGHT, Tag.DATASET_HASH: version.content_hash, Tag.VAE_RUN: vae_run_id,
            Tag.WEIGHTS_KEY: key}
    with tracker.run(experiment_name(vae.config), f"reweight-{cfg.method}", parent_run_id, tags) as run_id:
        tracker.log_params(run_id, {**{f"reweight.{k}": v for k, v in params.items()},
                                    "reweight.split": "train", "reweight.latent_dims": z.shape[1]})
        tracker.log_metrics(run_id, stats)
        tracker.log_artifact(run_id, path)
        tracker.log_image(run_id, weight_histogram(weights), WEIGHT_HISTOGRAM)
        galleries = extreme_samples(images, weights, version.levels)
        tracker.log_image(run_id, galleries["most_weighted"], MOST_WEIGHTED)
        tracker.log_image(run_id, galleries["least_weighted"], LEAST_WEIGHTED)
        rare = version.rare("train")
        if rare is not None and labels is not None and cfg.classifier_seeds > 0:  # the DB-VAE claim, measured
            tracker.log_params(run_id, {"reweight.classifier_seeds": cfg.classifier_seeds,
                                        "reweight.classifier_epochs": cfg.classifier_epochs})
            tracker.log_metrics(run_id, classifier_check(
                images, labels, weights, torch.from_numpy(np.array(version.images("test"))).permute(0, 3, 1, 2),
                version.labels("test"), version.rare("test"), version.levels, version.num_classes,
                cfg.classifier_epochs, cfg.classifier_seeds))
        if labels is not None:  # a report only: the weights never saw the labels
            table = per_label_table(weights, labels)
            tracker.log_dict(run_id, table.to_dict(orient="records"), PER_LABEL)
            tracker.log_metrics(run_id, {f"label_{int(r.label)}_weight_ratio": r.mean_weight_ratio
                                         for r in table.itertuples()})
    return ReweightResult(run_id, path, stats)


def _digest(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]

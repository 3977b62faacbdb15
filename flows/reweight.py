"""DB-VAE reweighting as a Prefect flow: weights for a dataset version from a trained VAE run.

The pipeline calls ``reweight_task`` between training the VAE and retraining with the weights;
``genlib-reweight`` runs it on its own (``genlib reweight`` is the same call without Prefect).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from genlib.evaluate.reweight import reweight
from genlib.tracking import Tracker


@task(name="reweight")
def reweight_task(vae_run_id: str, dataset: str | None = None, tracking_uri: str | None = None,
                  parent_run_id: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    result = reweight(vae_run_id, dataset, overrides, Tracker(tracking_uri), parent_run_id)
    return {"run_id": result.run_id, "weights_path": str(result.weights_path), **result.diagnostics}


@flow(name="genlib-reweight")
def reweight_flow(vae_run_id: str, dataset: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Weight the train split of ``dataset`` (default: the VAE's own) by latent rarity; one MLflow run."""
    return reweight_task(vae_run_id, dataset, overrides=overrides)

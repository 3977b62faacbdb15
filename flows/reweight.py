"""DB-VAE reweighting as a Prefect flow: weights for a dataset version from a trained VAE run.

The pipeline calls ``reweight_task`` between training the VAE and retraining with the weights;
``genlib-reweight`` runs it on its own (``genlib reweight`` is the same call without Prefect).
A finished reweighting is a cache hit for the same VAE run, dataset and overrides
(``flows/policy.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import CacheKeyFnPolicy

from flows.policy import backoff, cache_key, persisted, transient
from genlib.data.prepare import read_manifest
from genlib.stages.reweight import reweight
from genlib.tracking import Tracker


def _reweight_key(context, p: dict[str, Any]) -> str:
    # The VAE run fixes the encoder and (with the overrides) the reweight config; not the parent run.
    dataset = p.get("dataset")
    return cache_key("reweight", p.get("tracking_uri"), vae_run_id=p["vae_run_id"], overrides=p.get("overrides") or [],
                     dataset_hash=read_manifest(Path(dataset))["content_hash"] if dataset else None)


@task(name="reweight", retries=2, retry_delay_seconds=backoff(5), retry_condition_fn=transient,
      cache_policy=CacheKeyFnPolicy(cache_key_fn=_reweight_key), persist_result=True)
def reweight_task(vae_run_id: str, dataset: str | None = None, tracking_uri: str | None = None,
                  parent_run_id: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    result = reweight(vae_run_id, dataset, overrides, Tracker(tracking_uri), parent_run_id)
    return {"run_id": result.run_id, "weights_path": str(result.weights_path), **result.diagnostics}


@flow(name="genlib-reweight")
def reweight_flow(vae_run_id: str, dataset: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Weight the train split of ``dataset`` (default: the VAE's own) by latent rarity; one MLflow run."""
    return persisted(reweight_task)(vae_run_id, dataset, overrides=overrides)

"""Evaluating a training run as a Prefect flow: ``genlib-evaluate`` (``genlib evaluate --run`` without Prefect).

The run's checkpoint, config and dataset come from MLflow; ``overrides`` change the protocol
(``eval.n_generated=5000``). A finished evaluation is a cache hit for the same run and overrides
(``flows/policy.py``).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import CacheKeyFnPolicy

from flows.policy import backoff, cache_key, persisted, transient
from genlib.stages.evaluate import evaluate_run
from genlib.tracking import Tracker


def _evaluate_run_key(context, p: dict[str, Any]) -> str:
    return cache_key("evaluate-run", p.get("tracking_uri"), train_run_id=p["train_run_id"],
                     overrides=p.get("overrides") or [])


@task(name="evaluate-run", retries=2, retry_delay_seconds=backoff(5), retry_condition_fn=transient,
      cache_policy=CacheKeyFnPolicy(cache_key_fn=_evaluate_run_key), persist_result=True)
def evaluate_run_task(train_run_id: str, overrides: list[str] | None = None,
                      tracking_uri: str | None = None) -> dict[str, Any]:
    result = evaluate_run(train_run_id, overrides, Tracker(tracking_uri))
    return {"run_id": result.run_id, "metrics": result.metrics}


@flow(name="genlib-evaluate")
def evaluate_flow(train_run_id: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Score the checkpoint training run ``train_run_id`` selected, on its dataset's test split; one MLflow run."""
    return persisted(evaluate_run_task)(train_run_id, overrides)

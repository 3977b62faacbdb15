"""Auditing samples from any generator as a Prefect flow: ``genlib-audit`` (``genlib audit`` without Prefect).

The samples (a folder of PNG/JPEG files or an ``.npz``) are scored against a prepared dataset version
like an evaluation: one MLflow run with the report. A finished audit is a cache hit for the same sample
bytes, dataset, options and overrides (``flows/policy.py``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import CacheKeyFnPolicy

from flows.policy import backoff, cache_key, persisted, transient
from genlib.stages.audit import audit
from genlib.stages.checks import resolve_dataset
from genlib.tracking import Tracker


def samples_digest(samples: str | Path) -> str:
    """SHA-256 of the samples' bytes: a file's, or every file under a folder with its relative path."""
    root = Path(samples)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]:
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _audit_key(context, p: dict[str, Any]) -> str:
    return cache_key("audit", p.get("tracking_uri"), samples=samples_digest(p["samples"]), dataset=p["dataset"],
                     name=p.get("name"), resize=p.get("resize", False), quantise=p.get("quantise", False),
                     overrides=p.get("overrides") or [])


@task(name="audit", retries=2, retry_delay_seconds=backoff(5), retry_condition_fn=transient,
      cache_policy=CacheKeyFnPolicy(cache_key_fn=_audit_key), persist_result=True)
def audit_task(samples: str, dataset: str, name: str | None = None, resize: bool = False, quantise: bool = False,
               overrides: list[str] | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    cfg, version = resolve_dataset(dataset, overrides)
    result = audit(cfg, samples, version, name, resize, quantise, Tracker(tracking_uri))
    return {"run_id": result.run_id, "metrics": result.metrics, "report": result.report}


@flow(name="genlib-audit")
def audit_flow(samples: str, dataset: str, name: str | None = None, resize: bool = False, quantise: bool = False,
               overrides: list[str] | None = None) -> dict[str, Any]:
    """Score ``samples`` (a folder of images or an .npz from any generator) against ``dataset`` (a prepared
    version's directory or hash, or a preset); one MLflow run with an HTML report."""
    return persisted(audit_task)(samples, dataset, name, resize, quantise, overrides)

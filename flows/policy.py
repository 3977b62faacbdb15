"""Retry and cache policy shared by genlib's Prefect tasks.

Retries: a task retries, with exponential backoff, only failures that may be transient (network,
disk, a Ray worker group lost for good), never bad input: ``ValueError``/``TypeError`` name what to
fix, and a non-finite loss (``FloatingPointError``) or a missing file would only fail again.

Caching: a finished stage is not recomputed when its flow run is retried or run again. Each cached
task persists its small result (ids, paths, metrics) under ``$GENLIB_HOME/prefect-results`` and
finds it by a key made of what determines the stage's output plus where that output was recorded:
``GENLIB_HOME`` and the MLflow tracking URI, because a run id from one store means nothing in
another; and the code (genlib's version and git commit), because changed code may change the
result. ``PREFECT_TASKS_REFRESH_CACHE=true`` recomputes everything once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from prefect import Task
from prefect.tasks import exponential_backoff

import genlib
from genlib import __version__, paths
from genlib.tracking import code_digest, default_tracking_uri

RESULTS_DIR = "prefect-results"
# Failures a retry cannot fix: they say what to change.
PERMANENT = (ValueError, TypeError, FloatingPointError, FileNotFoundError)


def configure_prefect() -> None:
    """Prefect settings genlib's commands run with (a user's own settings win); call before Prefect starts."""
    # Prefect's server analytics are off (``genlib.TELEMETRY_OFF``): its telemetry service's first
    # write would also race the ephemeral server's own on SQLite ("database is locked" tracebacks).
    # The ephemeral API gets 20 s to start by default; pipelines started together on a small
    # machine take longer, and a slow start should not fail a training job.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if os.environ.get("PREFECT_HOME"):  # Prefect's SQLite cannot open a file whose folders are missing,
        Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)  # and says only "timed out"


def transient(task, task_run, state) -> bool:
    """Retry downloads and I/O hiccups, never bad input (ValueError/TypeError say what to fix)."""
    try:
        state.result()
    except PERMANENT:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False


def backoff(first: float):
    """Retry delays ``first, 2·first, 4·first, ...`` seconds."""
    return exponential_backoff(backoff_factor=first)


def results_dir() -> Path:
    return paths.home() / RESULTS_DIR


def persisted(task: Task, **options: Any) -> Task:
    """``task`` with its results stored under this run's ``$GENLIB_HOME/prefect-results``.

    NOTE: the storage is bound when a flow calls the task, not in the decorator, since GENLIB_HOME
    is read at run time (a served process, a test or a user may set it after import)."""
    return task.with_options(result_storage=results_dir(), **options)


def cache_key(stage: str, tracking_uri: str | None, **inputs: Any) -> str:
    """The cache key of ``stage`` for ``inputs``, scoped to this GENLIB_HOME and tracking store."""
    payload = {"stage": stage, "inputs": inputs, "genlib_home": str(paths.home()),
               "tracking_uri": tracking_uri or default_tracking_uri(), "genlib_version": __version__,
               "code": code_digest(Path(genlib.__file__).parent, Path(__file__).parent)}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return f"genlib-{stage}-{digest[:32]}"

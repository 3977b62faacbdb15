"""Where genlib keeps its state: one directory, ``$GENLIB_HOME`` (default ``./.genlib``)."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "GENLIB_HOME"


def home() -> Path:
    return Path(os.environ.get(HOME_ENV, ".genlib")).resolve()


def datasets_dir() -> Path:
    return home() / "datasets"


def downloads_dir() -> Path:
    return home() / "downloads"


def mlflow_db() -> Path:
    return home() / "mlflow.db"


def mlflow_artifacts() -> Path:
    return home() / "mlartifacts"


def ray_results() -> Path:
    return home() / "ray_results"


def prefect_home() -> Path:
    return home() / "prefect"


def scratch_dir() -> Path:
    """Intermediate files of one evaluation (e.g. features of every version of every sample), removed when
    it is done; under GENLIB_HOME so that Ray workers on other nodes read them from the shared storage."""
    return home() / "scratch"

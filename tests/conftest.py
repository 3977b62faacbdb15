"""Shared fixtures: an isolated GENLIB_HOME per test, one real local Ray for the session."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def genlib_home(tmp_path, monkeypatch):
    """Every test gets its own state directory: datasets, MLflow store, Ray results."""
    home = tmp_path / "genlib-home"
    monkeypatch.setenv("GENLIB_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("GENLIB_CHAOS_KILL_AT_EPOCH", raising=False)
    monkeypatch.setenv("GENLIB_OFFLINE", "1")  # tests never reach the network
    return home


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with two CPUs, started once (Ray Train workers run as real processes)."""
    import ray

    ray.init(num_cpus=2, logging_level="WARNING")
    yield ray
    ray.shutdown()

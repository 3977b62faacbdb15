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

    # address="local": a new instance even if another cluster on this machine (a `ray start`, the
    # two-node test's) is what a bare ray.init() would join.
    ray.init(address="local", num_cpus=2, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def inception_weights_file(tmp_path_factory):
    """A file in the published FID Inception-v3 format (a plain dict of tensors, 566 keys) with random
    values, written once per session: (path, its sha256)."""
    import torch

    from genlib.data.download import file_digest
    from genlib.evaluate.inception import FIDInceptionV3

    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, ref in FIDInceptionV3().state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith(("running_var", "bn.weight")):
            state[key] = 0.5 + torch.rand(ref.shape, generator=gen)  # positive, around 1
        elif ref.dim() > 1:  # conv and fc weights, He-scaled so activations stay O(1) through 94 layers
            state[key] = torch.randn(ref.shape, generator=gen) * (2 / ref[0].numel()) ** 0.5
        else:
            state[key] = 0.1 * torch.randn(ref.shape, generator=gen)
    path = tmp_path_factory.mktemp("inception") / "synthetic-inception.pth"
    torch.save(state, path)
    return path, file_digest(path, "sha256")


@pytest.fixture
def inception_weights(inception_weights_file, monkeypatch):
    """Point the ``inception-v3-fid`` extractor at the synthetic file: tests never fetch the real one."""
    from genlib.evaluate import inception

    path, sha256 = inception_weights_file
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(path))
    monkeypatch.setattr(inception, "WEIGHTS_SHA256", sha256)
    return path

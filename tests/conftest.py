"""Shared fixtures: an isolated GENLIB_HOME per test, one real local Ray for the session, and the
expensive artefacts made once per session: the digits domain network and one real pipeline store."""

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
    # two-node test's) is what a bare ray.init() would join. No dashboard, as genlib's own instance
    # (launch.ensure_ray, whose NOTE has what it costs; bench/ray_idle.py measures it).
    ray.init(address="local", num_cpus=2, logging_level="WARNING", include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def _digits_domain_cache(tmp_path_factory):
    """The digits dataset's domain feature network, trained once per session: its cache folder."""
    from genlib.config import DataConfig
    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.evaluate.features import load_extractor

    home = tmp_path_factory.mktemp("domain") / "genlib-home"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GENLIB_HOME", str(home))
        load_extractor("domain", DatasetVersion(prepare(DataConfig(source="digits")).path))
    (network,) = (home / "features").glob("domain-*")
    return network


def _install_domain_network(network, home) -> None:
    import shutil

    shutil.copytree(network, home / "features" / network.name)


@pytest.fixture
def digits_domain_network(_digits_domain_cache, genlib_home):
    """This test's GENLIB_HOME holds the digits domain network already (trained once per session)."""
    _install_domain_network(_digits_domain_cache, genlib_home)


QUICK = ["train.batch_size=128", "model.hidden=8", "eval.n_samples=16"]  # a small VAE on digits


@pytest.fixture(scope="session")
def vae_two_workers(tmp_path_factory, ray_local, _digits_domain_cache):
    """A VAE trained through Ray Train on two workers for 3 epochs, in its own GENLIB_HOME (with the digits
    domain network), reweighting its own training set before epoch 3 (train.reweight_every=2), shared by
    the training, evaluation and reweighting tests: (home, cfg, result)."""
    from genlib.data.prepare import prepare
    from genlib.presets import load_config
    from genlib.stages.train import train

    home = tmp_path_factory.mktemp("two-workers") / "genlib-home"
    _install_domain_network(_digits_domain_cache, home)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GENLIB_HOME", str(home))
        cfg = load_config("digits-quick", QUICK + ["train.epochs=3", "train.num_workers=2", "train.sample_every=2",
                                                   "train.eval_every=2", "train.eval_samples=60",
                                                   "train.reweight_every=2", "reweight.classifier_seeds=1",
                                                   "reweight.classifier_epochs=1"])
        return home, cfg, train(cfg, prepare(cfg.data).path)


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


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect server (the test harness's) for the session: its URL. Flows run in this process
    report to it, and so do commands started with PREFECT_API_URL set to it."""
    import os

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # The server's telemetry otherwise races its own first writes on SQLite ("database is locked").
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


# One real pipeline, run once per session through the `genlib pipeline` command against a Prefect
# test server: two families (DDP on two workers), sample quality and memorization, reweight →
# retrain, on digits with a rare style (5 % thick strokes, flagged for the debiasing report). The
# pipeline, registry and browser tests all read it.
PIPELINE_OVERRIDES = ["--train.epochs=2", "--train.num_workers=2", "--eval.iwae_k=8", "--eval.n_samples=16",
                      "--eval.n_generated=100", "--eval.copying_cells=2", "--train.sample_every=1",
                      "--models=[{family: vae, hidden: 8}, {family: categorical}]", "--reweight.retrain=[vae]",
                      "--data.style=thick", "--data.style_share=0.05", "--reweight.classifier_seeds=1",
                      "--reweight.classifier_epochs=1"]


@pytest.fixture(scope="session")
def pipeline_store(tmp_path_factory, ray_local, prefect_api, _digits_domain_cache):
    """(home, stdout of the command, its summary, the names of its Prefect task runs)."""
    import asyncio
    import json
    import os
    import subprocess
    import sys
    from types import SimpleNamespace

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    from genlib.tracking import Tag, Tracker

    home = tmp_path_factory.mktemp("pipeline") / "genlib-home"
    _install_domain_network(_digits_domain_cache, home)
    env = {**os.environ, "GENLIB_HOME": str(home), "GENLIB_OFFLINE": "1", "PREFECT_API_URL": prefect_api,
           "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "genlib.cli", "pipeline", "digits-quick", *PIPELINE_OVERRIDES],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tracker = Tracker(f"sqlite:///{home / 'mlflow.db'}")
    (parent,) = tracker.find_runs("genlib-digits", {Tag.STAGE: "pipeline"})
    summary = json.loads(tracker.download_artifacts(parent.info.run_id, "summary.json",
                                                    tmp_path_factory.mktemp("summary")).read_text())
    flow_run_id = parent.data.tags[Tag.PREFECT_FLOW_RUN]

    async def task_names():
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
            return sorted(r.name.rsplit("-", 1)[0] for r in runs)

    names = asyncio.run(task_names())
    return SimpleNamespace(home=home, stdout=done.stdout, summary=summary, task_names=names, tracker=tracker)

"""Adaptive reweighting (``train.reweight_every``): when it happens, who may use it, and that every
rank ends an update with the very same weights. Two ranks run as two processes over gloo; the Ray
Train path (two workers, a checkpoint that keeps the weights): tests/integration/test_reweight.py."""

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from genlib.config import DataConfig
from genlib.data.dataset import DatasetVersion
from genlib.data.prepare import prepare
from genlib.data.sampling import WeightedDistributedSampler
from genlib.evaluate.reweight import estimate_weights, latent_means
from genlib.models import MODELS, build_model
from genlib.presets import load_config
from genlib.stages.checks import check_names
from genlib.train.adaptive import check_adaptive, check_encoder, due, recompute_weights
from tests.families import TINY


def test_updates_fall_before_every_nth_epoch_after_the_first():
    assert [e for e in range(1, 11) if due(e, 3)] == [4, 7, 10]
    assert [e for e in range(1, 4) if due(e, 1)] == [2, 3]
    assert not any(due(e, None) for e in range(1, 10))


def test_a_model_that_cannot_encode_is_refused_before_training():
    cfg = load_config("digits-quick", ["models=[]", "model={family: pixelcnn}", "train.reweight_every=2"])
    with pytest.raises(ValueError, match="train.reweight_every=2 needs a model that declares 'encode'"):
        check_names(cfg)
    aae = load_config("digits-quick", ["models=[]", "model={family: aae}", "train.reweight_every=2",
                                       "reweight.method=knn+elbo"])
    with pytest.raises(ValueError, match="uses the 'elbo' signal, which needs a model that declares 'log_prob'"):
        check_adaptive(aae, MODELS.get("aae").capabilities)
    check_adaptive(aae.replace(reweight=aae.reweight.__class__(method="knn")), MODELS.get("aae").capabilities)
    with pytest.raises(ValueError, match="reweight.encoder: family 'pixelcnn' does not declare 'encode'"):
        check_encoder(cfg, "pixelcnn", MODELS.get("pixelcnn").capabilities)  # the pipeline's reweight stage


def test_a_failure_on_rank_zero_reaches_every_rank():
    model, version = _model_and_version()
    cfg = load_config("digits-quick", ["models=[]", "train.reweight_every=1", "reweight.k=5000"])
    with pytest.raises(ValueError, match="adaptive reweighting before this epoch failed: .*needs more than 5000"):
        recompute_weights(model, cfg, version, rank=0, world=1)


def _model_and_version():
    version = DatasetVersion(prepare(DataConfig(source="digits", style="thick", style_share=0.05)).path)
    torch.manual_seed(0)
    model = build_model(MODELS.get("vae").config_class(**TINY["vae"]), version.shape, version.levels)
    return model, version


def test_one_rank_weights_the_whole_split_from_the_model():
    model, version = _model_and_version()
    cfg = load_config("digits-quick", ["models=[]", "train.reweight_every=1", "reweight.k=5"])
    weights, stats = recompute_weights(model, cfg, version, rank=0, world=1, batch_size=100)
    x = torch.from_numpy(np.array(version.images("train"))).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(weights, estimate_weights(latent_means(model, x), cfg.reweight).weights)
    assert stats["ess_fraction"] >= cfg.reweight.min_ess - 1e-6 and 0 < stats["tau"] <= 1
    sampler = WeightedDistributedSampler(np.full(len(weights), 1 / len(weights)))
    sampler.set_weights(weights)
    assert torch.equal(sampler.weights, torch.as_tensor(weights))
    with pytest.raises(ValueError, match="3 weights for a dataset of"):
        sampler.set_weights(np.full(3, 1 / 3))


def _rank(rank, world, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model, version = _model_and_version()
        cfg = load_config("digits-quick", ["models=[]", "train.reweight_every=1", "reweight.k=5"])
        weights, _ = recompute_weights(model, cfg, version, rank, world, batch_size=100)
        np.save(f"{out}/rank{rank}.npy", weights)
    finally:
        dist.destroy_process_group()


def test_two_ranks_end_an_update_with_identical_weights_equal_to_one_rank(tmp_path):
    with socket.socket() as s:  # a free port for the gloo rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prepare(DataConfig(source="digits", style="thick", style_share=0.05))  # once, before the ranks read it
    mp.start_processes(_rank, args=(2, port, str(tmp_path)), nprocs=2, start_method="spawn")
    a, b = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    np.testing.assert_array_equal(a, b)  # what each rank's sampler will draw from: the very same bytes
    model, version = _model_and_version()
    cfg = load_config("digits-quick", ["models=[]", "train.reweight_every=1", "reweight.k=5"])
    one, _ = recompute_weights(model, cfg, version, rank=0, world=1, batch_size=100)
    np.testing.assert_allclose(a, one, rtol=1e-6)  # the sharded encoding changes nothing but float rounding


def test_a_checkpoint_keeps_the_sampling_weights_in_use(tmp_path):
    from genlib.models.io import read_sampling_weights, save_checkpoint

    model, version = _model_and_version()
    weights = np.random.default_rng(0).dirichlet(np.ones(50))
    np.testing.assert_array_equal(read_sampling_weights(save_checkpoint(tmp_path / "a", model, None, weights,
                                                                        epoch=3)), weights)
    assert read_sampling_weights(save_checkpoint(tmp_path / "b", model, None, epoch=3)) is None

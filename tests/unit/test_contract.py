"""One contract over every registered model family (and its conditional variants)."""

import pytest
import torch
from sklearn.datasets import load_digits

from genlib.config import TrainConfig
from genlib.evaluate.likelihood import latent_metrics
from genlib.models import MODELS, build_model
from genlib.models.base import (
    INTERPOLATE,
    KNOWN_CAPABILITIES,
    LATENT_PRIOR,
    LOG_PROB,
    RECONSTRUCT,
    TRAVERSE,
    Batch,
    TrainingContext,
)
from genlib.models.io import load_model, save_checkpoint
from genlib.models.layers import bits_per_dim, mmd2
from genlib.presets import config_from_dict
from tests.families import ALL, TINY

SHAPE, LEVELS = (1, 8, 8), 17


def test_every_family_has_a_tiny_config():
    assert set(MODELS.names()) == set(TINY)


def _build(variant: str, seed: int = 0):
    family, params = ALL[variant]
    torch.manual_seed(seed)
    cfg = config_from_dict({"model": {"family": family, **params}}).model
    return build_model(cfg, SHAPE, LEVELS, num_classes=10)


def _digits(n: int = 64) -> Batch:
    digits = load_digits()
    x = torch.from_numpy(digits.images[:n]).to(torch.uint8).unsqueeze(1)
    return Batch(x, torch.from_numpy(digits.target[:n]), torch.arange(n))


@pytest.mark.parametrize("variant", sorted(ALL))
def test_training_reduces_loss_on_a_fixed_batch(variant):
    model = _build(variant)
    optimizers = model.configure_optimizers(TrainConfig(lr=3e-3))
    batch = _digits()
    before = model.validation_step(batch)["loss"]
    step = 0
    for _ in range(3):  # epochs: EM families re-estimate at each epoch's end
        for _ in range(15):
            out = model.training_step(batch, optimizers, TrainingContext(step))
            step += 1
        model.on_epoch_end()
    assert "loss" in out and all(isinstance(v, float) for v in out.values())
    assert model.validation_step(batch)["loss"] < 0.9 * before


@pytest.mark.parametrize("variant", sorted(ALL))
def test_samples_are_images_of_the_dataset(variant):
    model = _build(variant).eval()
    samples = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, *SHAPE) and samples.dtype == torch.uint8
    assert int(samples.max()) < LEVELS
    assert set(model.capabilities) <= KNOWN_CAPABILITIES
    if INTERPOLATE in model.capabilities:
        path = model.interpolate(rows=2, steps=3, generator=torch.Generator().manual_seed(0))
        assert path.shape == (6, *SHAPE) and path.dtype == torch.uint8 and int(path.max()) < LEVELS
    if TRAVERSE in model.capabilities:
        grid = model.traverse(steps=5)
        assert grid.shape[0] % 5 == 0 and grid.shape[1:] == SHAPE and grid.dtype == torch.uint8


@pytest.mark.parametrize("variant", sorted(ALL))
def test_checkpoint_round_trip_reproduces_samples(variant, tmp_path):
    model = _build(variant)
    optimizers = model.configure_optimizers(TrainConfig())
    model.training_step(_digits(16), optimizers, TrainingContext())
    model.on_epoch_end()
    model.eval()
    loaded = load_model(save_checkpoint(tmp_path / "ckpt", model, optimizers, epoch=0, step=1)).eval()
    assert loaded.config == model.config
    a = model.sample(4, generator=torch.Generator().manual_seed(1))
    b = loaded.sample(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("variant", sorted(ALL))
def test_log_prob_where_declared(variant):
    model = _build(variant).eval()
    batch = _digits(8)
    if LOG_PROB not in model.capabilities:
        with pytest.raises(NotImplementedError):
            model.log_prob(batch.x, batch.labels)
        return
    lp = model.log_prob(batch.x, batch.labels)
    assert lp.shape == (8,) and torch.isfinite(lp).all()
    assert (lp <= 1e-4).all()  # a discrete likelihood (or a bound on one) is at most 1
    if model.log_prob_exact:  # exact: deterministic (that it sums to one: test_exact_likelihood.py)
        assert torch.equal(lp, model.log_prob(batch.x, batch.labels))


class _Digits(torch.utils.data.Dataset):
    """The first digits as an ImageDataset would serve them: (x, label, index)."""

    def __init__(self, n: int):
        self.batch = _digits(n)

    def __len__(self):
        return len(self.batch.x)

    def __getitem__(self, i):
        return self.batch.x[i], self.batch.labels[i], self.batch.index[i]


@pytest.mark.parametrize("variant", sorted(v for v, (family, _) in ALL.items()
                                           if {RECONSTRUCT, LATENT_PRIOR} & MODELS.get(family).capabilities))
def test_latent_measures_where_declared(variant):
    model = _build(variant).eval()
    batch, dataset = _digits(40), _Digits(40)
    metrics = latent_metrics(model, dataset, batch_size=16, seed=3)
    if RECONSTRUCT in model.capabilities:
        nats = model.reconstruction_log_prob(batch.x, batch.labels)
        assert nats.shape == (40,) and (nats <= 1e-4).all()
        assert metrics["test_recon_bpd"] == pytest.approx(bits_per_dim(-nats.mean().item(), 64), rel=1e-5)
    if LATENT_PRIOR in model.capabilities:
        gen = torch.Generator().manual_seed(3)
        posterior, prior = zip(*(model.latent_samples(batch.x[s], batch.labels[s], gen)
                                 for s in (slice(0, 16), slice(16, 32), slice(32, 40))))
        posterior, prior = torch.cat(posterior), torch.cat(prior)
        assert posterior.shape == prior.shape == (40, model.config.latent_dim)
        assert metrics["test_latent_mmd"] == pytest.approx(mmd2(posterior.double(), prior.double()), rel=1e-6)


def test_conditional_prior_draws_each_class_from_its_own_component():
    model = _build("aae-mixture-conditional").eval()
    labels = torch.arange(10).repeat(50)
    z = model.prior_sample(500, labels, torch.Generator().manual_seed(0))
    nearest = torch.cdist(z, model.means).argmin(1)
    assert (nearest == labels).float().mean() > 0.95
    assert model.sample(4, labels=torch.tensor([0, 1, 2, 3])).shape == (4, *SHAPE)

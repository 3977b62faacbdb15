"""One contract over every registered model family (and its conditional variants)."""

import math

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
    SAMPLE,
    TRANSLATE,
    TRAVERSE,
    Batch,
    TrainingContext,
)
from genlib.models.io import load_model, save_checkpoint
from genlib.models.layers import bits_per_dim, mmd2
from genlib.presets import config_from_dict
from tests.families import ALL, IMAGE_VARIANTS, TINY, TWO_DOMAIN_VARIANTS, kind_of

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


@pytest.mark.parametrize("variant", IMAGE_VARIANTS)
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


@pytest.mark.parametrize("variant", IMAGE_VARIANTS)
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


@pytest.mark.parametrize("variant", IMAGE_VARIANTS)
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


@pytest.mark.parametrize("variant", IMAGE_VARIANTS)
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


# -- translators: two-domain data -------------------------------------------------------------------


def _two_domains(kind: str, n: int = 32) -> Batch:
    """8×8 digits as a two-domain batch: paired, their outlines (A) with the digits (B); unpaired, plain
    digits (A) and bold ones drawn from other images (B)."""
    from genlib.data.pairs import bold, outline

    images = load_digits().images.astype("uint8")[..., None]
    labels = torch.from_numpy(load_digits().target)
    def nchw(x):
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()

    if kind == "paired":
        return Batch(nchw(images[:n]), labels[:n], torch.arange(n), nchw(outline(images[:n], LEVELS)))
    return Batch(nchw(bold(images[n:2 * n], LEVELS)), labels[n:2 * n], torch.arange(n), nchw(images[:n]))


def _build_translator(variant: str, seed: int = 0):
    family, params = ALL[variant]
    torch.manual_seed(seed)
    cfg = config_from_dict({"model": {"family": family, **params}}).model
    return build_model(cfg, SHAPE, LEVELS, num_classes=10, source=(SHAPE, LEVELS))


@pytest.mark.parametrize("variant", TWO_DOMAIN_VARIANTS)
def test_translator_training_reduces_validation_loss_on_a_fixed_batch(variant):
    model = _build_translator(variant)
    optimizers = model.configure_optimizers(TrainConfig(lr=3e-3))
    batch = _two_domains(kind_of(variant))
    before = model.eval().validation_step(batch)["loss"]
    model.train()
    for step in range(20):
        out = model.training_step(batch, optimizers, TrainingContext(step))
    assert "loss" in out and all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert model.eval().validation_step(batch)["loss"] < 0.9 * before


@pytest.mark.parametrize("variant", TWO_DOMAIN_VARIANTS)
def test_translations_are_images_of_the_target_domain(variant):
    model = _build_translator(variant).eval()
    batch = _two_domains(kind_of(variant), 4)
    assert TRANSLATE in model.capabilities and SAMPLE not in model.capabilities
    assert set(model.capabilities) <= KNOWN_CAPABILITIES
    for direction in model.directions:
        source = batch.source if direction == "a2b" else batch.x
        out = model.translate(source, direction)
        assert out.shape == (4, *SHAPE) and out.dtype == torch.uint8 and int(out.max()) < LEVELS
        assert torch.equal(out, model.translate(source, direction))  # eval mode: a deterministic map
    for missing in {"a2b", "b2a"} - set(model.directions):
        with pytest.raises(ValueError, match="translates"):
            model.translate(batch.x, missing)
    with pytest.raises(NotImplementedError):
        model.sample(4)


@pytest.mark.parametrize("variant", TWO_DOMAIN_VARIANTS)
def test_translator_checkpoint_round_trip_keeps_translations_and_non_tensor_state(variant, tmp_path):
    model = _build_translator(variant)
    optimizers = model.configure_optimizers(TrainConfig())
    batch = _two_domains(kind_of(variant), 8)
    for step in range(2):
        model.training_step(batch, optimizers, TrainingContext(step))
    extra = {k: v for k, v in model.state_dict().items() if k.endswith("_extra_state")}
    loaded = load_model(save_checkpoint(tmp_path / "ckpt", model, optimizers, epoch=0, step=2)).eval()
    assert loaded.config == model.config and loaded.domain_spec("a") == model.domain_spec("a")
    for key, value in extra.items():  # the image histories: what training put there, not what a new model has
        assert value.numel() > 0 and torch.equal(loaded.state_dict()[key], value)
    model.eval()
    for direction in model.directions:
        assert torch.equal(loaded.translate(batch.source, direction) if direction == "a2b" else loaded.translate(
            batch.x, direction), model.translate(batch.source if direction == "a2b" else batch.x, direction))


@pytest.mark.parametrize("variant", TWO_DOMAIN_VARIANTS)
def test_translators_map_between_domains_of_other_channels_and_levels(variant):
    family, params = ALL[variant]
    cfg = config_from_dict({"model": {"family": family, **params, **({"identity_weight": 0} if family == "cyclegan"
                                                                      else {})}}).model
    model = build_model(cfg, (1, 8, 8), 17, source=((3, 8, 8), 256))  # RGB photos of 256 levels → grey digits
    batch = Batch(_digits(4).x, None, torch.arange(4), torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8))
    optimizers = model.configure_optimizers(TrainConfig())
    assert all(math.isfinite(v) for v in model.training_step(batch, optimizers, TrainingContext()).values())
    model.eval()
    to_b = model.translate(batch.source, "a2b")
    assert to_b.shape == (4, 1, 8, 8) and int(to_b.max()) < 17
    if "b2a" in model.directions:
        to_a = model.translate(batch.x, "b2a")
        assert to_a.shape == (4, 3, 8, 8) and to_a.dtype == torch.uint8
    with pytest.raises(ValueError, match=r"a2b translates images of shape \(3, 8, 8\), got \(1, 8, 8\)"):
        model.translate(batch.x, "a2b")


def test_a_model_is_refused_on_a_dataset_it_was_not_built_for():
    from genlib.config import DataConfig
    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.models import check_model_data

    edges = DatasetVersion(prepare(DataConfig(source="digits-edges", image_size=16)).path)
    with pytest.raises(ValueError, match=r"built for images \(1, 8, 8\) with 17 levels from domain A's \(1, 8, 8\)"):
        check_model_data(_build_translator("pix2pix"), edges)
    with pytest.raises(ValueError, match="'vae' trains on images data, but dataset digits-edges-"):
        check_model_data(_build("vae"), edges)


def test_a_family_refuses_data_of_a_kind_it_does_not_train_on():
    from genlib.models import check_data_kind

    with pytest.raises(ValueError, match="'pix2pix' trains on paired data, but the dataset is unpaired"):
        check_data_kind("pix2pix", "unpaired")
    with pytest.raises(ValueError, match="'vae' trains on images data"):
        check_data_kind("vae", "paired")
    check_data_kind("cyclegan", "paired")  # CycleGAN takes paired data too: it ignores the pairing
    with pytest.raises(ValueError, match="needs domain A"):
        build_model(config_from_dict({"model": {"family": "pix2pix"}}).model, SHAPE, LEVELS)
    with pytest.raises(ValueError, match="takes no second domain"):
        build_model(config_from_dict({"model": {"family": "vae"}}).model, SHAPE, LEVELS, source=(SHAPE, LEVELS))


def test_image_pool_keeps_a_history_and_returns_it_half_the_time():
    from genlib.models.translation import ImagePool

    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # room left: each image goes in and comes back
    torch.manual_seed(0)
    fresh = torch.arange(100.0, 2100.0).view(-1, 1, 1, 1)
    out = pool.query(fresh).flatten()
    swapped = out != fresh.flatten()
    assert 0.45 < swapped.float().mean() < 0.55  # a stored image in its place with probability ½
    earlier = [set(range(4)) | set(range(100, 100 + i)) for i in range(len(out))]
    assert all(int(v) in earlier[i] for i, v in enumerate(out.tolist()) if swapped[i])  # and one given to it before
    assert len(pool.images) == 4 and all(float(image) >= 100 for image in pool.images)  # the first ones were swapped out
    restored = ImagePool(4)
    restored.load_state_dict(pool.state_dict())
    assert [float(i) for i in restored.images] == [float(i) for i in pool.images]

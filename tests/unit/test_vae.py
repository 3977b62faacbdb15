import pytest
import torch

from genlib.models import build_model
from genlib.models.base import Batch
from genlib.models.io import load_model
from genlib.models.vae import VAEConfig

SHAPES = [((1, 8, 8), 17), ((1, 28, 28), 256), ((3, 32, 32), 256)]


def _batch(shape, levels, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, levels, (n, *shape), generator=g, dtype=torch.uint8)
    return Batch(x, None, torch.arange(n))


@pytest.mark.parametrize("shape, levels", SHAPES)
def test_shapes_and_ranges(shape, levels):
    model = build_model(VAEConfig(latent_dim=4, hidden=8), shape, levels)
    batch = _batch(shape, levels)
    terms = model(batch.x)
    assert terms["recon"].shape == (6,) and terms["kl"].shape == (6,)
    assert model.encode(batch.x).shape == (6, 4)
    samples = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, *shape) and samples.dtype == torch.uint8
    assert int(samples.max()) < levels
    assert model.log_prob(batch.x).shape == (6,)


def test_iwae_bound_is_tighter_than_elbo():
    torch.manual_seed(0)
    model = build_model(VAEConfig(latent_dim=4, hidden=8), (1, 8, 8), 17)
    x = _batch((1, 8, 8), 17, n=16).x
    elbo = torch.stack([model.log_prob(x, k=1) for _ in range(20)]).mean(0)  # E[ELBO]
    iwae = model.log_prob(x, k=200)
    assert (iwae >= elbo - 0.05).all()  # log p ≥ IWAE_k ≥ ELBO, per image
    assert iwae.mean() > elbo.mean()
    with pytest.raises(ValueError, match="k must be"):
        model.log_prob(x, k=0)


def test_bad_builds():
    with pytest.raises(ValueError, match="square"):
        build_model(VAEConfig(), (1, 8, 6), 17)
    with pytest.raises(ValueError, match="levels must be in"):
        build_model(VAEConfig(), (1, 8, 8), 1000)
    with pytest.raises(FileNotFoundError, match="not a genlib checkpoint"):
        load_model("/nonexistent")

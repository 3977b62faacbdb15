import pytest
import torch

from genlib.models import MODELS, build_model
from genlib.models.base import LOG_PROB, Batch
from genlib.models.io import load_model
from genlib.models.vae import VAEConfig
from tests.families import TINY

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


BOUNDS = sorted(name for name in MODELS.names()
                if LOG_PROB in MODELS.get(name).capabilities and not MODELS.get(name).log_prob_exact)


@pytest.mark.parametrize("family", BOUNDS)
def test_iwae_bound_is_above_the_elbo_and_tightens_with_k(family):
    torch.manual_seed(0)
    model = build_model(MODELS.get(family).config_class(family=family, **TINY[family]), (1, 8, 8), 17).eval()
    with torch.no_grad():  # away from the initialisation, where a PixelCNN decoder all but ignores z
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = _batch((1, 8, 8), 17, n=16).x
    elbo = torch.stack([model.log_prob(x, k=1) for _ in range(20)]).mean(0)  # E[ELBO]
    iwae10 = torch.stack([model.log_prob(x, k=10) for _ in range(5)]).mean(0)  # E[IWAE_10]
    iwae200 = model.log_prob(x, k=200)
    assert (iwae200 >= elbo - 0.05).all()  # log p ≥ IWAE_k ≥ ELBO, per image
    # E[IWAE_k] increases with k (Burda et al. 2016, theorem 1): ELBO < IWAE_10 < IWAE_200 on average.
    assert elbo.mean() < iwae10.mean() < iwae200.mean()
    with pytest.raises(ValueError, match="k must be"):
        model.log_prob(x, k=0)


def test_bad_builds():
    with pytest.raises(ValueError, match="square"):
        build_model(VAEConfig(), (1, 8, 6), 17)
    with pytest.raises(ValueError, match="levels must be in"):
        build_model(VAEConfig(), (1, 8, 8), 1000)
    with pytest.raises(FileNotFoundError, match="not a genlib checkpoint"):
        load_model("/nonexistent")


def test_traversal_varies_one_latent_per_row():
    torch.manual_seed(0)
    model = build_model(VAEConfig(latent_dim=3, hidden=8), (1, 8, 8), 17)
    decoded = []
    real_decode = model.decode_mean

    def spy(z, labels=None):
        decoded.append(z)
        return real_decode(z, labels)

    model.decode_mean = spy
    grid = model.traverse(steps=5, span=2.0)
    assert grid.shape == (15, 1, 8, 8)
    z = decoded[0].view(3, 5, 3)
    for d in range(3):
        assert torch.allclose(z[d, :, d], torch.linspace(-2, 2, 5))
        others = [o for o in range(3) if o != d]
        assert (z[d][:, others] == 0).all()


def test_conditional_and_beta_variants():
    from genlib.models.vae import BetaVAEConfig

    assert BetaVAEConfig().beta == 4.0 and BetaVAEConfig().family == "beta-vae"
    torch.manual_seed(0)
    model = build_model(VAEConfig(latent_dim=4, hidden=8, conditional=True), (1, 8, 8), 17, num_classes=10)
    z = torch.zeros(2, 4)
    a = model.decode_logits(z, torch.nn.functional.one_hot(torch.tensor([0, 0]), 10).float())
    b = model.decode_logits(z, torch.nn.functional.one_hot(torch.tensor([0, 7]), 10).float())
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])  # the class changes the decoder
    with pytest.raises(ValueError, match="needs labels"):
        model(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="labelled dataset"):
        build_model(VAEConfig(conditional=True), (1, 8, 8), 17)

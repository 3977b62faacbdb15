"""Properties particular to the GAN: its losses, the gradient penalty, EMA, latent arithmetic."""

import pytest
import torch

from genlib.models import build_model
from genlib.models.gan import LOSSES, GANConfig
from genlib.models.layers import mmd2


def test_losses_are_selected_by_config():
    assert set(LOSSES) == {"minimax", "non-saturating", "lsgan", "wgan-gp", "hinge"}
    with pytest.raises(ValueError, match=r"loss='wasserstein' is not allowed; expected one of \['minimax'"):
        GANConfig(loss="wasserstein")
    with pytest.raises(ValueError, match="needs a labelled dataset"):
        build_model(GANConfig(conditional=True), (1, 8, 8), 17)


def test_loss_values_at_a_known_point():
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    sp = torch.nn.functional.softplus
    d, g = LOSSES["non-saturating"]
    assert d(real, fake).item() == pytest.approx((sp(-real) + sp(fake)).item())
    assert g(fake).item() == pytest.approx(sp(-fake).item())
    assert LOSSES["minimax"][1](fake).item() == pytest.approx(-sp(fake).item())
    assert LOSSES["lsgan"][0](real, fake).item() == pytest.approx(0.5 * (1 + 1))
    assert LOSSES["hinge"][0](real, fake).item() == pytest.approx(0.0)  # both beyond the margin
    assert LOSSES["wgan-gp"][0](real, fake).item() == pytest.approx(-3.0)


def test_gradient_penalty_is_part_of_the_wgan_critic_loss():
    torch.manual_seed(0)
    model = build_model(GANConfig(loss="wgan-gp", hidden=8, latent_dim=8), (1, 8, 8), 17)
    x = torch.randint(0, 17, (4, 1, 8, 8), dtype=torch.uint8)
    z = torch.randn(4, 8)
    torch.manual_seed(1)
    with_gp = model("d", x, z, None)
    object.__setattr__(model, "config", GANConfig(loss="wgan-gp", hidden=8, latent_dim=8, gp_weight=0.0))
    torch.manual_seed(1)
    without = model("d", x, z, None)
    assert with_gp.item() > without.item()


def test_dragan_penalty_equals_a_direct_autograd_computation():
    torch.manual_seed(0)
    model = build_model(GANConfig(loss="lsgan", penalty="dragan", hidden=8, latent_dim=8), (1, 8, 8), 17)
    real = torch.rand(5, 1, 8, 8) * 2 - 1
    torch.manual_seed(7)
    penalty = model.dragan_penalty(real, None)
    # The same draws, in the same order: α per image, then the per-pixel uniform perturbation.
    torch.manual_seed(7)
    alpha = torch.rand(5, 1, 1, 1)
    perturbed = real + alpha * 0.5 * real.std() * torch.rand_like(real)
    norms = []
    for one in perturbed:  # one image at a time: the gradient of D's output for it alone
        point = one.unsqueeze(0).requires_grad_(True)
        grad, = torch.autograd.grad(model.discriminator(point, None).sum(), point)
        norms.append(grad.norm())
    expected = torch.stack([(g - 1) ** 2 for g in norms]).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)
    assert penalty.requires_grad  # it trains D: the graph of the gradient is kept


def test_penalty_choice_adds_to_any_loss():
    torch.manual_seed(0)
    x = torch.randint(0, 17, (4, 1, 8, 8), dtype=torch.uint8)
    z = torch.randn(4, 8)
    losses = {}
    for penalty in ("none", "dragan", "interpolates", "r1"):
        torch.manual_seed(0)
        model = build_model(GANConfig(loss="hinge", penalty=penalty, hidden=8, latent_dim=8), (1, 8, 8), 17)
        torch.manual_seed(1)
        losses[penalty] = model("d", x, z, None).item()
    assert all(losses[penalty] > losses["none"] for penalty in ("dragan", "interpolates", "r1"))
    assert build_model(GANConfig(loss="wgan-gp"), (1, 8, 8), 17).penalty == "interpolates"  # "auto"
    assert build_model(GANConfig(loss="hinge"), (1, 8, 8), 17).penalty == "none"
    with pytest.raises(ValueError, match="penalty='r2' is not allowed"):
        GANConfig(penalty="r2")


def test_ema_follows_the_generator_with_warm_up():
    torch.manual_seed(0)
    model = build_model(GANConfig(hidden=8, latent_dim=8, ema=0.999), (1, 8, 8), 17)
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    model._update_ema()  # the first update copies 90%: decay (1+0)/(10+0)
    gen, ema = next(model.generator.parameters()), next(model.generator_ema.parameters())
    assert torch.allclose(ema, gen, atol=0.11)


def test_latent_arithmetic_and_mmd():
    torch.manual_seed(0)
    model = build_model(GANConfig(hidden=8, latent_dim=8), (1, 8, 8), 17).eval()
    a, b, c = (torch.randn(5, 8) for _ in range(3))
    image = model.latent_arithmetic(a, b, c)
    assert image.shape == (1, 1, 8, 8) and image.dtype == torch.uint8
    x = torch.randn(50, 10)
    assert abs(mmd2(x[:25], x[25:])) < 0.05  # same distribution: near zero
    assert mmd2(x, x + 3.0) > 0.5

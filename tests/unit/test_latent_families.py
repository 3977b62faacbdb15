"""PixelVAE's and the adversarial autoencoder's own behaviour (their shared contract: test_contract.py)."""

import pytest
import torch
from sklearn.datasets import load_digits

from genlib.config import TrainConfig
from genlib.models import build_model
from genlib.models.aae import AAEConfig
from genlib.models.base import Batch, TrainingContext
from genlib.models.pixelvae import PixelVAEConfig


def _digits(n: int = 128) -> Batch:
    digits = load_digits()
    x = torch.from_numpy(digits.images[:n]).to(torch.uint8).unsqueeze(1)
    return Batch(x, torch.from_numpy(digits.target[:n]), torch.arange(n))


def test_pixelvae_warms_the_kl_weight_up_linearly_and_validates_on_the_true_bound():
    torch.manual_seed(0)
    model = build_model(PixelVAEConfig(latent_dim=4, hidden=8, layers=2, head=16, kl_warmup=4), (1, 8, 8), 17)
    optimizers = model.configure_optimizers(TrainConfig())
    batch = _digits(16)
    weights = [model.training_step(batch, optimizers, TrainingContext(step))["kl_weight"] for step in range(6)]
    assert weights == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    out = model.eval().validation_step(batch)
    assert out["loss"] == pytest.approx(out["recon"] + out["kl"], rel=1e-5)  # KL weight 1, whatever the warm-up
    assert out["kl_bpd"] == pytest.approx(out["kl"] / (64 * torch.log(torch.tensor(2.0)).item()), rel=1e-5)
    assert 0 <= out["active_units"] <= 4


def test_pixelvae_decoder_is_conditioned_on_z_and_completion_keeps_the_observed_pixels():
    torch.manual_seed(0)
    model = build_model(PixelVAEConfig(latent_dim=4, hidden=8, layers=2, head=16), (1, 8, 8), 17).eval()
    x = _digits(4).x
    z = torch.randn(4, 4)
    assert not torch.allclose(model.decode_logits(x, z), model.decode_logits(x, z + 1.0))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4] = True
    done = model.complete(x, mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(done[:, :, :4], x[:, :, :4]) and done.shape == x.shape
    # Greedy decoding is deterministic: the same latents give the same interpolation grid.
    a = model.interpolate(rows=2, steps=3, generator=torch.Generator().manual_seed(1))
    b = model.interpolate(rows=2, steps=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_each_of_the_aae_updates_moves_only_its_own_networks():
    torch.manual_seed(0)
    model = build_model(AAEConfig(latent_dim=2, hidden=4, disc_hidden=16), (1, 8, 8), 17)
    optimizers = model.configure_optimizers(TrainConfig())
    batch = _digits(32)
    parts = {"encoder": model.encoder, "decoder": model.decoder, "discriminator": model.discriminator}
    expected = {"reconstruct": ("autoencoder", {"encoder", "decoder"}),
                "discriminate": ("discriminator", {"discriminator"}),
                "regularize": ("encoder", {"encoder"})}
    for phase, (optimizer, moved) in expected.items():
        before = {name: [p.detach().clone() for p in part.parameters()] for name, part in parts.items()}
        model.optimize(optimizers[optimizer], model(phase, batch.x))
        changed = {name for name, part in parts.items()
                   if any(not torch.equal(a, p) for a, p in zip(before[name], part.parameters()))}
        assert changed == moved, f"{phase}: moved {changed}, expected {moved}"
    out = model.training_step(batch, optimizers, TrainingContext(3))
    assert set(out) == {"loss", "recon_bpd", "d_loss", "g_loss"}


def test_the_encoder_update_fools_a_fixed_discriminator():
    torch.manual_seed(0)
    model = build_model(AAEConfig(latent_dim=2, hidden=4, disc_hidden=32), (1, 8, 8), 17)
    optimizers = model.configure_optimizers(TrainConfig(lr=3e-3))
    batch = _digits(128)
    for _ in range(100):  # the discriminator learns to tell the initial codes from N(0, I)
        model.optimize(optimizers["discriminator"], model("discriminate", batch.x))
    with torch.no_grad():
        before = float(model("regularize", batch.x))
    for _ in range(30):  # the encoder alone follows the discriminator's gradient
        model.optimize(optimizers["encoder"], model("regularize", batch.x))
    with torch.no_grad():
        after = float(model("regularize", batch.x))
    assert before > 1.0 and after < 0.5 * before, (before, after)  # −log D(E(x)): codes now pass for prior draws


def test_aae_refuses_a_mixture_prior_without_a_circle_to_put_it_on():
    with pytest.raises(ValueError, match="latent_dim ≥ 2"):
        build_model(AAEConfig(latent_dim=1, prior="mixture"), (1, 8, 8), 17)
    with pytest.raises(ValueError, match="labelled dataset"):
        build_model(AAEConfig(conditional=True), (1, 8, 8), 17)

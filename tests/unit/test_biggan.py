"""The BigGAN-style family: orthogonal regularisation, truncation, self-attention, spectral norm;
and the class-conditional accuracy every conditional model's evaluation reports."""

import numpy as np
import pytest
import torch

from genlib.evaluate.extractor import Extractor
from genlib.evaluate.suite import Scores, _with_class_accuracy, generate
from genlib.models import build_model
from genlib.models.biggan import SelfAttention
from genlib.presets import config_from_dict


def _biggan(size: int = 8, **params):
    cfg = config_from_dict({"model": {"family": "biggan", "latent_dim": 8, "embed_dim": 8, "hidden": 8,
                                      "attention_resolution": 0, **params}}).model
    torch.manual_seed(0)
    return build_model(cfg, (1, size, size), 17, num_classes=10)


def test_orthogonal_penalty_sums_the_off_diagonal_gram_entries_of_each_generator_weight():
    model = _biggan()
    expected = 0.0
    for key, param in model.generator.named_parameters():
        if param.dim() >= 2 and "embed" not in key:
            w = param.detach().flatten(1).double()
            gram = w @ w.T
            expected += float((gram - torch.diag(torch.diag(gram))).pow(2).sum())
    assert model.orthogonal_penalty().item() == pytest.approx(expected, rel=1e-4)


def test_truncation_redraws_latents_beyond_the_threshold_and_zero_gives_one_image_per_class():
    model = _biggan().eval()
    z = model.truncated_latents(500, 0.5, torch.Generator().manual_seed(0))
    # a normal truncated to ±0.5 (std 0.284), not one clamped there (std 0.43, mass on the bounds)
    assert z.abs().max() < 0.5 and z.std().item() == pytest.approx(0.284, abs=0.01)
    assert [model.threshold(psi) for psi in (0.0, 0.5, 0.75)] == [0.0, 1.0, 3.0]  # ψ ↦ t = ψ / (1 − ψ)
    plain = model.sample(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(plain, model.sample(4, generator=torch.Generator().manual_seed(1), truncation=1.0))
    threes = model.sample(4, labels=torch.full((4,), 3), generator=torch.Generator().manual_seed(1), truncation=0.0)
    assert all(torch.equal(threes[0], image) for image in threes)
    sevens = model.sample(4, labels=torch.full((4,), 7), generator=torch.Generator().manual_seed(1), truncation=0.0)
    assert not torch.equal(threes[0], sevens[0])  # the class still decides


def test_self_attention_starts_as_the_identity_and_spectral_norm_bounds_the_weights():
    attention = SelfAttention(8)
    x = torch.randn(2, 8, 4, 4)
    assert torch.equal(attention(x), x)  # γ = 0 at the start
    model = _biggan(16, attention_resolution=8).train()  # G attends after its 8×8 block, D after its first
    assert model.generator.attention is not None and model.discriminator.attention is not None
    batch = torch.randint(0, 17, (16, 1, 16, 16), dtype=torch.uint8)
    for _ in range(20):  # power iterations run in training-mode forward passes
        for phase in ("d", "g"):
            model(phase, batch, torch.randn(16, 8), torch.arange(16) % 10)
    normed = [m for net in (model.generator, model.discriminator) for m in net.modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.Embedding)) and hasattr(m, "parametrizations")]
    assert len(normed) > 20 and model.discriminator.project in normed
    for module in normed:
        sigma = torch.linalg.matrix_norm(module.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="generator passes .* and the discriminator .*; choose one of"):
        _biggan(16, attention_resolution=16)


def test_biggan_without_labels_or_on_4x4_images_is_refused_naming_what_would_work():
    cfg = config_from_dict({"model": {"family": "biggan"}}).model
    with pytest.raises(ValueError, match="biggan is class-conditional.*use gan, progan or stylegan"):
        build_model(cfg, (1, 8, 8), 17, num_classes=None)
    with pytest.raises(ValueError, match="a side of at least 8"):
        build_model(cfg, (1, 4, 4), 17, num_classes=10)


class _LabelPainter(torch.nn.Module):
    """A conditional 'model' whose sample shows its label as the value of every pixel."""
    conditional, num_classes = True, 10

    @property
    def device(self):
        return torch.device("cpu")

    def sample(self, n, labels=None, generator=None):
        return labels.to(torch.uint8)[:, None, None, None].expand(n, 1, 2, 2).clone()


def test_conditional_samples_are_drawn_for_each_class_in_turn_and_scored_by_the_classifier():
    images = generate(_LabelPainter(), 600, seed=0)  # more than one sampling batch
    drawn_for = torch.arange(600) % 10
    assert torch.equal(images[:, 0, 0, 0].long(), drawn_for)
    # A classifier that reads the label back, except on every fourth image: accuracy 3/4.
    features = images.flatten(1).float().numpy()
    wrong = np.arange(600) % 4 == 0

    def classify(f):
        predicted = f[:, 0].long() + torch.from_numpy(wrong[:len(f)]).long()
        return torch.nn.functional.one_hot(predicted % 10, 10).float()

    extractor = Extractor("pixels", "pixels", 4, lambda x: x.flatten(1).float(), {}, classify=classify)
    scored = _with_class_accuracy(Scores({"fid_pixels": 1.0}, {}, {}, {}), features, drawn_for, extractor)
    assert scored.metrics == {"fid_pixels": 1.0, "class_accuracy_pixels": 0.75}
    assert "class each sample was drawn for" in scored.params["quality.class_accuracy"]

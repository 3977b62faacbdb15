"""Properties particular to the pixel-by-pixel models: cached sampling, completion, receptive fields.
(Causality and exact normalisation of every autoregressive family: test_exact_likelihood.py.)"""

import pytest
import torch

from genlib.models import build_model
from genlib.models.pixelcnn import GatedPixelCNNConfig, PixelCNNConfig, PixelRNNConfig

CONFIGS = [PixelCNNConfig(hidden=16, layers=2, head=16),
           PixelCNNConfig(hidden=16, layers=2, head=16, conditional=True),
           GatedPixelCNNConfig(hidden=16, layers=3, head=16, kernel=3),
           GatedPixelCNNConfig(hidden=16, layers=3, head=16, kernel=3, conditional=True),
           PixelRNNConfig(hidden=15, layers=2, head=16, first_kernel=3),
           PixelRNNConfig(hidden=15, layers=2, head=16, first_kernel=3, layer="diagonal-bilstm")]
# One layer: the gated stack's first layer is also its last (no residual), and a single recurrent layer.
ONE_LAYER = [GatedPixelCNNConfig(hidden=16, layers=1, head=16, kernel=3),
             PixelRNNConfig(hidden=15, layers=1, head=16, first_kernel=3, layer="diagonal-bilstm")]
SHAPES = [((1, 6, 6), 17), ((3, 5, 5), 4)]  # grey, and colour with R → G → B ordering


def _name(cfg) -> str:
    return f"{cfg.family}{'-' + cfg.layer if hasattr(cfg, 'layer') else ''}{'-cond' if getattr(cfg, 'conditional', False) else ''}"


def _perturbed(cfg, shape, levels):
    """The model moved away from its initialisation, so that no layer is near-trivial."""
    torch.manual_seed(0)
    model = build_model(cfg, shape, levels, num_classes=3).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("shape, levels", SHAPES, ids=["grey", "rgb"])
@pytest.mark.parametrize("cfg", CONFIGS + ONE_LAYER, ids=lambda c: _name(c) + f"-{c.layers}")
def test_cached_sampler_draws_the_naive_samples(cfg, shape, levels):
    model = _perturbed(cfg, shape, levels)
    cached = model.sample(5, generator=torch.Generator().manual_seed(7), cached=True)
    naive = model.sample(5, generator=torch.Generator().manual_seed(7), cached=False)
    assert torch.equal(cached, naive)
    assert len(torch.unique(cached)) > 1  # not a degenerate model that draws one level everywhere


@pytest.mark.parametrize("cfg", CONFIGS, ids=_name)
def test_completion_keeps_observed_pixels_and_matches_naive(cfg):
    model = _perturbed(cfg, (1, 8, 8), 17)
    x = torch.randint(0, 17, (4, 1, 8, 8), dtype=torch.uint8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4] = True  # the top half is observed
    done = model.complete(x, mask, generator=torch.Generator().manual_seed(1))
    assert torch.equal(done[:, :, :4], x[:, :, :4])
    assert not torch.equal(done[:, :, 4:], x[:, :, 4:])
    naive = model.complete(x, mask, generator=torch.Generator().manual_seed(1), cached=False)
    assert torch.equal(done, naive)


def _blind_pairs(cfg, size: int = 5) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(pixel, earlier pixel) pairs where changing the earlier pixel moves no logit of the pixel in any
    of eight random images (grey, 4 levels)."""
    levels = 4
    model = _perturbed(cfg, (1, size, size), levels)
    x = torch.randint(0, levels, (8, 1, size, size), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    positions = [(i, j) for i in range(size) for j in range(size)]
    changed = x[None].repeat(len(positions) + 1, 1, 1, 1, 1)
    for n, (i, j) in enumerate(positions, start=1):
        changed[n, :, 0, i, j] = (changed[n, :, 0, i, j] + 1 + torch.arange(8) % (levels - 1)) % levels
    with torch.no_grad():
        out = model.logits(changed.flatten(0, 1), None).view(len(positions) + 1, 8, 1, levels, size, size)
    return [((i, j), (ei, ej)) for i, j in positions for n, (ei, ej) in enumerate(positions, start=1)
            if (ei, ej) < (i, j) and torch.equal(out[n, :, 0, :, i, j], out[0, :, 0, :, i, j])]


def test_diagonal_bilstm_needs_an_input_convolution_that_sees_the_current_row():
    with pytest.raises(ValueError, match="first_kernel=1 is not allowed; expected ≥ 3 with layer: diagonal-bilstm"):
        PixelRNNConfig(layer="diagonal-bilstm", first_kernel=1)
    assert PixelRNNConfig(layer="row", first_kernel=1).first_kernel == 1


def test_diagonal_bilstm_trains_under_bfloat16_autocast():
    model = _perturbed(PixelRNNConfig(hidden=8, layers=1, head=8, first_kernel=3, layer="diagonal-bilstm"), (3, 4, 4), 4)
    x = torch.randint(0, 4, (2, 3, 4, 4), dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).mean()
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.lstms.parameters())


def test_diagonal_bilstm_sees_every_earlier_pixel_where_the_row_lstm_does_not():
    row = _blind_pairs(PixelRNNConfig(hidden=15, layers=1, head=16, first_kernel=3))
    diagonal = _blind_pairs(PixelRNNConfig(hidden=15, layers=1, head=16, first_kernel=3, layer="diagonal-bilstm"))
    assert not diagonal, f"the Diagonal BiLSTM's logits ignore these (pixel, earlier pixel) pairs: {diagonal}"
    # The Row LSTM's triangle: pixel (2, 0) does not see the right end of the row above it.
    assert ((2, 0), (1, 4)) in row, row


def test_conditional_models_need_labels():
    with pytest.raises(ValueError, match="needs a labelled dataset"):
        build_model(PixelCNNConfig(conditional=True), (1, 8, 8), 17, num_classes=None)
    model = build_model(PixelCNNConfig(hidden=8, layers=1, head=8, conditional=True), (1, 8, 8), 17, num_classes=10)
    with pytest.raises(ValueError, match="batches need labels"):
        model(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))

"""Contracts of the families that declare an exact log-likelihood.

* Their ``log_prob`` is a normalised distribution: summed over every image of a tiny shape it is 1.
* The autoregressive ones (those with ``logits``) are causal in raster order, rows top to bottom,
  pixels left to right, channels R → G → B; and the Gated PixelCNN has no blind spot.

Families are selected from the registry, not listed here, so a new exact family is tested (or
fails for want of a tiny config in ``tests.families``) as soon as it is registered.
"""

import itertools

import pytest
import torch

from genlib.config import TrainConfig
from genlib.models import MODELS, build_model
from genlib.models.base import LOG_PROB, Batch, TrainingContext
from tests.families import ALL

NUM_CLASSES, LABEL = 10, 1  # class-conditional variants are scored with every image labelled LABEL


def _is_exact(cls) -> bool:
    return LOG_PROB in cls.capabilities and bool(cls.log_prob_exact)


def _is_autoregressive(cls) -> bool:
    return callable(getattr(cls, "logits", None))


def _variants(select) -> list[str]:
    """Variants in tests.families.ALL of the selected registered families, plus any selected family
    with no entry in ALL at all (its test then fails, asking for a tiny config)."""
    families = [name for name in MODELS.names() if select(MODELS.get(name))]
    return sorted({v for v, (family, _) in ALL.items() if family in families} | set(families))


EXACT = _variants(_is_exact)
AUTOREGRESSIVE = _variants(_is_autoregressive)


def _conditional(model) -> bool:
    return bool(getattr(model.config, "conditional", False))


def _build(variant: str, shape, levels: int, **overrides):
    assert variant in ALL, (f"family {variant!r} declares an exact log_prob or logits but has no tiny "
                            f"config in tests.families.TINY")
    family, params = ALL[variant]
    config = MODELS.get(family).config_class(family=family, **{**params, **overrides})
    return build_model(config, shape, levels, NUM_CLASSES)


def _perturb(model, shape, levels: int) -> None:
    """Move the model well away from its initialisation, so that a uniform or symmetric start
    cannot pass for a normalised one. Models fitted without gradients (the EM baselines, whose
    parameters are buffers) run two EM iterations (epochs) of their own training on skewed random
    images; every learned parameter then gets Gaussian noise, so no weight is zero or tied."""
    gen = torch.Generator().manual_seed(1)
    if not model.trainable:
        optimizers = model.configure_optimizers(TrainConfig())
        step = 0
        for _ in range(2):  # epochs
            for _ in range(2):  # batches
                # Squaring a uniform skews the levels towards 0: the fitted categoricals are not uniform.
                x = (torch.rand(32, *shape, generator=gen) ** 2 * levels).long().clamp_(max=levels - 1)
                labels = torch.randint(0, NUM_CLASSES, (32,), generator=gen)
                model.training_step(Batch(x.to(torch.uint8), labels, torch.arange(32)), optimizers,
                                    TrainingContext(step))
                step += 1
            model.on_epoch_end()
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    model.eval()


def _perturbed(variant: str, shape, levels: int):
    """The variant built at ``shape`` and moved away from its initialisation, seeded."""
    torch.manual_seed(0)
    model = _build(variant, shape, levels)
    _perturb(model, shape, levels)
    return model


def _every_image(shape, levels: int) -> torch.Tensor:
    dims = shape[0] * shape[1] * shape[2]
    grid = torch.tensor(list(itertools.product(range(levels), repeat=dims)), dtype=torch.uint8)
    return grid.view(-1, *shape)


# Grey (1, 2, 2) at 3 levels is 3^4 = 81 images, RGB (3, 1, 2) at 2 levels is 2^6 = 64; every exact
# family builds at both (the 7×7 mask-A input layers just pad a 2-pixel-wide image).
TINY_SPACES = [((1, 2, 2), 3), ((3, 1, 2), 2)]


@pytest.mark.parametrize("shape, levels", TINY_SPACES, ids=["grey-1x2x2-L3", "rgb-3x1x2-L2"])
@pytest.mark.parametrize("variant", EXACT)
def test_exact_log_prob_sums_to_one_over_every_image(variant, shape, levels):
    model = _perturbed(variant, shape, levels)
    x = _every_image(shape, levels)
    labels = torch.full((len(x),), LABEL) if _conditional(model) else None
    lp = model.log_prob(x, labels)
    assert lp.shape == (levels ** x[0].numel(),) and torch.isfinite(lp).all()
    # Not a uniform model, which would sum to one for free.
    assert float(lp.max() - lp.min()) > 0.1, f"{variant}: log_prob is (nearly) uniform after perturbing"
    total = float(torch.logsumexp(lp.double(), 0))  # the float32 log p(x), summed in double
    assert abs(total) < 1e-4, f"{variant} at {shape}, {levels} levels: log Σ p(x) = {total:.3g}, not 0"


# Grey 5×5 and RGB 4×4 at 4 levels: every input sub-pixel is changed in turn.
CAUSAL_SHAPES = [((1, 5, 5), 4), ((3, 4, 4), 4)]
N_IMAGES = 3  # several random images, so no dependence hides behind an activation that is off


def _raster(shape) -> list[tuple[int, int, int]]:
    """Sub-pixels (c, i, j) in generation order: rows, then pixels, then channels R → G → B."""
    c_n, h_n, w_n = shape
    return [(c, i, j) for i, j, c in itertools.product(range(h_n), range(w_n), range(c_n))]


@pytest.mark.parametrize("shape, levels", CAUSAL_SHAPES, ids=["grey-1x5x5", "rgb-3x4x4"])
@pytest.mark.parametrize("variant", AUTOREGRESSIVE)
def test_autoregressive_output_depends_only_on_earlier_subpixels(variant, shape, levels):
    model = _perturbed(variant, shape, levels)
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, levels, (N_IMAGES, *shape), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (N_IMAGES,), generator=gen) if _conditional(model) else None
    order = _raster(shape)
    # One batch: the images, then for each sub-pixel the images with that sub-pixel changed.
    changed = x[None].repeat(len(order) + 1, 1, 1, 1, 1)
    for n, (c, i, j) in enumerate(order, start=1):
        shift = torch.randint(1, levels, (N_IMAGES,), generator=gen, dtype=torch.uint8)
        changed[n, :, c, i, j] = (changed[n, :, c, i, j] + shift) % levels
    with torch.no_grad():
        out = model.logits(changed.flatten(0, 1), None if labels is None else labels.repeat(len(order) + 1))
    out = out.view(len(order) + 1, N_IMAGES, *out.shape[1:])  # (1 + positions, B, C, L, H, W)
    base = out[0]
    for n, (c, i, j) in enumerate(order, start=1):
        # The changed sub-pixel itself and everything before it: sub-pixels at positions < n in
        # the order, plus (c, i, j). Channels > c of pixel (i, j) come after it and may change.
        for cc, ii, jj in order[:n]:
            diff = (out[n, :, cc, :, ii, jj] - base[:, cc, :, ii, jj]).abs().max().item()
            assert diff <= 1e-6, (f"{variant} {shape}: changing sub-pixel (c={c}, i={i}, j={j}) moves the "
                                  f"logits of sub-pixel (c={cc}, i={ii}, j={jj}) by {diff:.3g}")
        if n < len(order):  # keeps the check from passing vacuously (a model that ignores its input)
            assert not torch.equal(out[n], base), \
                f"{variant} {shape}: changing sub-pixel (c={c}, i={i}, j={j}) changes no logits at all"


# Receptive field of the Gated PixelCNN with kernel k = 3 (p = 1): after L layers the horizontal
# stack reaches L pixels to the left, the vertical stack L rows up and L columns either side, so
# L = 4 layers cover all of a 5×5 image (and of a 4×4 one) from its last pixel — no blind spot, the
# defect of the plain PixelCNN that the two stacks of [van den Oord et al. 2016] remove.
# Not asserted for the plain PixelCNN (its stacked masked convolutions have the blind spot to the
# upper right) nor for the Row LSTM (its receptive field is a triangle above each pixel, by design).
@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 4, 4)], ids=["grey-1x5x5", "rgb-3x4x4"])
def test_gated_pixelcnn_sees_every_earlier_pixel(shape):
    levels = 4
    torch.manual_seed(0)
    model = _build("gated-pixelcnn", shape, levels, layers=4, kernel=3)
    _perturb(model, shape, levels)
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, levels, (N_IMAGES, *shape), generator=gen, dtype=torch.uint8)
    _, h_n, w_n = shape
    earlier = [(i, j) for i in range(h_n) for j in range(w_n)][:-1]
    changed = x[None].repeat(len(earlier) + 1, 1, 1, 1, 1)
    for n, (i, j) in enumerate(earlier, start=1):
        shift = torch.randint(1, levels, (N_IMAGES,), generator=gen, dtype=torch.uint8)
        changed[n, :, 0, i, j] = (changed[n, :, 0, i, j] + shift) % levels
    with torch.no_grad():
        out = model.logits(changed.flatten(0, 1), None)
    last = out.view(len(earlier) + 1, N_IMAGES, *out.shape[1:])[:, :, 0, :, h_n - 1, w_n - 1]  # (1+n, B, L)
    # A pixel is seen when changing it moves the logits of at least one image: in any one image
    # the ReLUs before the head can switch a colour group's few features off altogether.
    blind = [(i, j) for n, (i, j) in enumerate(earlier, start=1) if torch.equal(last[n], last[0])]
    assert not blind, (f"the first-channel logits of the last pixel ({h_n - 1}, {w_n - 1}) ignore channel 0 "
                       f"of the earlier pixels {blind}")

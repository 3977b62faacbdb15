"""Paired metrics for image-to-image translation: each output against the true target of its input.

The pix2pix paper (Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks",
CVPR 2017) reports translations against their ground truth; these are the usual per-pair measures:

- ``l1``: the mean absolute difference of pixel values, the reconstruction term pix2pix trains on.
- ``psnr``: peak signal-to-noise ratio in dB, 10·log10(MAX² / MSE) with MAX = 1; higher is better.
- ``ssim``: the structural similarity index of Wang et al. [1], which compares local means, contrasts
  and correlations rather than pixels one by one; 1 for identical images, higher is better.

Conventions. Images are integer tensors (N, C, H, W) with values in [0, levels), ``levels`` (2..256)
being the number of grey values; every metric is computed in float64 on the images rescaled to [0, 1]
(value / (levels - 1)), so results do not depend on ``levels``, and the data range is 1. Each
function returns one value per image pair (shape (N,)); ``paired_metrics`` returns their means.
Images are processed in chunks of at most ``CHUNK_VALUES`` values per image tensor, so memory stays
bounded for any number of images.

SSIM uses the standard settings of [1]: an 11×11 Gaussian window with σ = 1.5 (normalised to sum 1),
K1 = 0.01, K2 = 0.03, L = 1, so C1 = (K1·L)² and C2 = (K2·L)²; local variances and the covariance are
the Gaussian-weighted population moments (E[x²] - E[x]², no sample correction). The SSIM map is taken
over the 'valid' window positions only (no padding), as ``filter2(..., 'valid')`` in the authors'
MATLAB ``ssim_index``, computed per channel, and averaged over positions and channels.

For images at least 11 pixels on a side this equals scikit-image's ``structural_similarity``
(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1): it filters with
'reflect' padding but then crops the window's half-width from each border, which leaves exactly the
valid positions. scikit-image refuses smaller images with these settings.

NOTE: for an image whose shorter side is under 11 pixels, the window shrinks to the largest odd size
not above that side (7×7 for 8×8 images), keeping σ = 1.5 and renormalising the truncated Gaussian;
the window is always square.

NOTE: identical images have an infinite PSNR; ``psnr`` returns ``PSNR_CAP`` (100 dB) instead so that
a mean over images stays finite. Any non-identical pair scores below it for images of up to
10^10 / 255² ≈ 153,000 values (e.g. 3×128×128) at 256 levels.

[1] Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from error
    visibility to structural similarity", IEEE Transactions on Image Processing 13(4), 2004.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

PSNR_CAP = 100.0  # dB, returned for identical images
SSIM_WINDOW = 11  # side of the Gaussian window, pixels
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
CHUNK_VALUES = 2**22  # values per image tensor processed at once: 32 MiB in float64, SSIM peaks near 20x that


def _check(pred: torch.Tensor, target: torch.Tensor, levels: int) -> None:
    """Raise ValueError unless pred and target are equal (N, C, H, W) shapes with values in [0, levels)."""
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"pred and target must be equal (N, C, H, W) shapes, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    if not 2 <= levels <= 256:
        raise ValueError(f"levels must be in 2..256, got {levels}")
    for images in (pred, target):
        low, high = (int(images.min()), int(images.max())) if images.numel() else (0, 0)
        if low < 0 or high >= levels:  # as Python ints: a uint8 tensor compared with 256 would wrap
            raise ValueError(f"values must lie in [0, {levels}), got [{low}, {high}]")


def _pairs(pred: torch.Tensor, target: torch.Tensor, levels: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield chunks of (pred, target) as float64 in [0, 1]."""
    chunk = max(1, CHUNK_VALUES // max(1, math.prod(pred.shape[1:])))
    for start in range(0, len(pred), chunk):
        yield tuple(images[start:start + chunk].to(torch.float64) / (levels - 1) for images in (pred, target))


def _per_image(values: list[torch.Tensor]) -> np.ndarray:
    return torch.cat(values).cpu().numpy() if values else np.zeros(0)


def l1(pred: torch.Tensor, target: torch.Tensor, levels: int) -> np.ndarray:
    """Per-image mean absolute error, in [0, 1] units. Shape (N,)."""
    _check(pred, target, levels)
    return _per_image([(x - y).abs().mean((1, 2, 3)) for x, y in _pairs(pred, target, levels)])


def psnr(pred: torch.Tensor, target: torch.Tensor, levels: int) -> np.ndarray:
    """Per-image PSNR in dB with data range 1, ``PSNR_CAP`` for identical images. Shape (N,)."""
    _check(pred, target, levels)
    mse = _per_image([(x - y).square().mean((1, 2, 3)) for x, y in _pairs(pred, target, levels)])
    with np.errstate(divide="ignore"):  # mse 0: -10·log10(0) = inf, capped
        return np.minimum(-10 * np.log10(mse), PSNR_CAP)


def ssim_window(height: int, width: int) -> int:
    """Side of the SSIM window for an image of this size: 11, or the largest odd side that fits."""
    side = min(height, width, SSIM_WINDOW)
    return side if side % 2 else side - 1


def _window_rows(n: int, size: int, device: torch.device) -> torch.Tensor:
    """(n - size + 1, n) matrix whose row i is the 1-D Gaussian (σ = ``SSIM_SIGMA``, summing to 1) over
    pixels i..i + size - 1: left-multiplying a column by it is a valid-mode filter along that axis."""
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * SSIM_SIGMA**2))
    positions = n - size + 1
    taps = torch.arange(positions, device=device)[:, None] + torch.arange(size, device=device)
    rows = torch.zeros(positions, n, dtype=torch.float64, device=device)
    return rows.scatter_(1, taps, (g / g.sum()).expand(positions, size))


def _ssim_chunk(x: torch.Tensor, y: torch.Tensor, size: int) -> torch.Tensor:
    """Mean SSIM over the valid window positions and the channels of each image pair. Shape (n,)."""
    h, w = x.shape[-2:]
    rows, cols = _window_rows(h, size, x.device), _window_rows(w, size, x.device)
    # the 2-D Gaussian window is separable: filtering is rows @ image @ cols.T (faster than float64 conv2d)
    local = rows @ torch.stack([x, y, x * x, y * y, x * y], 2) @ cols.T
    mx, my, exx, eyy, exy = local.unbind(2)
    vx, vy, cxy = exx - mx * mx, eyy - my * my, exy - mx * my
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range L = 1
    index = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return index.mean((1, 2, 3))


def ssim(pred: torch.Tensor, target: torch.Tensor, levels: int) -> np.ndarray:
    """Per-image SSIM [1], mean over valid window positions and channels. Shape (N,)."""
    _check(pred, target, levels)
    size = ssim_window(*pred.shape[-2:])
    return _per_image([_ssim_chunk(x, y, size) for x, y in _pairs(pred, target, levels)])


def paired_metrics(pred: torch.Tensor, target: torch.Tensor, levels: int, prefix: str = "") -> dict[str, float]:
    """Means over the image pairs of ``l1``, ``psnr`` and ``ssim``, keyed ``{prefix}l1`` and so on."""
    return {f"{prefix}l1": float(l1(pred, target, levels).mean()),
            f"{prefix}psnr": float(psnr(pred, target, levels).mean()),
            f"{prefix}ssim": float(ssim(pred, target, levels).mean())}

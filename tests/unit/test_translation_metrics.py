"""Paired image-to-image translation metrics (genlib/evaluate/translation.py), against formulas written here."""

import math

import numpy as np
import pytest
import torch

from genlib.evaluate import translation
from genlib.evaluate.translation import l1, paired_metrics, psnr, ssim


def smooth_pair(n: int, c: int, h: int, w: int, levels: int, noise: float, seed: int = 0):
    """n structured target images (sinusoids) and copies with uniform noise of ±``noise`` of the range."""
    rng = np.random.default_rng(seed)
    i, j = np.mgrid[:h, :w]
    target = np.stack([np.stack([0.5 + 0.25 * np.sin(i / rng.uniform(1, 4) + rng.uniform(0, 6))
                                 + 0.25 * np.cos(j / rng.uniform(1, 4) + rng.uniform(0, 6))
                                 for _ in range(c)]) for _ in range(n)])
    pred = np.clip(target + rng.uniform(-noise, noise, target.shape), 0, 1)
    as_levels = lambda a: torch.from_numpy(np.rint(a * (levels - 1)).astype(np.uint8))  # noqa: E731
    return as_levels(pred), as_levels(target)


def random_pair(shape, levels: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randint(0, levels, shape, generator=g, dtype=torch.uint8) for _ in range(2))


def reference_ssim(x: np.ndarray, y: np.ndarray, size: int) -> float:
    """Wang et al. 2004 SSIM of two (C, H, W) images in [0, 1], window by window: Gaussian σ = 1.5 of
    ``size``×``size`` taps summing to 1, K1 = 0.01, K2 = 0.03, L = 1, mean over valid positions and channels."""
    centre = (size - 1) / 2
    i, j = np.mgrid[:size, :size]
    g = np.exp(-((i - centre) ** 2 + (j - centre) ** 2) / (2 * 1.5**2))
    g /= g.sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for ch in range(x.shape[0]):
        for r in range(x.shape[1] - size + 1):
            for s in range(x.shape[2] - size + 1):
                a, b = x[ch, r:r + size, s:s + size], y[ch, r:r + size, s:s + size]
                ma, mb = (g * a).sum(), (g * b).sum()
                va, vb = (g * (a - ma) ** 2).sum(), (g * (b - mb) ** 2).sum()
                cab = (g * (a - ma) * (b - mb)).sum()
                values.append((2 * ma * mb + c1) * (2 * cab + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def unit(images: torch.Tensor, levels: int) -> np.ndarray:
    return images.numpy().astype(np.float64) / (levels - 1)


@pytest.mark.parametrize("levels", [17, 256])
def test_l1_is_the_per_image_mean_absolute_difference_of_rescaled_values(levels):
    pred, target = random_pair((5, 3, 6, 7), levels)
    expected = np.abs(unit(pred, levels) - unit(target, levels)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(l1(pred, target, levels), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("levels", [17, 256])
def test_psnr_is_ten_log10_of_the_inverse_per_image_mse_of_rescaled_values(levels):
    pred, target = random_pair((5, 3, 6, 7), levels)
    mse = ((unit(pred, levels) - unit(target, levels)) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(psnr(pred, target, levels), 10 * np.log10(1 / mse), rtol=1e-12, atol=0)


def test_psnr_of_identical_images_is_the_100_db_cap():
    images, _ = random_pair((3, 2, 5, 5), 256)
    assert psnr(images, images.clone(), 256).tolist() == [100.0, 100.0, 100.0]


@pytest.mark.parametrize("shape, levels", [((1, 4, 5), 256), ((3, 2, 2), 17), ((1, 8, 8), 2)])
def test_psnr_of_one_full_range_pixel_difference_among_k_pixels_is_ten_log10_k(shape, levels):
    k = math.prod(shape)  # MSE = 1/k, so PSNR = 10·log10(k)
    target = torch.zeros((2, *shape), dtype=torch.uint8)
    pred = target.clone()
    pred[0, 0, 1, 1] = levels - 1
    pred[1, -1, -1, 0] = levels - 1
    np.testing.assert_allclose(psnr(pred, target, levels), [10 * math.log10(k)] * 2, rtol=1e-12)


def test_ssim_matches_the_window_by_window_reference_on_16x16_images():
    pred, target = smooth_pair(2, 1, 16, 16, 256, noise=0.2)
    expected = [reference_ssim(p, t, 11) for p, t in zip(unit(pred, 256), unit(target, 256))]
    np.testing.assert_allclose(ssim(pred, target, 256), expected, rtol=0, atol=1e-10)


def test_ssim_matches_the_reference_averaged_over_channels_of_non_square_images():
    pred, target = smooth_pair(2, 3, 12, 14, 256, noise=0.2, seed=1)
    expected = [reference_ssim(p, t, 11) for p, t in zip(unit(pred, 256), unit(target, 256))]
    np.testing.assert_allclose(ssim(pred, target, 256), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("h, w, window", [(8, 8, 7), (9, 12, 9), (10, 10, 9)])
def test_ssim_of_images_under_11_pixels_matches_the_reference_with_the_largest_odd_window_that_fits(h, w, window):
    pred, target = smooth_pair(2, 1, h, w, 256, noise=0.2, seed=2)
    expected = [reference_ssim(p, t, window) for p, t in zip(unit(pred, 256), unit(target, 256))]
    np.testing.assert_allclose(ssim(pred, target, 256), expected, rtol=0, atol=1e-10)


def test_ssim_of_an_image_with_itself_is_one():
    _, target = smooth_pair(3, 3, 16, 16, 256, noise=0.0)
    np.testing.assert_allclose(ssim(target, target.clone(), 256), 1.0, rtol=0, atol=1e-12)


def test_ssim_is_symmetric():
    pred, target = smooth_pair(3, 3, 16, 16, 256, noise=0.2)
    np.testing.assert_allclose(ssim(pred, target, 256), ssim(target, pred, 256), rtol=0, atol=1e-12)


def test_ssim_of_an_image_and_its_negative_is_below_that_of_a_slightly_noised_copy():
    noised, target = smooth_pair(3, 1, 16, 16, 256, noise=0.05)
    negative = 255 - target
    assert (ssim(negative, target, 256) < ssim(noised, target, 256)).all()


def test_metrics_do_not_depend_on_levels_for_images_of_the_same_fractions():
    # 0..15 at 16 levels is k/15; k*17 at 256 levels is 17k/255 = k/15: the same fractions
    pred, target = random_pair((4, 2, 16, 16), 16)
    coarse = paired_metrics(pred, target, 16)
    fine = paired_metrics(pred * 17, target * 17, 256)
    assert coarse.keys() == fine.keys()
    for name in coarse:
        assert coarse[name] == pytest.approx(fine[name], rel=1e-12, abs=1e-12)


def test_paired_metrics_are_the_prefixed_means_of_the_per_image_metrics():
    pred, target = smooth_pair(4, 1, 16, 16, 17, noise=0.1)
    metrics = paired_metrics(pred, target, 17, prefix="val/")
    assert metrics == {"val/l1": pytest.approx(l1(pred, target, 17).mean(), rel=1e-12),
                       "val/psnr": pytest.approx(psnr(pred, target, 17).mean(), rel=1e-12),
                       "val/ssim": pytest.approx(ssim(pred, target, 17).mean(), rel=1e-12)}


def test_per_image_metrics_do_not_depend_on_the_chunk_size(monkeypatch):
    pred, target = smooth_pair(7, 2, 16, 16, 256, noise=0.1)
    whole = [f(pred, target, 256) for f in (l1, psnr, ssim)]
    monkeypatch.setattr(translation, "CHUNK_VALUES", 3 * 2 * 16 * 16)  # 3 images a chunk: 3 + 3 + 1
    for f, expected in zip((l1, psnr, ssim), whole):
        np.testing.assert_allclose(f(pred, target, 256), expected, rtol=1e-12, atol=0)


def test_mismatched_shapes_out_of_range_values_and_bad_levels_are_rejected():
    pred, target = random_pair((2, 1, 8, 8), 16)
    with pytest.raises(ValueError, match="shapes"):
        l1(pred, target[:, :, :7], 16)
    with pytest.raises(ValueError, match="values"):
        psnr(pred, target, 8)
    with pytest.raises(ValueError, match="levels"):
        ssim(pred, target, 300)

"""Image styles for rarity benchmarks: transformations a person would call a style, not a class.

``data.style`` draws a share of every split's images in one of these styles (``prepare`` does it,
after the split), so that what is rare in a dataset version can be a stroke width or a slant
spread over every class instead of a class. Each style maps uint8 images (N, H, W, C) with
``levels`` grey values to images of the same shape and levels, deterministically.

* ``thick``: strokes one pixel wider to the right and downwards (a 2×2 grey-level dilation) —
  a bold pen;
* ``slant``: a horizontal shear of ``SLANT`` pixels per row about the centre row, tops to the
  right (italics), bilinear, rounded back to the levels.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

SLANT = 0.45  # horizontal shift per row, in pixels: about 24° from upright


def thick(images: np.ndarray, levels: int) -> np.ndarray:
    """Grey-level dilation with a 2×2 footprint: each pixel becomes the maximum of itself and its
    left, upper and upper-left neighbours."""
    out = images.copy()
    out[:, :, 1:] = np.maximum(out[:, :, 1:], images[:, :, :-1])
    wide = out.copy()
    out[:, 1:] = np.maximum(out[:, 1:], wide[:, :-1])
    return out


def slant(images: np.ndarray, levels: int, shear: float = SLANT) -> np.ndarray:
    """Shear rows horizontally: row r moves by shear · (centre − r) pixels (tops right), sampling
    the source with linear interpolation along the row and zero (background) outside it."""
    n, h, w, c = images.shape
    rows = np.arange(h, dtype=np.float64)[:, None]
    source = np.arange(w, dtype=np.float64)[None, :] + shear * (rows - (h - 1) / 2)  # (H, W) source column
    left = np.floor(source).astype(np.int64)
    frac = (source - left)[None, :, :, None]
    x = images.astype(np.float64)

    def column(cols: np.ndarray) -> np.ndarray:  # x[:, r, cols[r, j]], zero outside the image
        inside = (cols >= 0) & (cols < w)
        picked = np.take_along_axis(x, np.clip(cols, 0, w - 1)[None, :, :, None].repeat(n, 0).repeat(c, 3), axis=2)
        return picked * inside[None, :, :, None]

    out = (1 - frac) * column(left) + frac * column(left + 1)
    return np.clip(np.rint(out), 0, levels - 1).astype(images.dtype)


STYLES: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"thick": thick, "slant": slant}

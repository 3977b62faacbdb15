"""Pictures of images: sample grids as PIL images (PNG when saved)."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image


def image_grid(images: torch.Tensor | np.ndarray, levels: int, nrow: int | None = None,
               min_tile: int = 48, pad: int = 2) -> Image.Image:
    """Tile uint8 images ``(N, C, H, W)`` with values in ``[0, levels)`` into one picture.

    Values are stretched to 0..255 and small images are enlarged (nearest neighbour) so each tile
    is at least ``min_tile`` pixels wide: an 8×8 digit is unreadable at its own size.
    """
    arr = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    n, c, h, w = arr.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    scale = max(1, math.ceil(min_tile / w))
    pixels = (arr.astype(np.float32) * (255.0 / (levels - 1))).round().astype(np.uint8)
    pixels = pixels.repeat(scale, axis=2).repeat(scale, axis=3)  # (N, C, h*s, w*s)
    th, tw = h * scale, w * scale
    canvas = np.full((ncol * (th + pad) + pad, nrow * (tw + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (th + pad), pad + col * (tw + pad)
        canvas[y:y + th, x:x + tw] = pixels[i].transpose(1, 2, 0)
    return Image.fromarray(canvas[..., 0] if c == 1 else canvas)


def png_bytes(image: Image.Image) -> bytes:
    """A PIL image encoded as PNG, as it is logged."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def curves(series: dict[str, list[tuple[int, float]]], xlabel: str, title: str) -> Image.Image:
    """Line plot of named (step, value) series: one line each, in a shared axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)  # not pyplot: no global state, safe in workers
    ax = fig.add_subplot()
    for name, points in sorted(series.items()):
        steps, values = zip(*sorted(points)) if points else ((), ())
        ax.plot(steps, values, marker="o", label=name)
    ax.set(xlabel=xlabel, title=title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

"""Copy detection that shifted, mirrored, rescaled or re-brightened training images do not escape.

The plain copy test (``memorization.copy_rate``: nearest / second-nearest training distance below 1/3)
compares a sample with the training images pixel by pixel, so a training image moved by one pixel is,
to it, another image: its distance to the original is large. Here every query is compared in several
versions (``Invariances``): shifted by up to ``shift`` pixels in each direction, each shift also
mirrored left-right, and zoomed in and out by ``scales`` (a central crop or a padded shrink, rescaled
bilinearly). In pixel space every version and every training image is also standardised (mean
subtracted, divided by its norm), so a global brightness or contrast change does not count either.
A query's robust match is that of its best version: d1 is the smallest nearest-training distance over
the versions, d2 that same version's distance to its second-nearest training image, and the score is
d1/d2 (``robust_neighbours``). In feature space the versions are the same images, rounded to the
data's levels and passed through the extractor; features are compared as they are.

The threshold on d1/d2 is not a fixed 1/3: ``calibrate`` sets it on held-out real images (the test
split scored against the train split in the same way) so that at most ``false_alarm`` (1 %) of them
would be flagged, and the copy rate is reported with that threshold and the rate it gave there.

NOTE: the standardisation makes the pixel-space score blind to a copy that differs from its original
only by a global affine change of intensity, which is the point; it also makes uniform images (norm 0
after centring) equal to each other.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from genlib import paths
from genlib.evaluate.extractor import Extractor
from genlib.evaluate.knn import nearest_neighbours
from genlib.evaluate.workers import (
    DerivedRows,
    FileRows,
    Rows,
    Workers,
    as_rows,
    search_spans,
    spans,
    top_k,
)

FALSE_ALARM = 0.01  # the share of held-out real images the calibrated threshold may flag
# Versions one piece of the pixel-space search compares (the default 54: 5 pieces per query block and
# training shard, so that even one block and one shard keep several workers or cores busy).
PIECE_VERSIONS = 13


@dataclass(frozen=True)
class Invariances:
    """The transforms a copy may have gone through and still count as one."""
    shift: int = 2  # pixels, in each direction
    flip: bool = True  # left-right mirror
    scales: tuple[float, ...] = (0.9, 1.1)  # zoom out / in (crop or pad, rescaled)
    intensity: bool = True  # pixel space: standardise each image (brightness and contrast)

    @property
    def versions(self) -> int:
        """Versions of each query searched."""
        return (1 + self.flip) * ((2 * self.shift + 1) ** 2 + len(self.scales))

    def describe(self, space: str = "pixel") -> str:
        parts = [f"shifts up to ±{self.shift} px"] + ["left-right flip"] * self.flip
        parts += [f"zoom ×{', ×'.join(f'{s:g}' for s in self.scales)}"] if self.scales else []
        if self.intensity and space == "pixel":
            parts.append("brightness and contrast (per-image standardisation)")
        return ", ".join(parts) + f" ({self.versions} versions per query)"


class RobustMatch(NamedTuple):
    d1: np.ndarray  # (N,) smallest nearest-training distance over the versions
    d2: np.ndarray  # (N,) that version's second-nearest training distance
    index: np.ndarray  # (N,) the training image matched
    version: np.ndarray  # (N,) which version matched (an index into ``versions``' order)

    @property
    def ratio(self) -> np.ndarray:
        return self.d1 / np.maximum(self.d2, 1e-12)


class Calibration(NamedTuple):
    threshold: float  # flag d1/d2 below this
    false_alarm: float  # the share of held-out real images it flags (≤ the target)
    n: int  # held-out images it was set on


class Version(NamedTuple):
    """How a copy may have been made from its original: moved by (dy, dx) pixels (down, right) or
    zoomed by ``scale`` about the centre, then mirrored left-right if ``flip``."""
    flip: bool = False
    dy: int = 0
    dx: int = 0
    scale: float = 1.0


def version_list(inv: Invariances) -> list[Version]:
    """Every version searched, the unchanged image first."""
    moves = [(dy, dx, 1.0) for dy in range(-inv.shift, inv.shift + 1) for dx in range(-inv.shift, inv.shift + 1)]
    moves += [(0, 0, scale) for scale in inv.scales]
    out = [Version(flip, dy, dx, scale) for flip in ((False, True) if inv.flip else (False,)) for dy, dx, scale in moves]
    out.remove(Version())
    return [Version(), *out]


def windows(images: torch.Tensor, version: Version, side: str) -> torch.Tensor:
    """The part of each image (float (N, C, H, W)) a version compares, at a common size.

    A copy moved by (dy, dx) shares an (H-|dy|)×(W-|dx|) window with its original: the query's window
    starts at (dy, dx), the original's at (-dy, -dx) (each clipped at 0), and nothing that moved in
    from outside the frame is compared. A copy zoomed in by s > 1 shows the original's central
    H/s × W/s: the query shrunk to that size is compared with the original's central crop; a copy
    zoomed out (s < 1) holds the whole original, shrunk, in its centre: that centre is compared with
    the original shrunk alike. A mirrored copy is mirrored back first."""
    if side not in ("query", "reference"):
        raise ValueError(f"side must be 'query' or 'reference', got {side!r}")
    query = side == "query"
    x = images.float()
    if query and version.flip:
        x = x.flip(-1)
    h, w = x.shape[-2:]
    if version.scale == 1.0:
        dy, dx = (version.dy, version.dx) if query else (-version.dy, -version.dx)
        return x[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
    if version.scale > 1:  # the original enlarged and cropped alike is compared with the whole query
        return x if query else _zoom(x, version.scale)
    small = (max(1, round(h * version.scale)), max(1, round(w * version.scale)))
    if query:  # the query's centre, where the shrunk original sits
        top, left = (h - small[0]) // 2, (w - small[1]) // 2
        return x[..., top:top + small[0], left:left + small[1]]
    return F.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)


def versions(images: torch.Tensor, inv: Invariances) -> torch.Tensor:
    """Float (N, V, C, H, W): each image (uint8 or float (N, C, H, W)) made full-size in every version
    of ``version_list`` (moved back, mirrored back, rescaled back; borders repeat the edge), the
    unchanged image first: what an extractor sees in feature space."""
    x = images.float()
    out = []
    for v in version_list(inv):
        y = x.flip(-1) if v.flip else x
        out.append(_shift(y, -v.dy, -v.dx, max(abs(v.dy), abs(v.dx))) if v.scale == 1.0 else _zoom(y, 1 / v.scale))
    return torch.stack(out, 1)


def _shift(x: torch.Tensor, dy: int, dx: int, pad: int) -> torch.Tensor:
    """Content moved down by ``dy`` and right by ``dx``; the uncovered border repeats the edge."""
    if pad == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return padded[..., pad - dy:pad - dy + h, pad - dx:pad - dx + w]


def _zoom(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Rescaled by ``scale`` about the centre, back to the same size (cropped, or padded with the edge)."""
    h, w = x.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    y = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if scale >= 1:
        top, left = (size[0] - h) // 2, (size[1] - w) // 2
        return y[..., top:top + h, left:left + w]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return F.pad(y, (left, w - size[1] - left, top, h - size[0] - top), mode="replicate")


def standardise(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float32 (N, D) rows with their mean subtracted, divided by their norm (zero rows stay zero)."""
    x = torch.as_tensor(x).reshape(len(x), -1).float()
    x = x - x.mean(1, keepdim=True)
    return (x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)).numpy()


def _vectors(images: torch.Tensor, inv: Invariances) -> np.ndarray:
    return standardise(images) if inv.intensity else images.reshape(len(images), -1).float().numpy()


def _best(dist: np.ndarray, idx: np.ndarray) -> RobustMatch:
    """Per query, the version with the smallest nearest distance: dist, idx (N, V, 2), per version the two
    nearest training images (ties between versions: the first in ``version_list``)."""
    best = dist[:, :, 0].argmin(1)
    rows = np.arange(len(best))
    return RobustMatch(dist[rows, best, 0], dist[rows, best, 1], idx[rows, best, 0], best)


def _robust_piece(queries: Rows, q: tuple[int, int], refs: Rows, r: tuple[int, int], inv: Invariances,
                  v: tuple[int, int], device: str) -> tuple[np.ndarray, np.ndarray]:
    """Queries ``q`` against training shard ``r`` (uint8 images) in versions ``v`` of ``version_list``: in
    each, every query window's two nearest training windows (standardised when ``inv.intensity``):
    (b, versions, ≤ 2) distances and global rows."""
    query, train = (torch.from_numpy(np.array(rows.read(*span))) for rows, span in ((queries, q), (refs, r)))
    dist, rows = [], []
    for which in version_list(inv)[v[0]:v[1]]:
        near = nearest_neighbours(_vectors(windows(query, which, "query"), inv),
                                  _vectors(windows(train, which, "reference"), inv), k=min(2, len(train)),
                                  device=device)
        dist.append(near.distances)
        rows.append(near.indices + r[0])
    return np.stack(dist, 1), np.stack(rows, 1)


def robust_pixel_neighbours(queries: torch.Tensor | Rows, train: torch.Tensor | Rows, inv: Invariances,
                            device: str | torch.device = "cpu", workers: Workers | None = None) -> RobustMatch:
    """Each query's best match among the training images (both uint8 (N, C, H, W): tensors, or ``Rows``
    such as a dataset split's images) over the versions of ``version_list``, in pixel space: per version,
    the exact k-NN engine searches the query windows among the training windows (standardised when
    ``inv.intensity``). V times the plain search's work, in pieces of ``PIECE_VERSIONS`` versions, one
    block of queries and one shard of training images, by ``workers`` (default: this process, on
    ``device``); each version's two nearest merged exactly across the shards."""
    workers = workers or Workers(device=torch.device(device))
    queries, train = as_rows(queries), as_rows(train)
    if len(train) < 2:
        raise ValueError(f"the robust copy search needs at least 2 training images, got {len(train)}")
    n, count = len(queries), inv.versions
    dist = np.full((n, count, 2), np.inf, np.float32)
    rows = np.full((n, count, 2), np.iinfo(np.int64).max, np.int64)
    lock = threading.Lock()

    def merge(key, found):
        (q0, q1), (v0, v1) = key
        with lock:
            dist[q0:q1, v0:v1], rows[q0:q1, v0:v1] = top_k([(dist[q0:q1, v0:v1], rows[q0:q1, v0:v1]), found], 2)

    q_spans, r_spans = search_spans(n, len(train))
    items = [((q, v), (queries, q, train, r, inv, v)) for q in q_spans for v in spans(count, PIECE_VERSIONS)
             for r in r_spans]
    workers.run_pieces(_robust_piece, items, f"robust copies ({count} versions)", merge,
                       n * len(train) * int(np.prod(train.shape[1:])) * count)
    return _best(dist, rows)


@dataclass(frozen=True, eq=False)
class VersionRows(DerivedRows):
    """Every version of each ``source`` image, uint8 (N·V, C, H, W), rounded to the data's ``levels``: row i
    is image i // V in version i % V of ``version_list``. Made as rows are read."""
    inv: Invariances = Invariances()
    levels: int = 256

    @property
    def shape(self) -> tuple[int, ...]:
        n, *image = self.source.shape
        return (n * self.inv.versions, *image)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        start, stop, _ = slice(start, stop).indices(len(self))
        v = self.inv.versions
        first, last = start // v, -(-stop // v)
        made = versions(torch.from_numpy(np.array(self.source.read(first, last))), self.inv).flatten(0, 1)
        made = made.round().clamp(0, self.levels - 1).to(torch.uint8).numpy()
        return made[start - first * v:stop - first * v]


def robust_feature_neighbours(queries: torch.Tensor | Rows, train_features: np.ndarray | Rows, inv: Invariances,
                              extractor: Extractor, levels: int, device: str | torch.device = "cpu",
                              workers: Workers | None = None) -> RobustMatch:
    """The same in an extractor's feature space: the extractor sees each query in every version of
    ``versions``, rounded to the data's ``levels`` (``VersionRows``); those features go to a scratch file
    as they are extracted, and the exact search reads them from there, by ``workers`` (default: this
    process, on ``device``): memory does not grow with queries × versions."""
    workers = workers or Workers(device=torch.device(device))
    queries = as_rows(queries)
    n, count = len(queries), inv.versions
    paths.scratch_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=paths.scratch_dir(), prefix="robust-features-") as scratch:
        out = Path(scratch) / "versions.npy"
        workers.features(extractor, VersionRows(queries, inv, levels), out)
        near = workers.neighbours(FileRows(str(out)), train_features, 2,
                                  desc=f"robust copies, {extractor.name} ({count} versions)")
    return _best(near.distances.reshape(n, count, 2), near.indices.reshape(n, count, 2))


def calibrate(held_out_ratios: np.ndarray, false_alarm: float = FALSE_ALARM) -> Calibration:
    """The largest threshold that flags at most ``false_alarm`` of the held-out real images."""
    ratios = np.sort(np.asarray(held_out_ratios, np.float64))
    if len(ratios) == 0:
        raise ValueError("calibrating a copy threshold needs held-out images")
    threshold = float(ratios[int(np.floor(false_alarm * len(ratios)))])  # strictly below: ≤ floor(αn) images
    return Calibration(threshold, float((ratios < threshold).mean()), len(ratios))

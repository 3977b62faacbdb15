"""Weighted sampling of a training split, one process or many (DDP).

``WeightedDistributedSampler`` is to ``WeightedRandomSampler`` what ``DistributedSampler`` is to
a shuffle: every rank draws the *same* weighted sample of indices for an epoch (the generator is
seeded with ``seed + epoch``, never with the rank), pads it to a multiple of the number of
replicas, and keeps the positions ``rank, rank + R, rank + 2R, ...``. The ranks' shares are
disjoint positions of one draw and together cover it, so R workers see what one worker drawing
``num_samples`` would see. With ``num_replicas=1`` it is the single-process weighted sampler.

Used like ``DistributedSampler``: call ``set_epoch(epoch)`` before each epoch, or every epoch
repeats the same draw.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

# torch.multinomial's limit on the number of categories.
MAX_CATEGORIES = 2**24


class WeightedDistributedSampler(Sampler[int]):
    """Indices drawn with probability ∝ ``weights``, split across ``num_replicas`` ranks.

    ``num_samples`` (default ``len(weights)``) is the size of one epoch's draw over all ranks;
    each rank yields ``ceil(num_samples / num_replicas)`` indices. Without ``replacement`` an
    index appears at most once per draw (before padding), so ``num_samples`` may not exceed the
    number of non-zero weights. ``dataset_size``, if given, is checked against ``len(weights)``.
    """

    def __init__(self, weights: Sequence[float] | np.ndarray | torch.Tensor, num_replicas: int = 1, rank: int = 0,
                 num_samples: int | None = None, seed: int = 0, replacement: bool = True,
                 dataset_size: int | None = None):
        self.weights = _check_weights(weights, dataset_size)
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas ≥ 1 and 0 ≤ rank < num_replicas, got rank {rank} of {num_replicas}")
        self.num_samples = len(self.weights) if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be ≥ 1, got {self.num_samples}")
        nonzero = int((self.weights > 0).sum())
        if not replacement and self.num_samples > nonzero:
            raise ValueError(f"cannot draw {self.num_samples} distinct indices without replacement from "
                             f"{nonzero} non-zero weights; use replacement=True or num_samples ≤ {nonzero}")
        self.num_replicas, self.rank = num_replicas, rank
        self.seed, self.replacement = seed, replacement
        self.epoch = 0
        self.per_rank = math.ceil(self.num_samples / num_replicas)

    def set_weights(self, weights: Sequence[float] | np.ndarray | torch.Tensor) -> None:
        """Draw from new weights (one per sample, as many as before) from the next ``draw`` on; every
        rank must set the same weights before the same epoch (adaptive reweighting)."""
        w = _check_weights(weights, len(self.weights))
        if not self.replacement and self.num_samples > int((w > 0).sum()):
            raise ValueError(f"cannot draw {self.num_samples} distinct indices from {int((w > 0).sum())} non-zero "
                             f"weights")
        self.weights = w

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch's draw; every rank must set the same epoch."""
        self.epoch = epoch

    def draw(self) -> torch.Tensor:
        """This epoch's whole draw, padded to ``per_rank · num_replicas`` (identical on every rank)."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.num_samples, self.replacement, generator=generator)
        pad = self.per_rank * self.num_replicas - self.num_samples
        # Repeat the start of the draw (as DistributedSampler does), so the padding follows the weights too.
        return torch.cat([drawn, drawn.repeat(math.ceil(pad / len(drawn)))[:pad]]) if pad else drawn

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw()[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.per_rank


def _check_weights(weights, dataset_size: int | None) -> torch.Tensor:
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))  # float64: tiny weights keep their mass
    if w.ndim != 1 or len(w) == 0:
        raise ValueError(f"weights must be a non-empty 1-D sequence, one per sample; got shape {tuple(w.shape)}")
    if dataset_size is not None and len(w) != dataset_size:
        raise ValueError(f"{len(w)} weights for a dataset of {dataset_size} samples; the weights must come "
                         f"from the same dataset version and split (one per sample, in order)")
    if len(w) > MAX_CATEGORIES:
        raise ValueError(f"{len(w)} weights exceed torch.multinomial's limit of {MAX_CATEGORIES} samples")
    bad = ~torch.isfinite(w) | (w < 0)
    if bad.any():
        first = int(bad.nonzero()[0])
        raise ValueError(f"weights must be finite and ≥ 0; {int(bad.sum())} are not (first at index {first}: "
                         f"{float(w[first])})")
    if not (w > 0).any():
        raise ValueError("all weights are zero; at least one sample needs a positive weight")
    return w

"""Torch datasets over a prepared dataset version, reading arrays memory-mapped.

An ``images`` version yields ``(image, label, index)``; a two-domain one ``(b, label of b, index, a)``:
domain B's image first (what a model generates), then domain A's (what it translates from) —
``Batch.from_loader`` reads both shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from genlib.data.kinds import DOMAINS, IMAGES, PAIRED, check_direction
from genlib.data.prepare import SPLITS, read_manifest


class DatasetVersion:
    """A prepared dataset directory: its manifest and memory-mapped split arrays."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)

    @property
    def kind(self) -> str:
        """``images``, ``paired`` or ``unpaired`` (``kinds.py``)."""
        return self.manifest.get("kind", IMAGES)

    def domain(self, name: str) -> DatasetVersion:
        """Domain ``name`` ("a" or "b") of a two-domain version: an ``images`` version of its own."""
        if self.kind == IMAGES:
            raise ValueError(f"{self.path} is an images dataset: it has no domains")
        if name not in DOMAINS:
            raise ValueError(f"unknown domain {name!r}; known: {list(DOMAINS)}")
        return DatasetVersion(self.path / name)

    @property
    def source_spec(self) -> tuple[tuple[int, int, int], int] | None:
        """Domain A's ((C, H, W), levels) for a two-domain version (domain B's are ``shape`` and
        ``levels``), None for an images one."""
        if self.kind == IMAGES:
            return None
        h, w, c = self.manifest["domains"]["a"]["shape"]
        return (c, h, w), self.manifest["domains"]["a"]["levels"]

    def truth(self, direction: str) -> np.ndarray | None:
        """The true translations of the source domain's test images, (N, H, W, C) uint8, where the source
        knew them (a paired version: the other domain itself); None otherwise. For evaluation only."""
        source, target = check_direction(direction)
        if self.kind == PAIRED:
            return self.domain(target).images("test")
        path = self.path / f"truth_{direction}_test.npy"
        return np.load(path, mmap_mode="r") if self.kind != IMAGES and path.exists() else None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W): the layout models see (domain B's for a two-domain version)."""
        h, w, c = self.manifest["shape"]
        return c, h, w

    @property
    def levels(self) -> int:
        return self.manifest["levels"]

    @property
    def num_classes(self) -> int | None:
        return self.manifest["num_classes"]

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    def images(self, split: str) -> np.ndarray:
        """(N, H, W, C) uint8, memory-mapped: nothing is read until it is indexed."""
        _check_split(split)
        self._one_domain()
        return np.load(self.path / f"{split}_images.npy", mmap_mode="r")

    def labels(self, split: str) -> np.ndarray | None:
        _check_split(split)
        self._one_domain()
        path = self.path / f"{split}_labels.npy"
        return np.load(path) if path.exists() else None

    def rare(self, split: str) -> np.ndarray | None:
        """(N,) bool: which images are in the rare subgroup the config induced (``data.rare_class``,
        ``data.style``); None for a version without one. For reports and benchmarks only."""
        _check_split(split)
        path = self.path / f"{split}_rare.npy"
        if path.exists():
            return np.load(path)
        rare_class = self.manifest.get("data_config", {}).get("rare_class")
        labels = self.labels(split)
        return None if rare_class is None or labels is None else labels == rare_class

    def dataset(self, split: str) -> Dataset:
        return ImageDataset(self.path, split) if self.kind == IMAGES else TwoDomainDataset(self.path, split)

    def _one_domain(self) -> None:
        if self.kind != IMAGES:
            raise ValueError(f"{self.path} holds {self.kind} data: its images are in its domains "
                             f"{self.path / 'a'} and {self.path / 'b'} (DatasetVersion.domain)")


class ImageDataset(Dataset):
    """Yields ``(image uint8 (C, H, W), label or -1, index)`` from one split.

    The arrays are opened lazily in each process, so the dataset pickles cheaply to Ray workers
    and DataLoader workers and never loads the split into memory at once.
    """

    def __init__(self, path: str | Path, split: str):
        _check_split(split)
        self.path = Path(path)
        self.split = split
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._length = read_manifest(self.path)["splits"][split]

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int):
        if self._images is None:
            version = DatasetVersion(self.path)
            self._images = version.images(self.split)
            self._labels = version.labels(self.split)
        image = torch.from_numpy(np.array(self._images[index])).permute(2, 0, 1)  # (C, H, W)
        label = -1 if self._labels is None else int(self._labels[index])
        return image, label, index

    def __getstate__(self):
        return {**self.__dict__, "_images": None, "_labels": None}


class TwoDomainDataset(Dataset):
    """Yields ``(b uint8 (C, H, W), b's label or -1, index, a uint8 (C, H, W))`` from one split of a
    two-domain version: item ``i`` pairs B's ``i mod n_B``-th image with A's ``i mod n_A``-th, over
    ``max(n_A, n_B)`` items (a paired version: the aligned pair ``i``).

    NOTE: an unpaired item's A and B images are whichever share its index; the families that train
    on unpaired data never use the pairing (their losses add up per image), so a fixed one suffices.
    """

    def __init__(self, path: str | Path, split: str):
        _check_split(split)
        self.sides = {domain: ImageDataset(Path(path) / domain, split) for domain in DOMAINS}

    def __len__(self) -> int:
        return max(len(side) for side in self.sides.values())

    def __getitem__(self, index: int):
        b, label, _ = self.sides["b"][index % len(self.sides["b"])]
        a, _, _ = self.sides["a"][index % len(self.sides["a"])]
        return b, label, index, a


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {list(SPLITS)}")

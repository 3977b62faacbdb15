"""Torch datasets over a prepared dataset version, reading arrays memory-mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from genlib.data.prepare import SPLITS, read_manifest


class DatasetVersion:
    """A prepared dataset directory: its manifest and memory-mapped split arrays."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W): the layout models see."""
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
        return np.load(self.path / f"{split}_images.npy", mmap_mode="r")

    def labels(self, split: str) -> np.ndarray | None:
        _check_split(split)
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

    def dataset(self, split: str) -> ImageDataset:
        return ImageDataset(self.path, split)


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


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {list(SPLITS)}")

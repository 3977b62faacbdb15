"""What an evaluation compares samples with, loaded once per (dataset version, extractor).

An evaluation needs the train split's pixels and features (memorization), the test split's
features and their Gaussian statistics (sample quality, the data-copying test), and each training
image's nearest other training image (authenticity). ``References`` computes each piece on first
use — or reads it from the per-dataset cache (``cache.py``), where it is kept by everything that
changes it — and holds it for the rest of the evaluation, so nothing is read or computed twice.
"""

from __future__ import annotations

import hashlib
from functools import cached_property

import numpy as np
import torch

from genlib.data.dataset import DatasetVersion
from genlib.evaluate.cache import cached_arrays
from genlib.evaluate.copies import (
    Calibration,
    Invariances,
    calibrate,
    robust_feature_neighbours,
    robust_pixel_neighbours,
)
from genlib.evaluate.extractor import Extractor, cached_features
from genlib.evaluate.features import load_extractor
from genlib.evaluate.knn import Neighbours
from genlib.evaluate.workers import FileRows, SplitRows, Workers

CALIBRATION_IMAGES = 2000  # held-out images the robust copy thresholds are set on (1 %: 20 of them)


class References:
    """The reference side of every metric, for one dataset version in one extractor's feature space."""

    def __init__(self, version: DatasetVersion, extractor: Extractor, device: torch.device | str = "cpu",
                 workers: Workers | None = None):
        self.version = version
        self.extractor = extractor.to(device)
        self.device = torch.device(device)  # where features are extracted and neighbours searched here
        self.workers = workers or Workers(device=self.device)  # who samples, extracts and searches

    @classmethod
    def load(cls, version: DatasetVersion, extractor: str, device: torch.device | str = "cpu",
             weights=None, workers: Workers | None = None) -> References:
        """References in the registered extractor ``extractor``'s space (its network loaded once;
        ``weights``: a domain network exported by another evaluation, see ``features.load_extractor``)."""
        return cls(version, load_extractor(extractor, version, weights), device, workers)

    def images(self, split: str) -> SplitRows:
        """A split's images, uint8 (N, C, H, W), read where they are needed."""
        return SplitRows(str(self.version.path), split)

    def pixels(self, split: str) -> SplitRows:
        """A split's pixels, float32 (N, C·H·W): the pixel space of the memorization checks."""
        return SplitRows(str(self.version.path), split, pixels=True)

    def features(self, split: str) -> FileRows:
        """A split's features in the cache file (extracted first if they are not there yet)."""
        if split not in ("train", "test", "val"):
            raise ValueError(f"split must be train, test or val, got {split!r}")
        return FileRows(getattr(self, f"{split}_features").filename)

    @cached_property
    def train_features(self) -> np.ndarray:
        """float32 (N, D), memory-mapped from the cache (extracted with the test split's: every evaluation
        wants both)."""
        return cached_features(self.extractor, self.version, "train", self.workers, also=("test",))

    @cached_property
    def test_features(self) -> np.ndarray:
        return cached_features(self.extractor, self.version, "test", self.workers, also=("train",))

    @cached_property
    def val_features(self) -> np.ndarray:
        return cached_features(self.extractor, self.version, "val", self.workers)

    @cached_property
    def test_stats(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Mean, covariance and n of the test split's features (merged from per-shard moments), cached by
        (hash, split, extractor, n)."""
        feats = self.features("test")
        key = f"{self.version.content_hash[:16]}-test-{self.extractor.preprocessing}-{len(feats)}-moments"
        stats = cached_arrays(key, lambda: dict(zip(("mu", "sigma"), self.workers.moments(feats))))
        return stats["mu"], stats["sigma"], len(feats)

    @cached_property
    def test_radii(self) -> np.ndarray:
        """(N, 5): each test image's distances to its 5 nearest other test images in feature space, the
        k-NN balls of precision/recall (k = 3) and density/coverage (k = 5)."""
        feats = self.features("test")
        key = f"{self.version.content_hash[:16]}-test-{self.extractor.preprocessing}-{len(feats)}-radii"
        return cached_arrays(key, lambda: {"radii": self.workers.neighbours(
            feats, feats, 5, exclude_self=True, desc="test k-NN radii").distances})["radii"]

    @cached_property
    def test_images(self) -> torch.Tensor:
        """uint8 (N, C, H, W): the held-out images the copy thresholds are calibrated on, at most
        ``CALIBRATION_IMAGES`` of the test split (a seeded draw): enough for a 1 % quantile, and the
        robust search over them costs the same as over as many samples."""
        images = np.array(self.version.images("test"))
        if len(images) > CALIBRATION_IMAGES:
            images = images[np.sort(np.random.default_rng(0).choice(len(images), CALIBRATION_IMAGES, replace=False))]
        return torch.from_numpy(images).permute(0, 3, 1, 2)

    def robust_calibration(self, space: str, inv: Invariances) -> Calibration:
        """The copy threshold in ``space`` ("pixel" or "features") that flags at most 1 % of the
        held-out test images against the train split; their ratios cached per dataset and invariances."""
        what = repr(inv) + (self.extractor.preprocessing if space == "features" else "")
        key = (f"{self.version.content_hash[:16]}-test-robust-{space}-{len(self.test_images)}-"
               f"{hashlib.sha256(what.encode()).hexdigest()[:16]}")

        def ratios() -> dict[str, np.ndarray]:
            if space == "pixel":
                found = robust_pixel_neighbours(self.test_images, self.images("train"), inv, workers=self.workers)
            else:
                found = robust_feature_neighbours(self.test_images, self.features("train"), inv, self.extractor,
                                                  self.version.levels, workers=self.workers)
            return {"ratio": found.ratio}

        return calibrate(cached_arrays(key, ratios)["ratio"])

    @cached_property
    def train_self_neighbours(self) -> Neighbours:
        """Each training image's nearest other training image in pixel space, cached per dataset."""
        px = self.pixels("train")
        key = f"{self.version.content_hash[:16]}-train-{len(px)}-pixel-self-nn"
        found = cached_arrays(key, lambda: self.workers.neighbours(px, px, 1, exclude_self=True,
                                                                   desc="train self-neighbours")._asdict())
        return Neighbours(found["distances"], found["indices"])


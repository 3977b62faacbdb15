"""Feature extractors for sample-quality and memorization metrics, looked up by name.

An extractor maps uint8 images (N, C, H, W) in a dataset's levels to features (N, D). Each one
names its preprocessing, which is part of every cache key and logged name.

* ``domain``: a small CNN trained on the dataset version's own train split — a classifier when
  the data is labelled (features: its penultimate layer), an autoencoder otherwise (features:
  its code). It is what makes FID meaningful on 8×8 digits, offline. Trained once per dataset
  hash and cached under ``GENLIB_HOME/features``; its held-out accuracy is reported.
* ``inception-v3-fid`` (``genlib/evaluate/inception.py``): the FID papers' Inception-v3 2048-d pool
  features with pytorch-fid's published weights (SHA-256 verified) and preprocessing — grey to
  3 channels, bilinear resize to 299×299, [-1, 1]; its numbers are comparable with pytorch-fid's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from genlib import paths
from genlib.data.dataset import DatasetVersion
from genlib.evaluate.cache import cached_arrays
from genlib.models.base import to_unit
from genlib.registry import Registry


@dataclass
class Extractor:
    name: str  # registry name
    preprocessing: str  # everything that changes the numbers, for cache keys and logged names
    dims: int
    encode: Callable[[torch.Tensor], torch.Tensor]  # uint8 (N, C, H, W) → float (N, D)
    info: dict  # e.g. the domain network's held-out accuracy

    @torch.no_grad()
    def __call__(self, images: torch.Tensor | np.ndarray, batch_size: int = 512) -> np.ndarray:
        images = torch.as_tensor(images)
        starts = range(0, len(images), batch_size)
        return np.concatenate([self.encode(images[i:i + batch_size]).numpy()
                               for i in tqdm(starts, desc=f"{self.name} features", leave=False,
                                             disable=len(starts) < 4)])


EXTRACTORS: Registry[Callable[[DatasetVersion], Extractor]] = Registry("feature extractor")


class DomainNet(nn.Module):
    """A small CNN: conv features → a ``dims``-d code → class logits (or, unlabelled, a decoder)."""

    def __init__(self, shape: tuple[int, int, int], levels: int, num_classes: int | None, dims: int = 128):
        super().__init__()
        c, h, w = shape
        self.levels = levels
        self.body = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, dims), nn.ReLU())
        self.head = nn.Linear(dims, num_classes) if num_classes else nn.Linear(dims, c * h * w)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(to_unit(x, self.levels))


@EXTRACTORS.register("domain")
def domain(version: DatasetVersion, epochs: int = 30, seed: int = 0) -> Extractor:
    """The dataset's own feature network, trained once per dataset hash and cached."""
    cache = paths.home() / "features" / f"domain-{version.content_hash[:16]}"
    net = DomainNet(version.shape, version.levels, version.num_classes)
    if (cache / "meta.json").is_file():
        net.load_state_dict(load_file(cache / "weights.safetensors"))
        info = json.loads((cache / "meta.json").read_text())
    else:
        info = _train_domain(net, version, epochs, seed)
        _save_atomically(cache, net, info)
    net.eval()
    kind = "classifier" if version.num_classes else "autoencoder"
    return Extractor("domain", f"domain-{kind}-{version.content_hash[:12]}", 128, net.features, info)


def _save_atomically(cache: Path, net: nn.Module, info: dict) -> None:
    """Write the network to a temporary directory renamed into place: pipelines running at once may
    train the same network, and none of them may read a half-written one."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}."))
    try:
        save_file(net.state_dict(), tmp / "weights.safetensors")
        (tmp / "meta.json").write_text(json.dumps(info))
        try:
            os.rename(tmp, cache)
        except OSError:  # another process got there first; its network is as good
            if not (cache / "meta.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _train_domain(net: DomainNet, version: DatasetVersion, epochs: int, seed: int) -> dict:
    torch.manual_seed(seed)
    x = torch.from_numpy(np.array(version.images("train"))).permute(0, 3, 1, 2)
    y = version.labels("train")
    labelled = version.num_classes is not None
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(128):
            out = net.head(net.features(x[idx]))
            loss = (F.cross_entropy(out, torch.from_numpy(y[idx.numpy()])) if labelled
                    else F.mse_loss(out, to_unit(x[idx], version.levels).flatten(1)))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {"test_accuracy": _accuracy(net, version)} if labelled else {"test_mse": _recon_mse(net, version)}


@torch.no_grad()
def _accuracy(net: DomainNet, version: DatasetVersion) -> float:
    x = torch.from_numpy(np.array(version.images("test"))).permute(0, 3, 1, 2)
    pred = net.head(net.features(x)).argmax(1).numpy()
    return float((pred == version.labels("test")).mean())


@torch.no_grad()
def _recon_mse(net: DomainNet, version: DatasetVersion) -> float:
    x = torch.from_numpy(np.array(version.images("test"))).permute(0, 3, 1, 2)
    return float(F.mse_loss(net.head(net.features(x)), to_unit(x, version.levels).flatten(1)))


def cached_features(extractor: Extractor, version: DatasetVersion, split: str) -> np.ndarray:
    """Features of a dataset split, cached by (dataset hash, split, extractor preprocessing, n)."""
    images = np.array(version.images(split))
    key = f"{version.content_hash[:16]}-{split}-{extractor.preprocessing}-{len(images)}"

    def compute() -> dict[str, np.ndarray]:
        return {"features": extractor(torch.from_numpy(images).permute(0, 3, 1, 2))}

    return cached_arrays(key, compute)["features"]

from genlib.evaluate import inception as _inception  # noqa: F401  registers "inception-v3-fid"

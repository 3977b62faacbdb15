"""The feature-extractor contract: uint8 images (N, C, H, W) in a dataset's levels → features (N, D).

Extractors register themselves in ``EXTRACTORS`` by name (``domain.py``, ``inception.py``);
``features.py`` imports every one of them. Each names its preprocessing, which is part of every
cache key and logged name, so features from different networks are never mixed.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from genlib import paths
from genlib.data.dataset import DatasetVersion
from genlib.io import atomic_file
from genlib.registry import Registry


def eval_device(name: str) -> torch.device:
    """The device ``eval.device`` names: "auto" is the first CUDA GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("eval.device=cuda is not allowed on this machine: torch sees no CUDA GPU "
                         f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); expected auto or cpu")
    return torch.device(name)


@dataclass
class Extractor:
    name: str  # registry name
    preprocessing: str  # everything that changes the numbers, for cache keys and logged names
    dims: int
    encode: Callable[[torch.Tensor], torch.Tensor]  # uint8 (N, C, H, W) → float (N, D), on ``module``'s device
    info: dict  # e.g. the domain network's held-out accuracy
    module: torch.nn.Module | None = field(default=None, repr=False)  # the network ``encode`` runs, if any
    # features (N, D) → class logits (N, K), when the network is a classifier: the IS analogue's p(y|x)
    classify: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    @torch.no_grad()
    def class_logits(self, features: np.ndarray, batch_size: int = 4096) -> np.ndarray | None:
        """Class logits of features this extractor made, or None when it has no classifier."""
        if self.classify is None:
            return None
        return np.concatenate([self.classify(torch.as_tensor(np.array(features[i:i + batch_size], np.float32))
                                             .to(self.device)).float().cpu().numpy()
                               for i in range(0, len(features), batch_size)])

    @property
    def device(self) -> torch.device:
        tensor = None if self.module is None else next(self.module.parameters(), None)
        return torch.device("cpu") if tensor is None else tensor.device

    def to(self, device: torch.device | str) -> Extractor:
        """Run the network on ``device`` from now on (features always come back as CPU arrays)."""
        if self.module is not None:
            self.module.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: torch.Tensor | np.ndarray, batch_size: int = 512) -> np.ndarray:
        images, device = torch.as_tensor(images), self.device
        starts = range(0, len(images), batch_size)
        return np.concatenate([self.encode(images[i:i + batch_size].to(device, non_blocking=True)).float().cpu().numpy()
                               for i in tqdm(starts, desc=f"{self.name} features", leave=False,
                                             disable=len(starts) < 4)])


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a network's weights: every tensor of its state dict by name, dtype, shape and bytes.
    Two feature spaces with the same digest are the same function of the images."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


EXTRACTORS: Registry[Callable[[DatasetVersion], Extractor]] = Registry("feature extractor")


def cached_features(extractor: Extractor, version: DatasetVersion, split: str, workers=None,
                    also: tuple[str, ...] = ()) -> np.ndarray:
    """Features (N, D) of a dataset split, memory-mapped from ``features/<key>.npy``, the key naming the
    dataset hash, split, extractor preprocessing, n and the device kind; extracted by ``workers``
    (``workers.Workers``; default: this process, on the extractor's device) and written as they arrive.
    The splits in ``also`` are extracted in the same pass when they are not cached yet (on Ray: one
    actor pool for all)."""
    from genlib.evaluate.workers import SplitRows, Workers

    workers = workers or Workers(device=extractor.device)
    names = list(dict.fromkeys((split, *also)))
    rows = {name: SplitRows(str(version.path), name) for name in names}

    def path_of(name: str) -> Path:
        key = f"{version.content_hash[:16]}-{name}-{extractor.preprocessing}-{len(rows[name])}"
        if workers.feature_device != "cpu":  # GPU features differ in rounding (TF32): never mixed with CPU ones
            key += f"-{workers.feature_device}"
        return paths.home() / "features" / f"{key}.npy"

    missing = [name for name in names if not path_of(name).is_file()]
    if missing:
        with contextlib.ExitStack() as stack:
            temps = [stack.enter_context(atomic_file(path_of(name))) for name in missing]
            workers.features_of(extractor, [(rows[name], Path(tmp)) for name, tmp in zip(missing, temps)])
    return np.load(path_of(split), mmap_mode="r")

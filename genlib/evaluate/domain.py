"""The ``domain`` feature extractor: a small CNN trained on the dataset version's own train split.

A classifier when the data is labelled (features: its penultimate layer), an autoencoder
otherwise (features: its code). It is what makes FID meaningful on 8×8 digits, offline. It is
trained once per dataset hash and cached under ``GENLIB_HOME/features``; its held-out accuracy
(or reconstruction error) is reported with every number computed on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from genlib import paths
from genlib.data.dataset import DatasetVersion
from genlib.evaluate.extractor import EXTRACTORS, Extractor, weights_digest
from genlib.io import atomic_dir
from genlib.models.base import to_unit


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
    # Seeded before the network is built and trained, on a forked generator: the same dataset version
    # gives the same weights (the SHA-256 below) whatever ran before in this process.
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):  # manual_seed reseeds CUDA too
        torch.manual_seed(seed)
        net = DomainNet(version.shape, version.levels, version.num_classes)
        if (cache / "meta.json").is_file():
            net.load_state_dict(load_file(cache / "weights.safetensors"))
            info = json.loads((cache / "meta.json").read_text())
        else:
            info = _train_domain(net, version, epochs, seed)
            _save_atomically(cache, net, info)
    info = {**info, "weights_sha256": weights_digest(net)}
    net.eval()
    return _extractor(net, version, version.content_hash[:12], info)


def _extractor(net: DomainNet, version: DatasetVersion, tag: str, info: dict) -> Extractor:
    """The Extractor of a domain network: its features, and its class head for the IS analogue."""
    kind = "classifier" if version.num_classes else "autoencoder"
    return Extractor("domain", f"domain-{kind}-{tag}", 128, net.features, info, net,
                     classify=net.head if version.num_classes else None)


def _save_atomically(cache: Path, net: nn.Module, info: dict) -> None:
    # Pipelines running at once may train the same network; none may read a half-written one, and
    # a network another process saved first is as good as this one.
    with atomic_dir(cache) as tmp:
        save_file(net.state_dict(), tmp / "weights.safetensors")
        (tmp / "meta.json").write_text(json.dumps(info))


def _train_domain(net: DomainNet, version: DatasetVersion, epochs: int, seed: int) -> dict:
    order = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.array(version.images("train"))).permute(0, 3, 1, 2)
    y = version.labels("train")
    labelled = version.num_classes is not None
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=order).split(128):
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


WEIGHTS, META = "weights.safetensors", "meta.json"  # an exported network: what evaluations log under extractor/


def import_domain(version: DatasetVersion, source: Path) -> Extractor:
    """The domain network exported by another evaluation (a folder holding ``weights.safetensors`` and
    ``meta.json``, or the weights file itself), for ``version``'s images: two stores, one feature space."""
    source = Path(source)
    weights = source / WEIGHTS if source.is_dir() else source
    if not weights.is_file():
        raise FileNotFoundError(f"eval.extractor_from: no {WEIGHTS} at {source}")
    net = DomainNet(version.shape, version.levels, version.num_classes)
    state = load_file(weights)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        raise ValueError(f"eval.extractor_from: the network in {weights} was made for other images or classes "
                         f"({found} vs this dataset's {expected})")
    net.load_state_dict(state)
    net.eval()
    meta = weights.with_name(META)
    info = {**(json.loads(meta.read_text()) if meta.is_file() else {}), "weights_sha256": weights_digest(net)}
    return _extractor(net, version, f"imported-{info['weights_sha256'][:12]}", info)


def export_domain(extractor: Extractor, folder: Path) -> Path:
    """Write a domain extractor's network as ``import_domain`` reads it; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in extractor.module.state_dict().items()}, folder / WEIGHTS)
    (folder / META).write_text(json.dumps({k: v for k, v in extractor.info.items() if k != "weights_sha256"}))
    return folder

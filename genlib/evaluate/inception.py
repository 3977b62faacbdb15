"""The Inception-v3 of the FID papers [1, 2] in plain PyTorch: the ``inception-v3-fid`` extractor.

The graph is TensorFlow's 2015-12-05 ImageNet Inception-v3, whose 2048-d pool features define FID
[2], as pytorch-fid [3] ported it: torchvision's ``Inception3`` layout with module names kept, so
that pytorch-fid's published weights file loads with a strict key check. Features are the global
average pool of ``Mixed_7c``, before ``fc``.

[1] Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
[2] Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
    Equilibrium", NeurIPS 2017.
[3] Seitzer, pytorch-fid, https://github.com/mseitzer/pytorch-fid (``FIDInceptionA/C/E_1/E_2``).

NOTE: where the TF graph departs from [1] and from torchvision, this follows the graph: the
average pools inside the blocks ignore padded zeros (``count_include_pad=False``, TF's rule); the
pool branch of the last block (``Mixed_7c``) is a *max* pool; ``fc`` has 1008 classes; there is
no auxiliary head.

NOTE: the resize is PyTorch's bilinear (``align_corners=False``) as in pytorch-fid, not TF1's
bilinear (torch-fidelity emulates that one), so features match pytorch-fid's, and FIDs can
differ slightly from the original TensorFlow code's.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genlib import paths
from genlib.data.dataset import DatasetVersion
from genlib.data.download import fetch, verify
from genlib.evaluate.extractor import EXTRACTORS, Extractor

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
# The full SHA-256 of the published file (95,628,359 bytes); the name's "-6726825d" is its first
# 8 hex digits (torch.hub's convention). Listed with the URL in several independent projects.
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_ENV = "GENLIB_INCEPTION_WEIGHTS"  # a path to the weights file, used instead of any cache
INPUT_SIZE = 299  # the resize target; it is part of the preprocessing name (tests shrink it)
CHUNK = 32  # images per forward pass: 32 × 3 × 299² floats is 34 MB in, a few hundred MB inside


class BasicConv2d(nn.Module):
    """Convolution without bias → BatchNorm (TF's epsilon) → ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TF averages over the real pixels only; torch's default would count the zero padding.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35×35 block: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool→1×1. Out: 224 + ``pool_features``."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool(x)),
        ], 1)


class InceptionB(nn.Module):
    """35×35 → 17×17 reduction: stride-2 3×3 | 1×1→3×3→stride-2 3×3 | max-pool. Out: 480 + cin."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    """17×17 block with factorized 7×7 convolutions (``c7`` channels inside). Out: 768."""

    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = conv(double)
        return torch.cat([self.branch1x1(x), seven, double, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """17×17 → 8×8 reduction: 1×1→stride-2 3×3 | 1×1→1×7→7×1→stride-2 3×3 | max-pool. Out: 512 + cin."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tower = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            tower = conv(tower)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), tower, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """8×8 block with split 1×3 / 3×1 outputs. Out: 2048. ``max_pool``: the TF graph's last block."""

    def __init__(self, cin: int, max_pool: bool = False):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([
            self.branch1x1(x),  # 320
            self.branch3x3_2a(a), self.branch3x3_2b(a),  # 768
            self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b),  # 768
            self.branch_pool(pooled),  # 192
        ], 1)


class FIDInceptionV3(nn.Module):
    """Images in [-1, 1], (N, 3, 299, 299) → pool features (N, 2048). ``fc`` is kept for the weights."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # ImageNet logits (1008 = TF's padded class count); unused here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d):  # (N, 256 → 288 → 288, 35, 35)
            x = block(x)
        x = self.Mixed_6a(x)  # (N, 768, 17, 17)
        for block in (self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e):  # (N, 768, 17, 17)
            x = block(x)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (N, 1280 → 2048 → 2048, 8, 8)
        return x.mean(dim=(2, 3))  # (N, 2048): the global average pool that FID uses


# --------------------------------------------------------------------------- weights


def weights_path() -> Path:
    """Path of the published weights file, checksum-verified wherever it is found.

    Looked up in order: ``$GENLIB_INCEPTION_WEIGHTS``, ``GENLIB_HOME/downloads``, torch hub's cache
    (where pytorch-fid users already have it); else downloaded to ``GENLIB_HOME/downloads``.
    """
    checksum = f"sha256:{WEIGHTS_SHA256}"
    if env := os.environ.get(WEIGHTS_ENV):
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"{WEIGHTS_ENV}={env} is not a file; point it at {WEIGHTS_FILE} "
                                    f"({WEIGHTS_URL}, {checksum}) or unset it")
        verify(path, checksum)
        return path
    ours = paths.downloads_dir() / WEIGHTS_FILE
    hub = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE
    if hub.is_file() and not ours.exists():
        verify(hub, checksum)
        return hub
    try:
        return fetch(WEIGHTS_URL, checksum, ours)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"no Inception-v3 FID weights: download {WEIGHTS_URL} ({checksum}) and put it at {ours} "
            f"or {hub}, or set {WEIGHTS_ENV} to its path") from err


def load_inception(path: Path) -> FIDInceptionV3:
    """The network in eval mode with the weights at ``path`` (pytorch-fid's state-dict format)."""
    net = FIDInceptionV3()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    # BatchNorm's step counter only matters in training; accept files with or without it.
    state = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
    expected = {k for k in net.state_dict() if not k.endswith(".num_batches_tracked")}
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"{path} is not the FID Inception-v3 state dict: "
                         f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})")
    net.load_state_dict(state, strict=False)  # keys checked above; shape mismatches still raise
    return net.eval().requires_grad_(False)


# --------------------------------------------------------------------------- extractor


def preprocess(images: torch.Tensor, levels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) in [0, levels) → float (N, 3, 299, 299) in [-1, 1], as pytorch-fid does."""
    if images.shape[1] not in (1, 3):
        raise ValueError(f"Inception-v3 takes grey or RGB images, got {images.shape[1]} channels")
    x = images.float() / (levels - 1)  # [0, 1], like pytorch-fid's ToTensor for 256 levels
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2 * x.expand(-1, 3, -1, -1) - 1  # grey → 3 equal channels (RGB unchanged); [-1, 1]


@EXTRACTORS.register("inception-v3-fid")
def inception_v3_fid(version: DatasetVersion) -> Extractor:
    """Inception-v3 pool features (2048-d) with pytorch-fid's weights and preprocessing."""
    net = load_inception(weights_path())
    levels = version.levels

    @torch.no_grad()
    def encode(images: torch.Tensor) -> torch.Tensor:  # uint8 (N, C, H, W) → (N, 2048)
        return torch.cat([net(preprocess(chunk, levels)) for chunk in images.split(CHUNK)])

    preprocessing = f"inception-v3-fid-2015-12-05-{WEIGHTS_SHA256[:8]}:grey3-bilinear{INPUT_SIZE}-pm1"
    return Extractor("inception-v3-fid", preprocessing, 2048, encode,
                     {"weights": WEIGHTS_FILE, "weights_sha256": WEIGHTS_SHA256}, net)

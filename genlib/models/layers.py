"""Layers and likelihood pieces shared by more than one family."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def categorical_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sum of log p(x) per image under independent categoricals.

    logits: (B, C, L, H, W) over L levels; x: (B, C, H, W) integer levels. Returns (B,) nats.
    """
    log_probs = F.log_softmax(logits, dim=2)
    picked = log_probs.gather(2, x.long().unsqueeze(2)).squeeze(2)  # (B, C, H, W)
    return picked.flatten(1).sum(1)


def bits_per_dim(nats_per_image: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    """Negative log-likelihood in nats per image → bits per dimension."""
    return nats_per_image / (dims * math.log(2.0))


def downsample_steps(size: int, smallest: int = 4) -> int:
    """How many stride-2 halvings take ``size`` down towards ``smallest`` exactly."""
    steps = 0
    while size > smallest and size % 2 == 0:
        size //= 2
        steps += 1
    return steps


class ConvEncoder(nn.Module):
    """(B, C, H, W) floats → (B, out_features), halving the resolution ``steps`` times."""

    def __init__(self, in_channels: int, size: int, hidden: int, out_features: int):
        super().__init__()
        steps = downsample_steps(size)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1), nn.SiLU()]
        ch = hidden
        for _ in range(steps):
            layers += [nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1), nn.SiLU()]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.flat = ch * (size >> steps) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(self.flat, 4 * hidden), nn.SiLU(),
                                  nn.Linear(4 * hidden, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """(B, in_features) → (B, out_channels, H, W), mirroring ConvEncoder."""

    def __init__(self, in_features: int, size: int, hidden: int, out_channels: int):
        super().__init__()
        self.steps = downsample_steps(size)
        self.ch = hidden * 2 ** self.steps
        self.base = size >> self.steps
        self.head = nn.Sequential(nn.Linear(in_features, 4 * hidden), nn.SiLU(),
                                  nn.Linear(4 * hidden, self.ch * self.base ** 2), nn.SiLU())
        layers: list[nn.Module] = []
        ch = self.ch
        for _ in range(self.steps):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, stride=2, padding=1), nn.SiLU()]
            ch //= 2
        layers.append(nn.Conv2d(ch, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.head(z).view(-1, self.ch, self.base, self.base)
        return self.body(h)

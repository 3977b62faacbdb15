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


def categorical_sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw of every sub-pixel's categorical, logits (B, C, L, H, W) → uint8 (B, C, H, W), drawn on
    the generator's device and returned on the logits' device."""
    b, c, levels, h, w = logits.shape
    flat = logits.softmax(dim=2).movedim(2, -1).reshape(-1, levels).to(noise_device(generator))
    drawn = torch.multinomial(flat, 1, generator=generator).view(b, c, h, w)
    return drawn.to(torch.uint8).to(logits.device)


def categorical_mean(logits: torch.Tensor) -> torch.Tensor:
    """Every sub-pixel's expected level, rounded: logits (B, C, L, H, W) → uint8 (B, C, H, W) — the
    smooth picture of a decoder's output, without per-pixel sampling noise."""
    probs = logits.softmax(dim=2)
    levels = torch.arange(logits.shape[2], device=logits.device, dtype=probs.dtype).view(1, 1, -1, 1, 1)
    return (probs * levels).sum(2).round().to(torch.uint8)


def bits_per_dim(nats_per_image: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    """Negative log-likelihood in nats per image → bits per dimension."""
    return nats_per_image / (dims * math.log(2.0))


def noise_device(generator: torch.Generator | None) -> torch.device:
    """Where sampling draws its random numbers: on the generator's device (a CUDA generator draws on
    the GPU), else on the CPU; the draws then move to the model. The same generator and seed give the
    same samples on any model device."""
    return generator.device if generator is not None else torch.device("cpu")


def latent_path(rows: int, steps: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``rows`` straight lines between pairs of N(0, I) latents, ``steps`` points each: (rows·steps, dim),
    on the generator's device."""
    device = noise_device(generator)
    z0, z1 = (torch.randn(rows, 1, dim, generator=generator, device=device) for _ in range(2))
    t = torch.linspace(0, 1, steps, device=device)[None, :, None]
    return (z0 + t * (z1 - z0)).flatten(0, 1)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the directions of latents ``a`` and ``b`` (rows) at ``t`` (N, 1), with
    their lengths interpolated linearly: stays where N(0, I) latents live, as StyleGAN's path length
    samples its Z paths."""
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na, b / nb
    omega = torch.acos((ua * ub).sum(1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / torch.sin(omega)
    return direction * (na + t * (nb - na))


def traversal_latents(dim: int, steps: int, span: float, z: torch.Tensor | None, device) -> torch.Tensor:
    """Latent traversals, (dim·steps, dim): row d varies latent d from −span to +span, the others
    held at ``z`` (default the prior mean, 0)."""
    base = torch.zeros(dim, device=device) if z is None else z.to(device)
    grid = base.repeat(dim, steps, 1)  # (dim, steps, dim)
    grid[torch.arange(dim), :, torch.arange(dim)] = torch.linspace(-span, span, steps, device=device)
    return grid.flatten(0, 1)


def normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, 1) per element."""
    return -0.5 * (z.pow(2) + math.log(2 * math.pi))


def posterior_and_prior(mu: torch.Tensor, logvar: torch.Tensor,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One draw of N(mu, exp(logvar)) per row and as many of N(0, I), on mu's device."""
    noise = noise_device(generator)
    eps, prior = (torch.randn(mu.shape, generator=generator, device=noise).to(mu.device) for _ in range(2))
    return mu + eps * (0.5 * logvar).exp(), prior


def importance_weighted_bound(mu: torch.Tensor, logvar: torch.Tensor, k: int, log_likelihood,
                              chunk_images: int = 4096) -> torch.Tensor:
    """The IWAE bound [Burda et al. 2016] log (1/k) Σ_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x) =
    N(mu, exp(logvar)) (B, Z) each, prior N(0, I), in nats per image (B,). ``log_likelihood(z, kk)``
    returns log p(x|z) (kk·B,) for latents (kk·B, Z) stacked sample-major (the batch repeated kk
    times). The k samples go through in chunks of about ``chunk_images`` decoded images, so memory
    stays bounded for large k."""
    std = (0.5 * logvar).exp()
    chunk = max(1, chunk_images // max(1, len(mu)))
    log_w = []
    for start in range(0, k, chunk):
        kk = min(chunk, k - start)
        eps = torch.randn(kk, *mu.shape, device=mu.device)  # (kk, B, Z)
        z = mu + eps * std
        log_q = normal_log_density(eps).sum(-1) - std.log().sum(-1)  # (kk, B)
        log_p_z = normal_log_density(z).sum(-1)
        log_w.append(log_likelihood(z.flatten(0, 1), kk).view(kk, -1) + log_p_z - log_q)
    return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)


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


def channel_groups(n: int, data_channels: int) -> torch.Tensor:
    """Colour group (0 = R, 1 = G, 2 = B) of each of ``n`` feature channels, in contiguous blocks."""
    return torch.arange(n) * data_channels // n


class MaskedConv2d(nn.Conv2d):
    """Causal k×k convolution of PixelCNN [van den Oord et al. 2016]: the output at (i, j) sees
    the rows above and the pixels left of (i, j). At the centre tap, colour groups follow
    R → G → B: mask "A" lets output group g see input groups < g (the first layer: a sub-pixel
    never sees itself), mask "B" groups ≤ g (every later layer)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, mask_type: str,
                 data_channels: int, out_groups: torch.Tensor | None = None):
        if mask_type not in ("A", "B") or kernel % 2 == 0:
            raise ValueError(f"mask_type must be 'A' or 'B' and kernel odd, got {mask_type!r}, {kernel}")
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2)
        c = kernel // 2
        mask = torch.zeros(out_channels, in_channels, kernel, kernel)
        mask[:, :, :c, :] = 1
        mask[:, :, c, :c] = 1
        out_g = channel_groups(out_channels, data_channels) if out_groups is None else out_groups
        in_g = channel_groups(in_channels, data_channels)
        sees = in_g[None, :] < out_g[:, None] if mask_type == "A" else in_g[None, :] <= out_g[:, None]
        mask[:, :, c, c] = sees.float()
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)

    def at(self, padded: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """Output at (i, j) alone, from an input map zero-padded by k//2 on every side: (B, out)."""
        k = self.kernel_size[0]
        window = padded[:, :, i:i + k, j:j + k]  # (B, in, k, k)
        return torch.einsum("bchw,ochw->bo", window, self.weight * self.mask) + self.bias


def mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased squared MMD between two samples (N, D) and (M, D), Gaussian kernel with the
    median pairwise distance as bandwidth."""
    xy = torch.cat([x, y])
    d2 = torch.cdist(xy, xy).pow(2)
    bandwidth = d2[d2 > 0].median().clamp_min(1e-6)
    k = torch.exp(-d2 / bandwidth)
    n, m = len(x), len(y)
    kxx = (k[:n, :n].sum() - k[:n, :n].diagonal().sum()) / max(n * (n - 1), 1)
    kyy = (k[n:, n:].sum() - k[n:, n:].diagonal().sum()) / max(m * (m - 1), 1)
    return (kxx + kyy - 2 * k[:n, n:].mean()).item()

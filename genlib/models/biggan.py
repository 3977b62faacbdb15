"""A BigGAN-style class-conditional GAN [1]: residual generator and discriminator with spectral
normalisation, class-conditional batch norm fed by a shared class embedding and hierarchical
latents, one self-attention block, a projection discriminator, the hinge loss, and the
truncation trick.

As in [1]: spectral norm [2] on every convolution and linear layer of G and D; z is split into
one chunk per generator stage — the first feeds the dense 4×4 input, each later one joins the
shared class embedding to give that residual block's batch-norm gains (1 + ·) and biases;
residual blocks upsample (G: BN → ReLU → up → conv → BN → ReLU → conv, skip: up → 1×1 conv) or
downsample (D: ReLU → conv → ReLU → conv → avg-pool, skip: 1×1 conv → avg-pool); a
self-attention block [3] (with a learned gate γ starting at 0) after the stage at
``attention_resolution`` in both; D ends with ReLU, global sum pooling, a linear score plus the
projection ⟨embed(y), φ(x)⟩ [4]; hinge loss; Adam(β = (0, 0.999)) with D's learning rate 4× G's
(``d_lr_ratio``, SAGAN's two time-scale rule) and two D steps per G step; orthogonal
regularisation β·‖WᵀW ⊙ (1 − I)‖²_F on G's weights (β = 1e-4); an EMA of G for sampling. The
truncation trick [1] redraws every latent entry whose magnitude exceeds a threshold t; genlib's
shared truncation strength ψ in [0, 1] (``sample(..., truncation=ψ)``, 1: none) maps to
t = ψ / (1 − ψ): ψ = 0.5 is t = 1, ψ = 2/3 is t = 2, ψ = 0 the zero latent (each class's "mean"
image), so [1]'s usual thresholds (0.5 to 2) lie on the curve the evaluation draws.

[1] Brock, Donahue & Simonyan, "Large Scale GAN Training for High Fidelity Natural Image
    Synthesis", ICLR 2019.
[2] Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for Generative Adversarial
    Networks", ICLR 2018.
[3] Zhang, Goodfellow, Metaxas & Odena, "Self-Attention Generative Adversarial Networks", ICML 2019.
[4] Miyato & Koyama, "cGANs with Projection Discriminator", ICLR 2018.

NOTE: [1]'s generator EMA starts after 20k iterations with decay 0.9999; here the EMA starts at
once with a warm-up (as genlib's GAN does) and decay ``ema`` (0.999), for CPU-length runs.
[1] trains at batch sizes of 256–2048 with cross-replica batch norm; here each rank normalises
its own batch. Channel widths follow ``hidden`` (ch = 96 in [1] at 128²; smaller presets).
NOTE: class-conditional only: an unlabelled dataset is refused (use gan, progan or stylegan).
The self-attention block must sit at a resolution both networks pass through (G: 8, 16, … up to
the image size; D: half the image size down to 4); images need a side of at least 8.
NOTE: the EMA generator takes the live generator's batch-norm statistics (as genlib's GAN does);
[1] recomputes "standing statistics" for its averaged weights before sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from genlib.config import ANY, TrainConfig, at_least, between, checked, name, one_of
from genlib.models.base import INTERPOLATE, MODELS, PATH_LENGTH, SAMPLE, TRUNCATE
from genlib.models.gan import GAN, LOSSES, PENALTIES, GANConfig
from genlib.models.layers import downsample_steps, noise_device


@dataclass(frozen=True)
class BigGANConfig(GANConfig):
    family: str = checked("biggan", name())
    latent_dim: int = checked(120, at_least(2))  # size of z, split into one chunk per generator stage ([1]: 120)
    embed_dim: int = checked(128, at_least(1))  # the shared class embedding ([1]: 128)
    hidden: int = checked(96, at_least(1))  # channel multiplier ch ([1]: 96)
    attention_resolution: int = checked(16, at_least(0))  # where the self-attention block sits; 0: none
    loss: str = checked("hinge", one_of(*LOSSES))
    penalty: str = checked("none", one_of(*PENALTIES))
    n_critic: int = checked(2, at_least(1))  # D steps per G step ([1]: 2)
    d_lr_ratio: float = checked(4.0, at_least(0))  # D's learning rate = train.lr × this ([1]: 2e-4 / 5e-5)
    ortho_reg: float = checked(1e-4, at_least(0))  # β of G's orthogonal regularisation; 0: off
    ema: float = checked(0.999, between(0, 1, high_open=True))
    conditional: bool = checked(True, ANY)  # class-conditional (an unlabelled dataset is refused)


def _sn_conv(cin, cout, kernel):
    return spectral_norm(nn.Conv2d(cin, cout, kernel, padding=kernel // 2))


def _sn_linear(cin, cout, bias=True):
    return spectral_norm(nn.Linear(cin, cout, bias=bias))


class SelfAttention(nn.Module):
    """SAGAN's attention over positions [3]: x + γ·o, with γ learned from 0."""

    def __init__(self, ch: int):
        super().__init__()
        self.theta, self.phi = _sn_conv(ch, max(1, ch // 8), 1), _sn_conv(ch, max(1, ch // 8), 1)
        self.g, self.o = _sn_conv(ch, max(1, ch // 2), 1), _sn_conv(max(1, ch // 2), ch, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        b, c, h, w = x.shape
        theta = self.theta(x).flatten(2)  # (B, c/8, HW)
        phi = F.max_pool2d(self.phi(x), 2).flatten(2) if h > 1 else self.phi(x).flatten(2)  # keys: pooled
        g = F.max_pool2d(self.g(x), 2).flatten(2) if h > 1 else self.g(x).flatten(2)
        attention = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (B, HW, HW/4)
        out = (g @ attention.transpose(1, 2)).view(b, -1, h, w)
        return x + self.gamma * self.o(out)


class ConditionalBN(nn.Module):
    """Batch norm whose gain (1 + ·) and bias are linear in the block's conditioning vector [1]."""

    def __init__(self, ch: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(ch, affine=False)
        self.gain, self.bias = _sn_linear(cond_dim, ch, bias=False), _sn_linear(cond_dim, ch, bias=False)

    def forward(self, x, cond):
        return self.bn(x) * (1 + self.gain(cond))[:, :, None, None] + self.bias(cond)[:, :, None, None]


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.bn1, self.bn2 = ConditionalBN(cin, cond_dim), ConditionalBN(cout, cond_dim)
        self.conv1, self.conv2 = _sn_conv(cin, cout, 3), _sn_conv(cout, cout, 3)
        self.skip = _sn_conv(cin, cout, 1)

    def forward(self, x, cond):
        h = F.interpolate(F.relu(self.bn1(x, cond)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), cond)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, first: bool = False):
        super().__init__()
        self.conv1, self.conv2 = _sn_conv(cin, cout, 3), _sn_conv(cout, cout, 3)
        self.skip = _sn_conv(cin, cout, 1)
        self.first = first  # the first block sees images: no ReLU before its first conv

    def forward(self, x):
        h = x if self.first else F.relu(x)
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(h))), 2)
        return h + F.avg_pool2d(self.skip(x), 2)


def _stages(size: int) -> int:
    return downsample_steps(size)  # 4×4 doubled this many times is the image size


class BigGenerator(nn.Module):
    def __init__(self, cfg: BigGANConfig, shape, num_classes: int):
        super().__init__()
        c, size, _ = shape
        steps = _stages(size)
        self.base = size >> steps
        chans = [cfg.hidden * min(2 ** (steps - i), 16) for i in range(steps + 1)]  # wide at low resolution
        self.chunks = steps + 1
        if cfg.latent_dim < self.chunks:
            raise ValueError(f"model.latent_dim={cfg.latent_dim} cannot split into {self.chunks} chunks (one per "
                             f"generator stage at {size}×{size}): set it to at least {self.chunks}")
        self.split = [cfg.latent_dim // self.chunks + (i < cfg.latent_dim % self.chunks) for i in range(self.chunks)]
        self.embed = nn.Embedding(num_classes, cfg.embed_dim)  # shared by every block
        self.dense = _sn_linear(self.split[0], chans[0] * self.base ** 2)
        self.chans = chans
        self.blocks = nn.ModuleList(GBlock(a, b, cfg.embed_dim + z) for a, b, z in zip(chans, chans[1:], self.split[1:]))
        resolutions = [self.base << (i + 1) for i in range(steps)]
        self.attention_after = resolutions.index(cfg.attention_resolution) if cfg.attention_resolution else None
        self.attention = SelfAttention(chans[self.attention_after + 1]) if self.attention_after is not None else None
        self.out_bn = nn.BatchNorm2d(chans[-1])
        self.out = _sn_conv(chans[-1], c, 3)

    def forward(self, z, labels):
        chunks = z.split(self.split, dim=1)
        y = self.embed(labels)
        h = self.dense(chunks[0]).view(len(z), self.chans[0], self.base, self.base)
        for i, (block, chunk) in enumerate(zip(self.blocks, chunks[1:])):
            h = block(h, torch.cat([y, chunk], dim=1))
            if i == self.attention_after:
                h = self.attention(h)
        return torch.tanh(self.out(F.relu(self.out_bn(h))))


class BigDiscriminator(nn.Module):
    def __init__(self, cfg: BigGANConfig, shape, num_classes: int):
        super().__init__()
        c, size, _ = shape
        steps = _stages(size)
        chans = [cfg.hidden * min(2 ** (i + 1), 16) for i in range(steps)]  # after each block
        self.blocks = nn.ModuleList(DBlock(a, b, first=i == 0) for i, (a, b) in enumerate(zip([c, *chans], chans)))
        resolutions = [size >> (i + 1) for i in range(steps)]  # after each block
        self.attention_after = resolutions.index(cfg.attention_resolution) if cfg.attention_resolution else None
        self.attention = SelfAttention(chans[self.attention_after]) if self.attention_after is not None else None
        self.linear = _sn_linear(chans[-1], 1)
        self.project = spectral_norm(nn.Embedding(num_classes, chans[-1]))

    def forward(self, x, labels):
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attention_after:
                h = self.attention(h)
        h = F.relu(h).sum(dim=(2, 3))  # global sum pooling
        return self.linear(h).squeeze(1) + (self.project(labels) * h).sum(1)


@MODELS.register("biggan")
class BigGAN(GAN):
    config_class = BigGANConfig
    capabilities = frozenset({SAMPLE, INTERPOLATE, TRUNCATE, PATH_LENGTH})

    def __init__(self, config: BigGANConfig, shape, levels, num_classes=None):
        if not config.conditional or not num_classes:
            raise ValueError("biggan is class-conditional: it needs model.conditional=true and a labelled dataset "
                             f"(num_classes={num_classes}); for unlabelled images use gan, progan or stylegan")
        size, steps = shape[1], _stages(shape[1])
        if size < 8 or steps == 0:
            raise ValueError(f"biggan needs images with a side of at least 8 that halves down towards 4, got {size}")
        in_g = [(size >> steps) << (i + 1) for i in range(steps)]
        in_d = [size >> (i + 1) for i in range(steps)]
        both = sorted(set(in_g) & set(in_d))
        if config.attention_resolution and config.attention_resolution not in both:
            raise ValueError(f"model.attention_resolution={config.attention_resolution}: at {size}×{size} the "
                             f"generator passes {in_g} and the discriminator {in_d}; choose one of {both} "
                             f"(both networks attend there), or 0 for no attention")
        super().__init__(config, shape, levels, num_classes)

    def networks(self, classes):
        return BigGenerator(self.config, self.shape, classes), BigDiscriminator(self.config, self.shape, classes)

    def configure_optimizers(self, train: TrainConfig):
        return {"generator": torch.optim.Adam(self.generator.parameters(), lr=train.lr, betas=(0.0, 0.999)),
                "discriminator": torch.optim.Adam(self.discriminator.parameters(),
                                                  lr=train.lr * self.config.d_lr_ratio, betas=(0.0, 0.999))}

    def forward(self, phase: str, x, z, labels, penalty_scale: float = 1.0):
        loss = super().forward(phase, x, z, labels, penalty_scale)
        if phase == "g" and self.config.ortho_reg > 0:
            loss = loss + self.config.ortho_reg * self.orthogonal_penalty()
        return loss

    def orthogonal_penalty(self) -> torch.Tensor:
        """Σ over G's weight matrices (one row per output unit) of ‖WWᵀ ⊙ (1 − I)‖²_F [1] (biases,
        embeddings and 1-D parameters excluded)."""
        total = torch.zeros((), device=self.device)
        for key, param in self.generator.named_parameters():
            if param.dim() < 2 or "embed" in key:
                continue
            w = param.flatten(1)
            gram = w @ w.t()
            total = total + (gram * (1 - torch.eye(len(w), device=w.device))).pow(2).sum()
        return total

    def truncated_latents(self, n: int, threshold: float, generator=None) -> torch.Tensor:
        """N(0, I) latents with every entry of magnitude above ``threshold`` redrawn until none is [1]
        (threshold 0: all zeros)."""
        device = noise_device(generator)
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device)
        if threshold <= 0:
            return torch.zeros_like(z)
        while (far := z.abs() > threshold).any():
            z = torch.where(far, torch.randn(z.shape, generator=generator, device=device), z)
        return z

    @staticmethod
    def threshold(psi: float) -> float:
        """The latent threshold t of truncation strength ψ in [0, 1): t = ψ / (1 − ψ)."""
        return psi / (1 - psi)

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None, truncation: float | None = None) -> torch.Tensor:
        """``n`` images of ``labels`` (default: the classes in turn); ``truncation`` = ψ < 1 redraws latent
        entries beyond ±ψ/(1 − ψ) (lower ψ: more typical, less varied images); None or 1: no truncation."""
        if truncation is None or truncation >= 1:
            return super().sample(n, labels, generator)
        z = self.truncated_latents(n, self.threshold(truncation), generator).to(self.device)
        return self.quantize(self.generate(z, self.class_labels(labels, n, default=True)))


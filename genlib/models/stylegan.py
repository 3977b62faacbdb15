"""A StyleGAN-style generator [1, 2]: a mapping network z → w, a learned constant input, and
per-layer styles that modulate the synthesis convolutions, with noise inputs, style mixing
regularisation, the truncation trick and style-mixing grids.

Generator, as in [2] (StyleGAN2) unless noted: z is pixel-normalised and mapped to w by an MLP
of ``mapping_layers`` equalized-lr layers whose learning rate is multiplied by ``mapping_lr``
(0.01); synthesis starts from a learned 4×4 constant; each resolution doubles with bilinear
upsampling followed by two 3×3 modulated convolutions (the style scales the weight's input
channels, then each output channel is demodulated to unit norm), each followed by per-pixel
noise with a learned strength, a bias and a leaky ReLU; a "skip" output sums every resolution's
1×1 modulated toRGB, upsampled. Layer i takes style w_i: one w for all layers, except that with
probability ``mixing`` (0.9) a training batch switches to the w of a second latent from a random
layer on (style mixing regularisation). A running mean of w (decay 0.995 per step) gives the
truncation trick: w' = w̄ + ψ(w − w̄).

Discriminator and loss: progan's discriminator at full resolution (equalized learning rate,
minibatch standard deviation), the non-saturating logistic loss with the R1 penalty γ/2·E‖∇D(x)‖²
on real images, applied lazily every 16 steps [2]; Adam(β = (0, 0.99)); an EMA of the generator
for sampling.

[1] Karras, Laine & Aila, "A Style-Based Generator Architecture for Generative Adversarial
    Networks", CVPR 2019.
[2] Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020.

NOTE: [2] upsamples with a transposed convolution and a FIR low-pass filter and uses a residual
discriminator; here bilinear upsampling and progan's plain discriminator. Path length
regularisation [2] is not implemented. The truncation trick applies to every layer (no cutoff).
NOTE: γ defaults to 10 ([1]'s FFHQ setting); [2] lowers it for small images (0.01 for CIFAR-10):
CPU presets set their own. Unconditional only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlib.config import TrainConfig, at_least, between, checked, name, one_of
from genlib.models.base import INTERPOLATE, MODELS, PATH_LENGTH, SAMPLE, STYLE_MIX, TRUNCATE
from genlib.models.gan import GAN, LOSSES, PENALTIES, GANConfig
from genlib.models.layers import noise_device
from genlib.models.progan import (
    START,
    UNCONDITIONAL,
    EqualLinear,
    ProDiscriminator,
    _channels,
    _lrelu,
    check_growable,
    pixel_norm,
)


@dataclass(frozen=True)
class StyleGANConfig(GANConfig):
    family: str = checked("stylegan", name())
    latent_dim: int = checked(512, at_least(1))  # size of z
    w_dim: int = checked(512, at_least(1))  # size of w
    mapping_layers: int = checked(8, at_least(1))
    mapping_lr: float = checked(0.01, between(0, 1, low_open=True))  # learning-rate multiplier of the mapping MLP
    channel_base: int = checked(32768, at_least(1))  # feature maps at resolution r: min(channel_base / r, max_channels), [2]
    max_channels: int = checked(512, at_least(1))
    mixing: float = checked(0.9, between(0, 1))  # probability that a batch mixes two latents' styles
    w_avg_decay: float = checked(0.995, between(0, 1, high_open=True))  # running mean of w, for truncation
    loss: str = checked("non-saturating", one_of(*LOSSES))  # [1, 2]: the logistic loss
    penalty: str = checked("r1", one_of(*PENALTIES))
    gp_weight: float = checked(10.0, at_least(0))  # γ of R1
    penalty_every: int = checked(16, at_least(1))  # lazy R1 [2]
    group_size: int = checked(4, at_least(1))  # the discriminator's minibatch standard deviation
    conditional: bool = checked(False, UNCONDITIONAL)


class ModulatedConv2d(nn.Module):
    """A convolution whose input channels each sample's style scales; demodulated (each output
    channel's weights rescaled to unit norm per sample) unless ``demodulate`` is False (toRGB)."""

    def __init__(self, cin: int, cout: int, kernel: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.scale = 1 / math.sqrt(cin * kernel * kernel)
        self.affine = EqualLinear(w_dim, cin, gain=1.0)
        nn.init.ones_(self.affine.bias)  # styles start at 1: the plain convolution
        self.demodulate, self.padding = demodulate, kernel // 2

    def forward(self, x, w):
        b, cin, h, wd = x.shape
        style = self.affine(w)  # (B, cin)
        weight = self.weight[None] * self.scale * style[:, None, :, None, None]  # (B, cout, cin, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        out = F.conv2d(x.reshape(1, b * cin, h, wd), weight.flatten(0, 1), padding=self.padding, groups=b)
        return out.view(b, -1, h, wd)


class StyledLayer(nn.Module):
    """Modulated 3×3 conv → per-pixel noise × learned strength → bias → leaky ReLU. The noise is
    fresh in training and a fixed image drawn at construction when sampling ([2]'s "const" mode)."""

    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int):
        super().__init__()
        self.conv = ModulatedConv2d(cin, cout, 3, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x, w):
        x = self.conv(x, w)
        noise = torch.randn(len(x), 1, *x.shape[2:], device=x.device) if self.training else self.noise_const
        return _lrelu(x + self.noise_strength * noise + self.bias[None, :, None, None]) * math.sqrt(2)


class MappingNetwork(nn.Module):
    def __init__(self, cfg: StyleGANConfig):
        super().__init__()
        dims = [cfg.latent_dim] + [cfg.w_dim] * cfg.mapping_layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_mul=cfg.mapping_lr) for a, b in zip(dims, dims[1:]))

    def forward(self, z):
        h = pixel_norm(z)
        for layer in self.layers:
            h = _lrelu(layer(h))
        return h


class StyleGenerator(nn.Module):
    """z (or w per layer) → images in [-1, 1] at full resolution."""

    def __init__(self, cfg: StyleGANConfig, channels: int, final_level: int):
        super().__init__()
        ch = [_channels(cfg, START << level) for level in range(final_level + 1)]
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg)
        self.const = nn.Parameter(torch.randn(1, ch[0], START, START))
        self.first = StyledLayer(ch[0], ch[0], cfg.w_dim, START)
        self.blocks = nn.ModuleList(
            nn.ModuleList([StyledLayer(ch[level - 1], ch[level], cfg.w_dim, START << level),
                           StyledLayer(ch[level], ch[level], cfg.w_dim, START << level)])
            for level in range(1, final_level + 1))
        self.to_rgb = nn.ModuleList(ModulatedConv2d(c, channels, 1, cfg.w_dim, demodulate=False) for c in ch)
        self.rgb_bias = nn.Parameter(torch.zeros(len(ch), channels))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    @property
    def num_layers(self) -> int:
        """Styles the synthesis takes: one per modulated 3×3 convolution (toRGB shares its block's last)."""
        return 1 + 2 * len(self.blocks)

    def styles(self, z, mix_z: torch.Tensor | None = None, cutoff: int | None = None,
               truncation: float | None = None) -> torch.Tensor:
        """Per-layer w, (B, num_layers, w_dim): ``z``'s w, from layer ``cutoff`` on ``mix_z``'s; truncated
        towards the running mean w̄ by ``truncation`` = ψ when given."""
        w = self.mapping(z)[:, None].repeat(1, self.num_layers, 1)
        if mix_z is not None:
            w[:, cutoff:] = self.mapping(mix_z)[:, None]
        if truncation is not None:
            w = self.w_avg + truncation * (w - self.w_avg)
        return w

    def synthesize(self, ws: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from per-layer styles (B, num_layers, w_dim)."""
        h = self.first(self.const.expand(len(ws), -1, -1, -1), ws[:, 0])
        rgb = self.to_rgb[0](h, ws[:, 0]) + self.rgb_bias[0][None, :, None, None]
        for i, (conv1, conv2) in enumerate(self.blocks, start=1):
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = conv2(conv1(h, ws[:, 2 * i - 1]), ws[:, 2 * i])
            rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False)
            rgb = rgb + self.to_rgb[i](h, ws[:, 2 * i]) + self.rgb_bias[i][None, :, None, None]
        return rgb

    def forward(self, z, labels=None):
        """Training and plain sampling: with probability ``mixing`` (in training) two latents' styles,
        switched at a random layer; in training the running mean of w moves towards this batch's."""
        mix_z = cutoff = None
        if self.training and self.cfg.mixing > 0 and float(torch.rand(())) < self.cfg.mixing:
            mix_z, cutoff = torch.randn_like(z), int(torch.randint(1, self.num_layers, ()))
        ws = self.styles(z, mix_z, cutoff)
        if self.training:
            with torch.no_grad():
                self.w_avg.lerp_(ws[:, 0].mean(0).to(self.w_avg.dtype), 1 - self.cfg.w_avg_decay)  # fp32 under autocast
        return self.synthesize(ws)


@MODELS.register("stylegan")
class StyleGAN(GAN):
    config_class = StyleGANConfig
    capabilities = frozenset({SAMPLE, INTERPOLATE, TRUNCATE, STYLE_MIX, PATH_LENGTH})
    path_spaces = ("z", "w")

    def __init__(self, config: StyleGANConfig, shape, levels, num_classes=None):
        if check_growable("stylegan", shape) == 0:
            raise ValueError("stylegan needs images of at least 8×8 (at 4×4 there is one layer: nothing to mix)")
        super().__init__(config, shape, levels, num_classes)

    @property
    def final_level(self) -> int:
        return check_growable("stylegan", self.shape)

    def networks(self, classes):
        discriminator = ProDiscriminator(self.config, self.shape[0], self.final_level)
        discriminator.set_level_of_detail(self.final_level, 1.0)  # always at full resolution
        return StyleGenerator(self.config, self.shape[0], self.final_level), discriminator

    def configure_optimizers(self, train: TrainConfig):
        return {name: torch.optim.Adam(net.parameters(), lr=train.lr, betas=(0.0, 0.99), eps=1e-8)
                for name, net in (("generator", self.generator), ("discriminator", self.discriminator))}

    @torch.no_grad()
    def generate_from(self, z: torch.Tensor, mix_z: torch.Tensor | None = None, cutoff: int | None = None,
                      truncation: float | None = None) -> torch.Tensor:
        """Images (quantised) of latents ``z`` with the averaged generator and its fixed noise; from layer
        ``cutoff`` on with ``mix_z``'s styles; truncated by ψ = ``truncation``."""
        net = self.sampler
        was_training = net.training
        net.eval()
        out = net.synthesize(net.styles(z, mix_z, cutoff, truncation))
        net.train(was_training)
        return self.quantize(out)

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None, truncation: float | None = None) -> torch.Tensor:
        """``n`` images; ``truncation`` = ψ pulls every w towards the running mean w̄ (ψ = 0: w̄'s image)."""
        return self.generate_from(self.latents(n, generator), truncation=truncation)

    @torch.no_grad()
    def path_pairs(self, n: int, epsilon: float, space: str = "z", generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """As every GAN's in Z; in W [1]: straight lines between the mapped latents, every layer's style on them."""
        if space != "w":
            return super().path_pairs(n, epsilon, space, generator)
        net = self.sampler
        was_training = net.training
        net.eval()
        w0, w1 = net.mapping(self.latents(n, generator)), net.mapping(self.latents(n, generator))
        t = torch.rand(n, 1, generator=generator, device=noise_device(generator)).to(self.device)
        pairs = tuple(self.to_levels(net.synthesize((w0 + (t + d) * (w1 - w0))[:, None].repeat(1, net.num_layers, 1)))
                      for d in (0, epsilon))
        net.train(was_training)
        return pairs

    @torch.no_grad()
    def style_mix(self, rows: int = 4, cols: int = 4, cutoff: int | None = None, generator=None) -> torch.Tensor:
        """A (rows + 1) × (cols + 1) grid, row by row: the top row's images give the coarse styles (the
        layers before ``cutoff``; default: those up to 8×8), the left column's the fine ones, and each
        inner cell takes its column's coarse and its row's fine styles; the corner is blank."""
        cutoff = min(3, self.sampler.num_layers - 1) if cutoff is None else cutoff
        coarse, fine = self.latents(cols, generator), self.latents(rows, generator)
        tops, lefts = self.generate_from(coarse), self.generate_from(fine)
        grid = [torch.zeros_like(tops[:1]), tops]
        for r in range(rows):
            grid += [lefts[r:r + 1], self.generate_from(coarse, fine[r:r + 1].expand(cols, -1), cutoff)]
        return torch.cat(grid)

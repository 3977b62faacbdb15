"""Progressive growing of GANs [1]: generator and discriminator grow from 4×4 to the images'
resolution, each new resolution faded in linearly, on a schedule of the images seen.

Every resolution's blocks exist from construction on, so the parameter set never changes: DDP
wraps one fixed module, and a checkpoint holds the whole model at any point of the schedule.
Which blocks run is a function of the **global** number of training images seen
(``TrainingContext.images_seen``, the same on every rank and saved with each checkpoint): the
start resolution is trained for ``stable_images``, then each next one is faded in over
``fade_images`` (the new block's output blended with the upsampled output of the one before,
α from 0 to 1; the discriminator's input likewise, and the real images are blended with their
own half-resolution version by the same α) and trained alone for ``stable_images``. A run that
resumes from a checkpoint in the middle of a fade therefore continues at the same α.

The networks follow [1]'s design: pixel-wise feature normalisation after each generator conv,
equalized learning rate (weights drawn from N(0, 1) and scaled at run time by He's constant),
nearest-neighbour upsampling and average-pool downsampling, 1×1 "toRGB"/"fromRGB" convolutions
per resolution, a minibatch standard deviation feature in the discriminator's last block, and
the WGAN-GP loss [2] with the drift term ε·E[D(x)²] (ε = 0.001), Adam(β = (0, 0.99)), and an
exponential moving average of the generator for sampling. Feature maps per resolution r are
min(channel_base / r, max_channels): [1]'s 8192 / 2^(stage) capped at 512, i.e. (16384, 512).

[1] Karras, Aila, Laine & Lehtinen, "Progressive Growing of GANs for Improved Quality,
    Stability, and Variation", ICLR 2018.
[2] Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017.

NOTE: [1] lowers the minibatch size as the resolution grows (to fit GPU memory); here the batch
size is ``train.batch_size`` throughout. [1] counts the images of a phase per resolution of its
dataset (600k–800k); the defaults here are [1]'s 800k, and CPU presets shorten them.
NOTE: [1] grows to resolutions of 2^k; images here must be square with a side of 4·2^k.
NOTE: unconditional only ([1]'s CIFAR-10 runs use labels only as an auxiliary input we do not
implement). Samples at a resolution below the images' (early in the schedule) are upsampled to
full size with nearest neighbours, so every family's samples have the dataset's shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlib.config import Rule, TrainConfig, at_least, between, checked, name, one_of
from genlib.models.base import INTERPOLATE, MODELS, PATH_LENGTH, SAMPLE, Batch, TrainingContext
from genlib.models.gan import GAN, LOSSES, PENALTIES, GANConfig

START = 4  # the resolution training starts at, as in [1]
UNCONDITIONAL = Rule(lambda v: v is False, "false: progan is unconditional (gan has class conditioning)", True)


@dataclass(frozen=True)
class ProGANConfig(GANConfig):
    family: str = checked("progan", name())
    latent_dim: int = checked(512, at_least(1))  # size of z
    channel_base: int = checked(16384, at_least(1))  # feature maps at resolution r: min(channel_base / r, max_channels)
    max_channels: int = checked(512, at_least(1))
    fade_images: int = checked(800_000, at_least(1))  # training images over which a new resolution fades in
    stable_images: int = checked(800_000, at_least(0))  # training images at each resolution once faded in
    loss: str = checked("wgan-gp", one_of(*LOSSES))  # [1]: WGAN-GP
    penalty: str = checked("auto", one_of(*PENALTIES))
    drift: float = checked(0.001, at_least(0))  # ε of the drift term ε·E[D(real)²] ([1], appendix A.1)
    group_size: int = checked(4, at_least(1))  # minibatch standard deviation: images per group
    ema: float = checked(0.999, between(0, 1, high_open=True))
    conditional: bool = checked(False, UNCONDITIONAL)  # unconditional only (see the notes above)


def check_growable(family: str, shape) -> int:
    """The level of square images of side 4·2^k (k); anything else is refused, naming the family."""
    _, h, w = shape
    if h != w or h < START or h % START or (h // START) & (h // START - 1):
        raise ValueError(f"{family} grows from {START}×{START} by doubling: it needs square images with a side "
                         f"of 4·2^k (4, 8, 16, 32, …), got {h}×{w}; set data.image_size")
    return int(math.log2(h // START))


def level_of_detail(images_seen: int, final_level: int, fade: int, stable: int) -> tuple[int, float]:
    """Where the schedule stands after ``images_seen`` training images: (level, α). Level ℓ is the
    resolution 4·2^ℓ; α in (0, 1) while level ℓ fades in over level ℓ − 1, 1 once it is in."""
    t = images_seen - stable  # level 0 is trained alone first
    for level in range(1, final_level + 1):
        if t < 0:
            return level - 1, 1.0
        if t < fade:
            return level, t / fade
        t -= fade + stable
    return final_level, 1.0


def growth(level: int, alpha: float) -> float:
    """One number for the schedule, for logs: 0 at 4×4, ℓ once level ℓ is in, ℓ − 1 + α while it fades in."""
    return level - 1 + alpha if alpha < 1 else float(level)


# --------------------------------------------------------------------------- layers of [1]

class EqualConv2d(nn.Module):
    """A convolution with equalized learning rate: N(0, 1) weights scaled by gain/√fan_in at run time."""

    def __init__(self, cin: int, cout: int, kernel: int, gain: float = math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = gain / math.sqrt(cin * kernel * kernel)
        self.padding = kernel // 2

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualLinear(nn.Module):
    """A dense layer with equalized learning rate; ``lr_mul`` scales its effective learning rate
    (StyleGAN's mapping network: 0.01) by drawing N(0, 1/lr_mul²) weights scaled by lr_mul at run time."""

    def __init__(self, cin: int, cout: int, gain: float = math.sqrt(2), lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale, self.lr_mul = gain / math.sqrt(cin) * lr_mul, lr_mul

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each pixel's feature vector scaled to unit mean square (over channels)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def minibatch_stddev(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Append one feature map: the standard deviation of each feature over the image's group,
    averaged over features and pixels. Groups are the largest size ≤ ``group_size`` dividing the batch."""
    b = len(x)
    g = max(d for d in range(1, min(group_size, b) + 1) if b % d == 0)
    groups = x.view(g, b // g, *x.shape[1:])  # image i is in group i mod (b // g), as in [1]
    std = (groups.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (b // g,)
    feature = std.repeat(g)[:, None, None, None].expand(b, 1, *x.shape[2:])
    return torch.cat([x, feature], dim=1)


def _lrelu(x):
    return F.leaky_relu(x, 0.2)


def _channels(cfg: ProGANConfig, resolution: int) -> int:
    return max(1, min(cfg.channel_base // resolution, cfg.max_channels))


def _blend(low: torch.Tensor, high: torch.Tensor, alpha: float) -> torch.Tensor:
    return high if alpha >= 1 else low + alpha * (high - low)


class _Scheduled(nn.Module):
    """A network that runs the blocks of the schedule's current (level, α), set by the model."""

    level: int = 0
    alpha: float = 1.0

    def set_level_of_detail(self, level: int, alpha: float) -> None:
        self.level, self.alpha = level, alpha


class ProGenerator(_Scheduled):
    """z → images at the current resolution 4·2^level, in [-1, 1] (linear output, as in [1])."""

    def __init__(self, cfg: ProGANConfig, channels: int, final_level: int):
        super().__init__()
        ch = [_channels(cfg, START << level) for level in range(final_level + 1)]
        self.start = ch[0]
        self.dense = EqualLinear(cfg.latent_dim, ch[0] * START * START, gain=math.sqrt(2) / 4)  # [1]'s 4×4 "conv"
        self.first = EqualConv2d(ch[0], ch[0], 3)
        self.blocks = nn.ModuleList(
            nn.ModuleList([EqualConv2d(ch[level - 1], ch[level], 3), EqualConv2d(ch[level], ch[level], 3)])
            for level in range(1, final_level + 1))
        self.to_rgb = nn.ModuleList(EqualConv2d(c, channels, 1, gain=1.0) for c in ch)

    def forward(self, z, labels=None):
        h = pixel_norm(_lrelu(self.dense(pixel_norm(z)).view(len(z), self.start, START, START)))
        h = pixel_norm(_lrelu(self.first(h)))
        previous = h
        for conv1, conv2 in self.blocks[:self.level]:
            previous = h
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = pixel_norm(_lrelu(conv2(pixel_norm(_lrelu(conv1(h))))))
        out = self.to_rgb[self.level](h)
        if self.alpha < 1:
            low = F.interpolate(self.to_rgb[self.level - 1](previous), scale_factor=2, mode="nearest")
            out = _blend(low, out, self.alpha)
        return out


class ProDiscriminator(_Scheduled):
    """Images at the current resolution → one score each (no normalisation, as WGAN-GP requires)."""

    def __init__(self, cfg: ProGANConfig, channels: int, final_level: int):
        super().__init__()
        ch = [_channels(cfg, START << level) for level in range(final_level + 1)]
        self.group_size = cfg.group_size
        self.from_rgb = nn.ModuleList(EqualConv2d(channels, c, 1) for c in ch)
        self.blocks = nn.ModuleList(  # blocks[level - 1] takes level's resolution down to level − 1's
            nn.ModuleList([EqualConv2d(ch[level], ch[level], 3), EqualConv2d(ch[level], ch[level - 1], 3)])
            for level in range(1, final_level + 1))
        self.last = EqualConv2d(ch[0] + 1, ch[0], 3)
        self.dense = EqualLinear(ch[0] * START * START, ch[0])
        self.out = EqualLinear(ch[0], 1, gain=1.0)

    def _block(self, level: int, h):
        conv1, conv2 = self.blocks[level - 1]
        return F.avg_pool2d(_lrelu(conv2(_lrelu(conv1(h)))), 2)

    def forward(self, x, labels=None):
        h = _lrelu(self.from_rgb[self.level](x))
        if self.level > 0:
            h = self._block(self.level, h)
            if self.alpha < 1:
                h = _blend(_lrelu(self.from_rgb[self.level - 1](F.avg_pool2d(x, 2))), h, self.alpha)
        for level in range(self.level - 1, 0, -1):
            h = self._block(level, h)
        h = _lrelu(self.last(minibatch_stddev(h, self.group_size)))
        return self.out(_lrelu(self.dense(h.flatten(1)))).squeeze(1)  # (B,)


@MODELS.register("progan")
class ProGAN(GAN):
    config_class = ProGANConfig
    capabilities = frozenset({SAMPLE, INTERPOLATE, PATH_LENGTH})

    def __init__(self, config: ProGANConfig, shape, levels, num_classes=None):
        check_growable("progan", shape)
        super().__init__(config, shape, levels, num_classes)
        # training images seen by the end of the last update: where the schedule stands for sampling
        self.register_buffer("images_seen", torch.zeros((), dtype=torch.long))

    @property
    def final_level(self) -> int:
        """The level of the images' own resolution: 4·2^final_level."""
        return check_growable("progan", self.shape)

    def networks(self, classes):
        return (ProGenerator(self.config, self.shape[0], self.final_level),
                ProDiscriminator(self.config, self.shape[0], self.final_level))

    def configure_optimizers(self, train: TrainConfig):
        return {name: torch.optim.Adam(net.parameters(), lr=train.lr, betas=(0.0, 0.99), eps=1e-8)
                for name, net in (("generator", self.generator), ("discriminator", self.discriminator))}

    def level_of_detail(self, images_seen: int | None = None) -> tuple[int, float]:
        """(level, α) after ``images_seen`` images (default: as many as this model has trained on)."""
        seen = int(self.images_seen) if images_seen is None else images_seen
        return level_of_detail(seen, self.final_level, self.config.fade_images, self.config.stable_images)

    def _set_level_of_detail(self, level: int, alpha: float) -> None:
        for net in (self.generator, self.discriminator, self.generator_ema):
            if net is not None:
                net.set_level_of_detail(level, alpha)

    @property
    def resolution(self) -> int:
        return START << self.generator.level

    def _dequantize(self, x: torch.Tensor) -> torch.Tensor:
        """Real images as D sees them now: dequantised, at the current resolution, and while a
        resolution fades in, blended with their half-resolution version by the same α [1]."""
        real = super()._dequantize(x)
        real = F.avg_pool2d(real, real.shape[-1] // self.resolution) if real.shape[-1] > self.resolution else real
        alpha = self.discriminator.alpha
        if alpha < 1:
            low = F.interpolate(F.avg_pool2d(real, 2), scale_factor=2, mode="nearest")
            real = _blend(low, real, alpha)
        return real

    def training_step(self, batch: Batch, optimizers, context: TrainingContext) -> dict[str, float]:
        level, alpha = self.level_of_detail(context.images_seen)
        self._set_level_of_detail(level, alpha)
        metrics = super().training_step(batch, optimizers, context)
        self.images_seen.fill_(context.after(len(batch.x)).images_seen)
        return {**metrics, "growth": growth(level, alpha), "resolution": float(START << level)}

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels=None) -> torch.Tensor:
        """Full-size images in [-1, 1] from latents, with the averaged generator at the level of detail
        reached so far (upsampled with nearest neighbours below the images' resolution)."""
        self._set_level_of_detail(*self.level_of_detail())
        out = super().generate(z, labels)
        return F.interpolate(out, size=self.shape[1:], mode="nearest") if out.shape[-1] < self.shape[-1] else out

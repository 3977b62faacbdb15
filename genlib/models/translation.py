"""Image-to-image translation: pix2pix [1] on paired data and CycleGAN [2] on unpaired domains.

``pix2pix`` translates domain A to domain B with a U-Net generator [1, 3] (skip connections between
mirrored encoder and decoder layers, dropout as the noise source) and a PatchGAN discriminator that
scores overlapping patches of the (input, output) pair; its generator minimises the adversarial loss
plus λ·L1 to the true target (λ = 100). ``cyclegan`` learns both directions from unpaired domains: two
ResNet generators [2, 4], two PatchGAN discriminators, least-squares adversarial losses, a cycle loss
λ·|G_BA(G_AB(a)) − a| (and the same for b, λ = 10), an identity loss 0.5·λ·|G_AB(b) − b| (and for a),
and a history of 50 generated images per domain that the discriminators see half the time.

[1] Isola, Zhu, Zhou & Efros, "Image-to-Image Translation with Conditional Adversarial Networks",
    CVPR 2017.
[2] Zhu, Park, Isola & Efros, "Unpaired Image-to-Image Translation using Cycle-Consistent
    Adversarial Networks", ICCV 2017.
[3] Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation", 2015.
[4] Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and Super-Resolution", 2016.
[5] Shrivastava et al., "Learning from Simulated and Unsupervised Images through Adversarial
    Training", CVPR 2017: the image history [2] uses.

NOTE: the U-Net halves the resolution while it can (both sides even, at most 8 times: the paper's
256×256 reaches 1×1), so it is sized from the image; the PatchGAN's depth is ``d_layers`` (3: the
paper's 70×70 patches) and must leave at least one patch.
NOTE: the generator and discriminator steps each run their own generator forward pass (the
discriminator's without gradients), so D's fakes come from a second dropout draw; [1]'s code reuses
one forward. Real images are dequantised (uniform noise of one level) before a discriminator sees
them, as in genlib's GANs, so that discreteness does not give them away.
NOTE: ``translate`` runs the generators in eval mode (batch norm's running statistics, no dropout): a
deterministic map. [1] keeps dropout and the test batch's statistics at test time, for noise; with
batches of one, ``model.norm: instance`` keeps training and translation alike.
NOTE: CycleGAN's learning-rate decay over the second half of training [2] is not applied; the
image history is per worker, and a checkpoint saves rank 0's, which every rank resumes with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlib.config import ModelConfig, TrainConfig, at_least, between, checked, name, one_of
from genlib.data.kinds import PAIRED, UNPAIRED, check_direction
from genlib.models.base import MODELS, TRANSLATE, Batch, GenerativeModel, TrainingContext, to_unit
from genlib.models.layers import mmd2

# (discriminator loss from real and fake logits, generator loss from fake logits), as [1] and [2] write them:
# the GAN loss as binary cross-entropy (G's non-saturating form), least squares as (D(x) − 1)² + D(G(x))² for D
# and (D(G(x)) − 1)² for G. Each discriminator's loss is then halved, as both papers do.
TRANSLATION_LOSSES = {
    "non-saturating": (lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(), lambda f: F.softplus(-f).mean()),
    "lsgan": (lambda r, f: (r - 1).pow(2).mean() + f.pow(2).mean(), lambda f: (f - 1).pow(2).mean()),
}
NORMS = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d}


def halvings(h: int, w: int, most: int = 8) -> int:
    """How many times both sides halve exactly, at most ``most``."""
    steps = 0
    while steps < most and h % 2 == 0 and w % 2 == 0 and min(h, w) > 1:
        h, w, steps = h // 2, w // 2, steps + 1
    return steps


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) convolution weights, N(1, 0.02) norm scales, zero biases, as [1, 2]."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class UNet(nn.Module):
    """Encoder C64-C128-C256-C512-… (4×4 stride-2 convolutions, LeakyReLU 0.2, batch norm but on the first
    and innermost layers) and a mirrored decoder whose layers also take the encoder's output at their
    resolution; dropout in the three innermost decoder layers [1]. Floats in [-1, 1] → [-1, 1]."""

    def __init__(self, in_channels: int, out_channels: int, size: tuple[int, int], base: int, dropout: float,
                 norm: type[nn.Module] = nn.BatchNorm2d):
        super().__init__()
        depth = halvings(*size)
        if depth < 1:
            raise ValueError(f"the U-Net needs images it can halve at least once, got {size[0]}×{size[1]}")
        chans = [base * 2 ** min(i, 3) for i in range(depth)]  # encoder outputs, capped at 8× base
        self.down = nn.ModuleList()
        for i in range(depth):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            inner = 0 < i < depth - 1
            layers.append(nn.Conv2d(in_channels if i == 0 else chans[i - 1], chans[i], 4, 2, 1, bias=not inner))
            if inner:
                layers.append(norm(chans[i]))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):  # maps resolution level i + 1 to level i
            outer = i == 0
            width = chans[i] * (1 if i == depth - 1 else 2)
            layers = [nn.ReLU(), nn.ConvTranspose2d(width, out_channels if outer else chans[i - 1], 4, 2, 1, bias=outer)]
            if outer:
                layers.append(nn.Tanh())
            else:
                layers.append(norm(chans[i - 1]))
                if depth - 1 - i < 3 and dropout > 0:
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        for j, layer in enumerate(self.up):
            x = layer(x if j == 0 else torch.cat([x, skips[-1 - j]], 1))
        return x


class PatchGAN(nn.Module):
    """C64-C128-C256-C512 (4×4 convolutions, the first ``layers`` with stride 2, LeakyReLU 0.2, norm but on
    the first) and a 1-channel convolution: one logit per overlapping patch (70×70 with 3 layers) [1]."""

    def __init__(self, in_channels: int, size: tuple[int, int], base: int, layers: int, norm: type[nn.Module]):
        super().__init__()
        side = min(size) // 2 ** layers - 2
        if side < 1:
            most = max(n for n in range(0, 9) if min(size) // 2 ** n - 2 >= 1) if min(size) >= 3 else None
            raise ValueError(f"a PatchGAN of {layers} stride-2 layers leaves no patch of a {size[0]}×{size[1]} image; "
                             f"set model.d_layers to at most {most}")
        mods: list[nn.Module] = [nn.Conv2d(in_channels, base, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = base
        for n in range(1, layers + 1):
            out = base * 2 ** min(n, 3)
            mods += [nn.Conv2d(ch, out, 4, 2 if n < layers else 1, 1, bias=False), norm(out), nn.LeakyReLU(0.2)]
            ch = out
        if layers == 0:
            mods = [nn.Conv2d(in_channels, base, 4, 1, 1), nn.LeakyReLU(0.2)]
        mods.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 1, h, w) patch logits


class ResnetBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch), nn.ReLU(),
                                  nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch))

    def forward(self, x):
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """c7s1-64, d128, d256, ``blocks`` residual blocks R256, u128, u64, c7s1-C [2, 4]: instance norm,
    reflection padding. Floats in [-1, 1] → [-1, 1]."""

    def __init__(self, in_channels: int, out_channels: int, size: tuple[int, int], base: int, blocks: int):
        super().__init__()
        if size[0] % 4 or size[1] % 4 or min(size) < 8:
            raise ValueError(f"CycleGAN's generator halves the image twice: it needs sides divisible by 4 and at "
                             f"least 8, got {size[0]}×{size[1]} (set data.image_size)")
        mods: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, base, 7), nn.InstanceNorm2d(base), nn.ReLU()]
        for k in range(2):
            mods += [nn.Conv2d(base * 2 ** k, base * 2 ** (k + 1), 3, 2, 1), nn.InstanceNorm2d(base * 2 ** (k + 1)),
                     nn.ReLU()]
        mods += [ResnetBlock(base * 4) for _ in range(blocks)]
        for k in (2, 1):
            mods += [nn.ConvTranspose2d(base * 2 ** k, base * 2 ** (k - 1), 3, 2, 1, output_padding=1),
                     nn.InstanceNorm2d(base * 2 ** (k - 1)), nn.ReLU()]
        mods += [nn.ReflectionPad2d(3), nn.Conv2d(base, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*mods)
        init_weights(self)

    def forward(self, x):
        return self.net(x)


class ImagePool(nn.Module):
    """The last ``capacity`` generated images [5]: each new image goes in while there is room; once full,
    with probability ½ a stored image is returned in its place (and replaced by it). Its content is
    training state: ``get_extra_state`` puts it in the state dict, so checkpoints save and restore it."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.images: list[torch.Tensor] = []

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.capacity == 0:
            return images
        out = []
        for image in images.detach().float():
            if len(self.images) < self.capacity:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(()) < 0.5:
                k = int(torch.randint(len(self.images), ()))
                out.append(self.images[k].to(image.device))
                self.images[k] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def get_extra_state(self) -> torch.Tensor:
        if not self.images:
            return torch.zeros(0)
        return torch.stack([image.cpu() for image in self.images])

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.images = [image.clone() for image in state] if state.numel() else []


def _to_levels(y: torch.Tensor, levels: int) -> torch.Tensor:
    return ((y + 1) * (levels - 1) / 2).clamp(0, levels - 1).round().to(torch.uint8)


def _dequantize(x: torch.Tensor, levels: int) -> torch.Tensor:
    unit = to_unit(x, levels)
    return unit + (torch.rand_like(unit) - 0.5) * (2.0 / (levels - 1))


class _Translator(GenerativeModel):
    """What pix2pix and CycleGAN share: Adam(β₁ 0.5) per player and quantising translations."""

    capabilities = frozenset({TRANSLATE})
    ddp_options = {"find_unused_parameters": True}  # each forward trains one player

    def generator_for(self, direction: str) -> nn.Module:
        raise NotImplementedError

    @torch.no_grad()
    def translate(self, x: torch.Tensor, direction: str = "a2b", generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 images of the source domain (in its levels) → uint8 images of the target domain (its levels)."""
        if direction not in self.directions:
            raise ValueError(f"{type(self).__name__} translates {list(self.directions)}, not {direction!r}")
        source, target = check_direction(direction)
        (shape, levels), (_, out_levels) = self.domain_spec(source), self.domain_spec(target)
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"{direction} translates images of shape {shape}, got {tuple(x.shape[1:])}")
        net = self.generator_for(direction)
        was_training = net.training
        net.eval()
        out = _to_levels(net(to_unit(x.to(self.device), levels)), out_levels)
        net.train(was_training)
        return out


@dataclass(frozen=True)
class Pix2PixConfig(ModelConfig):
    family: str = checked("pix2pix", name())
    generator_channels: int = checked(64, at_least(1))  # U-Net channels at full resolution (64 in [1])
    discriminator_channels: int = checked(64, at_least(1))  # PatchGAN's first layer (64 in [1])
    d_layers: int = checked(3, between(0, 8))  # PatchGAN's stride-2 layers: 3 gives [1]'s 70×70 patches
    loss: str = checked("non-saturating", one_of(*TRANSLATION_LOSSES))  # the adversarial loss ([1]: the GAN's, as BCE)
    l1_weight: float = checked(100.0, at_least(0))  # λ of the L1 term (100 in [1]; 0: a plain conditional GAN)
    adversarial_weight: float = checked(1.0, at_least(0))  # of the GAN term (0: L1 alone, [1]'s ablation)
    dropout: float = checked(0.5, between(0, 1, high_open=True))  # in the three innermost decoder layers
    # "batch" as [1]; "instance" for batches of one (there batch norm is instance norm while training, and
    # translating with its running statistics would not be)
    norm: str = checked("batch", one_of(*NORMS))


@MODELS.register("pix2pix")
class Pix2Pix(_Translator):
    """Paired A → B translation [1]: U-Net G, conditional PatchGAN D, adversarial + λ·L1 loss."""

    config_class = Pix2PixConfig
    data_kinds = frozenset({PAIRED})
    directions = ("a2b",)

    def __init__(self, config: Pix2PixConfig, shape, levels, num_classes=None, source=None):
        super().__init__(config, shape, levels, num_classes, source)
        (ca, ha, wa), (cb, hb, wb) = self.source_shape, self.shape
        if (ha, wa) != (hb, wb):
            raise ValueError(f"pix2pix maps images to images of the same size; domain A is {ha}×{wa}, B {hb}×{wb}")
        norm = NORMS[config.norm]
        self.generator = UNet(ca, cb, (hb, wb), config.generator_channels, config.dropout, norm)
        self.discriminator = PatchGAN(ca + cb, (hb, wb), config.discriminator_channels, config.d_layers, norm)

    def generator_for(self, direction: str) -> nn.Module:
        return self.generator

    def configure_optimizers(self, train: TrainConfig):
        return {name: torch.optim.Adam(net.parameters(), lr=train.lr, betas=(0.5, 0.999))
                for name, net in (("generator", self.generator), ("discriminator", self.discriminator))}

    def forward(self, phase: str, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One player's loss (``phase`` "d" or "g") on a batch of pairs (uint8 a, b)."""
        d_loss, g_loss = TRANSLATION_LOSSES[self.config.loss]
        condition = to_unit(a, self.source_levels)
        if phase == "d":  # [1] halves D's objective, slowing D relative to G
            with torch.no_grad():
                fake = self.generator(condition)
            real = _dequantize(b, self.levels)
            loss = 0.5 * d_loss(self.discriminator(torch.cat([condition, real], 1)),
                                self.discriminator(torch.cat([condition, fake], 1)))
            return loss, {}
        fake = self.generator(condition)
        adversarial = g_loss(self.discriminator(torch.cat([condition, fake], 1)))
        l1 = (fake - to_unit(b, self.levels)).abs().mean()
        loss = self.config.adversarial_weight * adversarial + self.config.l1_weight * l1
        return loss, {"g_adv": adversarial.detach(), "l1": l1.detach()}

    def training_step(self, batch: Batch, optimizers, context: TrainingContext) -> dict[str, float]:
        d_loss, _ = self.run("d", batch.source, batch.x)
        self.optimize(optimizers["discriminator"], d_loss)
        g_loss, parts = self.run("g", batch.source, batch.x)
        self.optimize(optimizers["generator"], g_loss)
        return {"loss": d_loss.item() + g_loss.item(), "d_loss": d_loss.item(), "g_loss": g_loss.item(),
                **{k: v.item() for k, v in parts.items()}}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        """Mean L1 of the translations to the true targets, in [0, 1] units."""
        fake = self.translate(batch.source)
        l1 = ((fake.float() - batch.x.float()).abs() / (self.levels - 1)).mean().item()
        return {"loss": l1, "l1": l1}


@dataclass(frozen=True)
class CycleGANConfig(ModelConfig):
    family: str = checked("cyclegan", name())
    generator_channels: int = checked(64, at_least(1))  # ResNet generator's first layer (64 in [2])
    res_blocks: int = checked(9, at_least(0))  # residual blocks (9 for 256×256, 6 for 128×128 in [2])
    discriminator_channels: int = checked(64, at_least(1))
    d_layers: int = checked(3, between(0, 8))  # PatchGAN's stride-2 layers (3: 70×70 patches)
    loss: str = checked("lsgan", one_of(*TRANSLATION_LOSSES))  # least squares in [2]
    cycle_weight: float = checked(10.0, at_least(0))  # λ of each direction's cycle loss
    identity_weight: float = checked(0.5, at_least(0))  # identity loss weight, as a share of λ (0 disables)
    pool_size: int = checked(50, at_least(0))  # generated images each discriminator's history holds (0: none)


@MODELS.register("cyclegan")
class CycleGAN(_Translator):
    """Unpaired A ↔ B translation [2]: two generators, two discriminators, cycle and identity losses."""

    config_class = CycleGANConfig
    data_kinds = frozenset({UNPAIRED, PAIRED})  # paired data trains it too: it ignores the pairing
    directions = ("a2b", "b2a")

    def __init__(self, config: CycleGANConfig, shape, levels, num_classes=None, source=None):
        super().__init__(config, shape, levels, num_classes, source)
        (ca, ha, wa), (cb, hb, wb) = self.source_shape, self.shape
        if (ha, wa) != (hb, wb):
            raise ValueError(f"CycleGAN maps images to images of the same size; domain A is {ha}×{wa}, B {hb}×{wb}")
        if config.identity_weight > 0 and ca != cb:
            raise ValueError(f"the identity loss feeds each domain's images to the other's generator: domain A has "
                             f"{ca} channels, B {cb}; set model.identity_weight=0")
        size = (hb, wb)
        self.gen_ab = ResnetGenerator(ca, cb, size, config.generator_channels, config.res_blocks)
        self.gen_ba = ResnetGenerator(cb, ca, size, config.generator_channels, config.res_blocks)
        self.disc_a = PatchGAN(ca, size, config.discriminator_channels, config.d_layers, nn.InstanceNorm2d)
        self.disc_b = PatchGAN(cb, size, config.discriminator_channels, config.d_layers, nn.InstanceNorm2d)
        self.pool_a, self.pool_b = ImagePool(config.pool_size), ImagePool(config.pool_size)

    def generator_for(self, direction: str) -> nn.Module:
        return self.gen_ab if direction == "a2b" else self.gen_ba

    def configure_optimizers(self, train: TrainConfig):
        generators = [*self.gen_ab.parameters(), *self.gen_ba.parameters()]
        discriminators = [*self.disc_a.parameters(), *self.disc_b.parameters()]
        return {"generators": torch.optim.Adam(generators, lr=train.lr, betas=(0.5, 0.999)),
                "discriminators": torch.optim.Adam(discriminators, lr=train.lr, betas=(0.5, 0.999))}

    def forward(self, phase: str, a: torch.Tensor, b: torch.Tensor, fake_a: torch.Tensor | None = None,
                fake_b: torch.Tensor | None = None):
        """``phase`` "g": (the generators' loss, its parts, the fakes for the pools); "d": (the
        discriminators' loss, {}, None) on real images and the pooled fakes ``fake_a``, ``fake_b``."""
        d_loss, g_loss = TRANSLATION_LOSSES[self.config.loss]
        real_a, real_b = to_unit(a, self.source_levels), to_unit(b, self.levels)
        if phase == "d":  # [2] halves each discriminator's objective
            loss = 0.5 * d_loss(self.disc_a(_dequantize(a, self.source_levels)), self.disc_a(fake_a)) + \
                0.5 * d_loss(self.disc_b(_dequantize(b, self.levels)), self.disc_b(fake_b))
            return loss, {}, None
        to_b, to_a = self.gen_ab(real_a), self.gen_ba(real_b)
        adversarial = g_loss(self.disc_b(to_b)) + g_loss(self.disc_a(to_a))
        cycle = (self.gen_ba(to_b) - real_a).abs().mean() + (self.gen_ab(to_a) - real_b).abs().mean()
        loss = adversarial + self.config.cycle_weight * cycle
        parts = {"g_adv": adversarial.detach(), "cycle_l1": cycle.detach()}
        if self.config.identity_weight > 0:
            identity = (self.gen_ab(real_b) - real_b).abs().mean() + (self.gen_ba(real_a) - real_a).abs().mean()
            loss = loss + self.config.identity_weight * self.config.cycle_weight * identity
            parts["identity_l1"] = identity.detach()
        return loss, parts, (to_a.detach(), to_b.detach())

    def training_step(self, batch: Batch, optimizers, context: TrainingContext) -> dict[str, float]:
        g_loss, parts, (to_a, to_b) = self.run("g", batch.source, batch.x)
        self.optimize(optimizers["generators"], g_loss)
        d_loss, _, _ = self.run("d", batch.source, batch.x, self.pool_a.query(to_a), self.pool_b.query(to_b))
        self.optimize(optimizers["discriminators"], d_loss)
        return {"loss": d_loss.item() + g_loss.item(), "d_loss": d_loss.item(), "g_loss": g_loss.item(),
                **{k: v.item() for k, v in parts.items()}}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        """``loss``: pixel MMD² of the translations to the real images of their target domain, both ways
        (as the GANs' validation); the cycle error alongside."""
        to_b, to_a = self.translate(batch.source, "a2b"), self.translate(batch.x, "b2a")
        mmd = mmd2(to_unit(to_b, self.levels).flatten(1), to_unit(batch.x, self.levels).flatten(1)) + \
            mmd2(to_unit(to_a, self.source_levels).flatten(1), to_unit(batch.source, self.source_levels).flatten(1))
        back_a, back_b = self.translate(to_b, "b2a"), self.translate(to_a, "a2b")
        cycle = ((back_a.float() - batch.source.float()).abs() / (self.source_levels - 1)).mean() + \
            ((back_b.float() - batch.x.float()).abs() / (self.levels - 1)).mean()
        return {"loss": mmd, "mmd2": mmd, "cycle_l1": cycle.item() / 2}


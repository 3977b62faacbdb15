"""Adversarial models: DCGAN-style generator and discriminator [1] sized from the image shape, with
the minimax and non-saturating losses of [2], least squares [3], WGAN-GP [4] and hinge [5]
chosen by config, a gradient penalty on D at interpolates [4], around the real data (DRAGAN
[7]) or at the real data (R1 [8], lazily) usable with any loss, optional class conditioning (conditional batch norm in G, a
projection discriminator [6]) and an exponential moving average of the generator weights for
sampling.

[1] Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep Convolutional
    GANs", ICLR 2016.
[2] Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014.
[3] Mao et al., "Least Squares Generative Adversarial Networks", ICCV 2017.
[4] Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017.
[5] Lim & Ye, "Geometric GAN", 2017; Miyato et al., "Spectral Normalization for GANs", ICLR 2018.
[6] Miyato & Koyama, "cGANs with Projection Discriminator", ICLR 2018.
[7] Kodali, Abernethy, Hays & Kira, "On Convergence and Stability of GANs" (DRAGAN), 2017:
    λ·E[(‖∇D(x̂)‖ − 1)²] at x̂ = x + α·δ, δ ~ 0.5·std(x)·U[0, 1] per pixel, α ~ U[0, 1] per image,
    λ = 10 (the authors' code).
[8] Mescheder, Geiger & Nowozin, "Which Training Methods for GANs do actually Converge?", ICML
    2018: the R1 penalty γ/2·E[‖∇D(x)‖²] at the real data; applied lazily, every k-th
    discriminator step with its weight multiplied by k, as in StyleGAN2 (Karras et al., CVPR 2020).

NOTE: the discriminator has no batch norm (as [4] requires for the gradient penalty), whatever
the loss; real images are dequantised with uniform noise of one level's width so that D cannot
tell them from the generator's continuous outputs by their discreteness alone.
NOTE: [7] perturbs the raw real images; here the perturbation is around the dequantised real
images D sees (x in [−1, 1] plus uniform noise of one level), and std(x) is that batch's.
NOTE: GANs have no likelihood. ``validation_step`` reports, as ``loss``, the unbiased squared
MMD (Gaussian kernel, median bandwidth) between EMA-generator samples and the held-out batch in
pixel space: a crude but honest sample-quality score that checkpoint selection can use.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlib.config import ANY, ModelConfig, TrainConfig, at_least, between, checked, name, one_of
from genlib.models.base import (
    INTERPOLATE,
    MODELS,
    PATH_LENGTH,
    SAMPLE,
    Batch,
    GenerativeModel,
    TrainingContext,
    to_unit,
)
from genlib.models.layers import downsample_steps, latent_path, mmd2, noise_device, slerp

PENALTIES = ("auto", "none", "interpolates", "dragan", "r1")

# --------------------------------------------------------------------------- losses
# Each entry: (discriminator loss from real and fake logits, generator loss from fake logits).

def _minimax_g(fake):
    return -F.softplus(fake).mean()  # minimise log(1 − D(G(z)))


LOSSES: dict[str, tuple[Callable, Callable]] = {
    "minimax": (lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(), _minimax_g),
    "non-saturating": (lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
                       lambda f: F.softplus(-f).mean()),
    "lsgan": (lambda r, f: 0.5 * ((r - 1).pow(2).mean() + f.pow(2).mean()),
              lambda f: 0.5 * (f - 1).pow(2).mean()),
    "wgan-gp": (lambda r, f: f.mean() - r.mean(), lambda f: -f.mean()),
    "hinge": (lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(), lambda f: -f.mean()),
}


@dataclass(frozen=True)
class GANConfig(ModelConfig):
    family: str = checked("gan", name())
    latent_dim: int = checked(64, at_least(1))  # size of z
    hidden: int = checked(64, at_least(1))  # channels at full resolution; doubled at each halving
    loss: str = checked("non-saturating", one_of(*LOSSES))  # minimax, non-saturating, lsgan, wgan-gp or hinge
    n_critic: int = checked(1, at_least(1))  # discriminator updates per generator update (5 is usual for wgan-gp)
    # gradient penalty on D: "interpolates" between real and fake [4], "dragan" around the real data [7], "r1" at
    # the real data [8] (γ = gp_weight), "none";
    # "auto": interpolates with the wgan-gp loss, none otherwise
    penalty: str = checked("auto", one_of(*PENALTIES))
    gp_weight: float = checked(10.0, at_least(0))  # λ of the gradient penalty (10 in [4] and [7])
    penalty_every: int = checked(1, at_least(1))  # lazy regularisation: the penalty on every k-th D step, weighted ×k
    drift: float = checked(0.0, at_least(0))  # ε of a drift term ε·E[D(real)²] that keeps D's scores near 0 (ProGAN: 0.001)
    ema: float = checked(0.999, between(0, 1, high_open=True))  # decay of the generator's moving average used for sampling; 0 disables
    conditional: bool = checked(False, ANY)  # class-conditional: conditional batch norm in G, projection in D


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are learned per class (plain affine when unconditional)."""

    def __init__(self, channels: int, num_classes: int | None):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=num_classes is None)
        self.embed = None
        if num_classes:
            self.embed = nn.Embedding(num_classes, 2 * channels)
            nn.init.ones_(self.embed.weight[:, :channels])
            nn.init.zeros_(self.embed.weight[:, channels:])

    def forward(self, x, labels):
        out = self.bn(x)
        if self.embed is None:
            return out
        gamma, beta = self.embed(labels)[:, :, None, None].chunk(2, dim=1)
        return gamma * out + beta


class Generator(nn.Module):
    def __init__(self, cfg: GANConfig, shape, num_classes):
        super().__init__()
        c, h, _ = shape
        self.steps = downsample_steps(h)
        self.base, self.ch = h >> self.steps, cfg.hidden * 2 ** self.steps
        self.fc = nn.Linear(cfg.latent_dim, self.ch * self.base ** 2)
        chans = [cfg.hidden * 2 ** (self.steps - i) for i in range(self.steps + 1)]  # ch … hidden
        self.norms = nn.ModuleList(ConditionalBatchNorm2d(ch, num_classes) for ch in chans)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1) for a, b in zip(chans, chans[1:]))
        self.out = nn.Conv2d(chans[-1], c, 3, padding=1)

    def forward(self, z, labels=None):
        h = self.fc(z).view(-1, self.ch, self.base, self.base)
        for norm, up in zip(self.norms, self.ups):
            h = up(F.relu(norm(h, labels)))
        return torch.tanh(self.out(F.relu(self.norms[-1](h, labels))))  # (B, C, H, W) in [-1, 1]


class Discriminator(nn.Module):
    def __init__(self, cfg: GANConfig, shape, num_classes):
        super().__init__()
        c, h, _ = shape
        steps = downsample_steps(h)
        layers: list[nn.Module] = [nn.Conv2d(c, cfg.hidden, 3, padding=1), nn.LeakyReLU(0.2)]
        ch = cfg.hidden
        for _ in range(steps):
            layers += [nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch *= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        width = ch * (h >> steps) ** 2
        self.out = nn.Linear(width, 1)
        self.project = nn.Embedding(num_classes, width) if num_classes else None

    def forward(self, x, labels=None):
        feats = self.features(x)
        logit = self.out(feats).squeeze(1)
        if self.project is not None:  # projection discriminator [6]: + <embed(y), φ(x)>
            logit = logit + (self.project(labels) * feats).sum(1)
        return logit  # (B,)


@MODELS.register("gan")
class GAN(GenerativeModel):
    config_class = GANConfig
    capabilities = frozenset({SAMPLE, INTERPOLATE, PATH_LENGTH})
    path_spaces: tuple[str, ...] = ("z",)  # latent spaces path_pairs walks
    # Each forward uses one network: the other's parameters get no gradient in that pass.
    ddp_options = {"find_unused_parameters": True}

    def __init__(self, config: GANConfig, shape, levels, num_classes=None):
        super().__init__(config, shape, levels, num_classes)
        if self.shape[1] != self.shape[2]:
            raise ValueError(f"the GAN expects square images, got {self.shape[1]}×{self.shape[2]}")
        self.generator, self.discriminator = self.networks(num_classes if config.conditional else None)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if config.ema > 0 else None
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    def networks(self, classes: int | None) -> tuple[nn.Module, nn.Module]:
        """The generator and the discriminator (``classes``: condition on that many, or None)."""
        return Generator(self.config, self.shape, classes), Discriminator(self.config, self.shape, classes)

    def configure_optimizers(self, train: TrainConfig):
        betas = (0.0, 0.9) if self.config.loss == "wgan-gp" else (0.5, 0.999)
        return {"generator": torch.optim.Adam(self.generator.parameters(), lr=train.lr, betas=betas),
                "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=train.lr, betas=betas)}

    def forward(self, phase: str, x: torch.Tensor | None, z: torch.Tensor, labels,
                penalty_scale: float = 1.0) -> torch.Tensor:
        """One loss per call — ``phase`` "d" or "g" — so each backward pairs with one DDP forward.
        ``penalty_scale``: the gradient penalty's multiplier this step (0: none; lazy regularisation)."""
        d_loss, g_loss = LOSSES[self.config.loss]
        if phase == "g":
            return g_loss(self.discriminator(self.generator(z, labels), labels))
        with torch.no_grad():
            fake = self.generator(z, labels)
        real = self._dequantize(x)
        real_scores = self.discriminator(real, labels)
        loss = d_loss(real_scores, self.discriminator(fake, labels))
        if self.config.drift > 0:
            loss = loss + self.config.drift * real_scores.pow(2).mean()
        penalty, weight = self.penalty, self.config.gp_weight * penalty_scale
        if weight == 0:
            return loss
        if penalty == "interpolates":
            loss = loss + weight * self._gradient_penalty(real, fake, labels)
        elif penalty == "dragan":
            loss = loss + weight * self.dragan_penalty(real, labels)
        elif penalty == "r1":
            loss = loss + weight / 2 * self.r1_penalty(real, labels)
        return loss

    @property
    def penalty(self) -> str:
        """The gradient penalty in force: ``model.penalty`` with "auto" resolved."""
        if self.config.penalty != "auto":
            return self.config.penalty
        return "interpolates" if self.config.loss == "wgan-gp" else "none"

    def _dequantize(self, x: torch.Tensor) -> torch.Tensor:
        unit = to_unit(x, self.levels)
        return unit + (torch.rand_like(unit) - 0.5) * (2.0 / (self.levels - 1))

    def _gradient_penalty(self, real, fake, labels) -> torch.Tensor:
        t = torch.rand(len(real), 1, 1, 1, device=real.device)
        return self._unit_gradient_penalty(t * real + (1 - t) * fake, labels)

    def dragan_penalty(self, real: torch.Tensor, labels) -> torch.Tensor:
        """E(‖∇D(x̂)‖ − 1)² at x̂ = x + α·δ around the real batch [7]: α ~ U[0, 1] per image, then
        δ = 0.5·std(x)·u with u ~ U[0, 1] per pixel (drawn in that order)."""
        alpha = torch.rand(len(real), 1, 1, 1, device=real.device)
        delta = 0.5 * real.std() * torch.rand_like(real)
        return self._unit_gradient_penalty(real + alpha * delta, labels)

    def r1_penalty(self, real: torch.Tensor, labels) -> torch.Tensor:
        """E‖∇D(x)‖² at the real batch [8] (the caller weights it by γ/2)."""
        return self._input_gradient(real, labels).pow(2).sum(dim=1).mean()

    def _unit_gradient_penalty(self, points: torch.Tensor, labels) -> torch.Tensor:
        return (self._input_gradient(points, labels).norm(dim=1) - 1).pow(2).mean()

    def _input_gradient(self, points: torch.Tensor, labels) -> torch.Tensor:
        """∇ₓD(x) at ``points``, flattened per image, with its graph kept (a penalty trains D through it)."""
        points = points.detach().requires_grad_(True)
        grad, = torch.autograd.grad(self.discriminator(points, labels).sum(), points, create_graph=True)
        return grad.flatten(1)

    def training_step(self, batch: Batch, optimizers, context: TrainingContext) -> dict[str, float]:
        labels = self.class_labels(batch.labels, len(batch.x))
        z = torch.randn(len(batch.x), self.config.latent_dim, device=batch.x.device)
        every = self.config.penalty_every  # lazy: every k-th step, weighted ×k
        d_loss = self.run("d", batch.x, z, labels, float(every) if context.step % every == 0 else 0.0)
        self.optimize(optimizers["discriminator"], d_loss)
        metrics = {"d_loss": d_loss.item()}
        if context.step % self.config.n_critic == 0:
            g_loss = self.run("g", None, torch.randn_like(z), labels)
            self.optimize(optimizers["generator"], g_loss)
            self._update_ema()
            metrics["g_loss"] = g_loss.item()
        metrics["loss"] = d_loss.item() + metrics.get("g_loss", 0.0)
        return metrics

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.generator_ema is None:
            return
        # Warm-up: early on the average follows the generator closely, so early samples are not
        # dominated by the random initial weights.
        n = int(self.ema_updates)
        decay = min(self.config.ema, (1 + n) / (10 + n))
        self.ema_updates += 1
        for avg, new in zip(self.generator_ema.parameters(), self.generator.parameters()):
            avg.lerp_(new, 1.0 - decay)
        for avg, new in zip(self.generator_ema.buffers(), self.generator.buffers()):
            avg.copy_(new)

    @property
    def sampler(self) -> Generator:
        return self.generator_ema if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        fake = self.generate(torch.randn(len(batch.x), self.config.latent_dim, device=batch.x.device),
                             self.class_labels(batch.labels, len(batch.x), default=True))
        mmd = mmd2(to_unit(batch.x, self.levels).flatten(1), fake.flatten(1))
        return {"loss": mmd, "mmd2": mmd}

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels=None) -> torch.Tensor:
        """Continuous images in [-1, 1] from latents, with the averaged generator."""
        was_training = self.sampler.training
        self.sampler.eval()
        out = self.sampler(z, labels)
        self.sampler.train(was_training)
        return out

    def to_levels(self, images: torch.Tensor) -> torch.Tensor:
        """Continuous images in [-1, 1] → floats in the level units the data has (not rounded)."""
        return ((images + 1) * (self.levels - 1) / 2).clamp(0, self.levels - 1)

    @torch.no_grad()
    def path_pairs(self, n: int, epsilon: float, space: str = "z", generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (float, level units) at t and t + ε, t ~ U[0, 1], on ``n`` spherical paths between two
        latents (the perceptual path length's pairs; labels: the classes in turn)."""
        if space not in self.path_spaces:
            raise ValueError(f"{type(self).__name__} walks paths in {list(self.path_spaces)}, not {space!r}")
        z0, z1 = self.latents(n, generator), self.latents(n, generator)
        t = torch.rand(n, 1, generator=generator, device=noise_device(generator)).to(self.device)
        labels = self.class_labels(None, n, default=True)
        return tuple(self.to_levels(self.generate(slerp(z0, z1, t + d), labels)) for d in (0, epsilon))

    def quantize(self, images: torch.Tensor) -> torch.Tensor:
        return self.to_levels(images).round().to(torch.uint8)

    def latents(self, n: int, generator=None) -> torch.Tensor:
        """``n`` draws of z ~ N(0, I), from ``generator`` (on its device), on the model's device."""
        return torch.randn(n, self.config.latent_dim, generator=generator, device=noise_device(generator)).to(self.device)

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None) -> torch.Tensor:
        z = self.latents(n, generator)
        return self.quantize(self.generate(z, self.class_labels(labels, n, default=True)))

    @torch.no_grad()
    def interpolate(self, rows: int = 8, steps: int = 8, generator=None) -> torch.Tensor:
        """``rows`` straight lines between random latents, ``steps`` images each: (rows·steps, C, H, W)."""
        z = latent_path(rows, steps, self.config.latent_dim, generator).to(self.device)
        labels = self.class_labels(None, rows, default=True)
        labels = None if labels is None else labels.repeat_interleave(steps)
        return self.quantize(self.generate(z, labels))

    @torch.no_grad()
    def latent_arithmetic(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, labels=None) -> torch.Tensor:
        """The image of mean(a) − mean(b) + mean(c), for three sets of latents (N_i, latent_dim)."""
        z = (a.mean(0) - b.mean(0) + c.mean(0))[None].to(self.device)
        return self.quantize(self.generate(z, self.class_labels(labels, 1, default=True)))

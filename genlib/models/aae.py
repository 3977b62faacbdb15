"""Adversarial autoencoder [1]: an autoencoder whose latent code is pushed towards a chosen prior
by a discriminator on the latent space, instead of by the VAE's KL term.

Each batch makes the three updates of [1]: the reconstruction phase (encoder and decoder minimise
−log p(x | E(x))), then the regularisation phase in two steps — the latent discriminator learns to
tell prior draws from codes E(x), and the encoder learns to fool it. The decoder is the VAE's: a
categorical over the dataset's ``levels`` for every sub-pixel, so reconstruction bits/dim mean
the same as the VAE's. Samples decode draws of the prior.

The AAE has no likelihood bound of its own, so it declares no ``log_prob``: the evaluation reports
its reconstruction bits/dim (``reconstruct``), the MMD between its aggregate posterior and the
prior (``latent_prior``), and the sample-quality metrics every family gets.

[1] Makhzani et al., "Adversarial Autoencoders", ICLR workshop 2016.

NOTE: the encoder is deterministic (the first of the three choices of q(z|x) in [1]).
NOTE: the encoder's adversarial loss is the non-saturating −log D(E(x)) rather than [1]'s
log(1 − D(E(x))), as GAN practice has it; the decoder is a categorical over the levels per
sub-pixel where [1] uses a sigmoid output on binarized or continuous MNIST.
NOTE: [1] trains with SGD and momentum; here all three updates use Adam at ``train.lr``, with
β₁ = 0.5 for the adversarial pair, as DCGAN-style training does.
NOTE: the mixture prior places its components on a circle of radius 4 in the first two latent
dimensions, standard deviation 0.5 in every dimension — [1]'s 2-D mixture of 10 Gaussians, with
the other dimensions N(0, 0.25). With ``conditional: true`` the component is the image's class
and the discriminator sees the class as a one-hot vector ([1], section 2.3): the code of a 3 is
pushed to the 3s' component, and sampling a class decodes draws of its component.
NOTE: the CPU-sized defaults (8 latents, 32 channels, a 128-unit discriminator) are smaller than
[1]'s 1000-unit networks.
NOTE: checkpoint selection uses the validation reconstruction loss (``loss``); ``latent_mmd``
is logged beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlib.config import ANY, ModelConfig, TrainConfig, at_least, checked, name, one_of
from genlib.models.base import (
    ENCODE,
    INTERPOLATE,
    LATENT_PRIOR,
    MODELS,
    RECONSTRUCT,
    SAMPLE,
    TRAVERSE,
    Batch,
    GenerativeModel,
    TrainingContext,
    to_unit,
)
from genlib.models.layers import (
    ConvDecoder,
    ConvEncoder,
    bits_per_dim,
    categorical_log_likelihood,
    categorical_mean,
    categorical_sample,
    latent_path,
    mmd2,
    noise_device,
    traversal_latents,
)

PRIORS = ("gaussian", "mixture")
RADIUS, SPREAD = 4.0, 0.5  # the mixture prior's circle and its components' standard deviation


@dataclass(frozen=True)
class AAEConfig(ModelConfig):
    family: str = checked("aae", name())
    latent_dim: int = checked(8, at_least(1))  # size of z
    hidden: int = checked(32, at_least(1))  # channels of the first conv layer; doubled at each halving of resolution
    prior: str = checked("gaussian", one_of(*PRIORS))  # gaussian: N(0, I); mixture: Gaussians on a circle
    components: int = checked(10, at_least(2))  # components of the mixture prior (conditional: one per class)
    disc_hidden: int = checked(128, at_least(1))  # units of each of the latent discriminator's two hidden layers
    conditional: bool = checked(False, ANY)  # class-conditional mixture prior (whatever `prior`): a class's codes go to its component


@MODELS.register("aae")
class AAE(GenerativeModel):
    config_class = AAEConfig
    capabilities = frozenset({SAMPLE, ENCODE, INTERPOLATE, TRAVERSE, RECONSTRUCT, LATENT_PRIOR})
    # Each phase's forward uses part of the networks: the rest gets no gradient in that pass.
    ddp_options = {"find_unused_parameters": True}

    def __init__(self, config: AAEConfig, shape, levels, num_classes=None):
        super().__init__(config, shape, levels, num_classes)
        c, h, w = self.shape
        if h != w:
            raise ValueError(f"the AAE expects square images, got {h}×{w}")
        mixture = config.prior == "mixture" or config.conditional
        if mixture and config.latent_dim < 2:
            raise ValueError(f"a mixture prior (prior: mixture, or conditional: true, which gives each class a "
                             f"component) needs latent_dim ≥ 2 (its circle), got {config.latent_dim}")
        self.classes = num_classes if config.conditional else 0
        self.encoder = ConvEncoder(c, h, config.hidden, config.latent_dim)
        self.decoder = ConvDecoder(config.latent_dim, h, config.hidden, c * levels)
        self.discriminator = nn.Sequential(
            nn.Linear(config.latent_dim + self.classes, config.disc_hidden), nn.ReLU(),
            nn.Linear(config.disc_hidden, config.disc_hidden), nn.ReLU(),
            nn.Linear(config.disc_hidden, 1))
        k = (self.classes or config.components) if mixture else 0
        means = torch.zeros(k, config.latent_dim)
        if k:
            angle = 2 * math.pi * torch.arange(k) / k
            means[:, 0], means[:, 1] = RADIUS * angle.cos(), RADIUS * angle.sin()
        self.register_buffer("means", means, persistent=False)  # a function of the config

    # -- the prior --------------------------------------------------------------------------

    def prior_sample(self, n: int, labels: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws of the prior (component = label for a conditional prior), (n, latent_dim)."""
        noise = noise_device(generator)
        eps = torch.randn(n, self.config.latent_dim, generator=generator, device=noise).to(self.device)
        if len(self.means) == 0:
            return eps
        if labels is None:
            labels = torch.randint(len(self.means), (n,), generator=generator, device=noise)
        return self.means[labels.to(self.device).long()] + SPREAD * eps

    def _critic(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.classes:
            z = torch.cat([z, F.one_hot(labels.long(), self.classes).float()], dim=1)
        return self.discriminator(z).squeeze(1)

    # -- training ---------------------------------------------------------------------------

    def configure_optimizers(self, train: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        adversarial = (0.5, 0.999)
        return {"autoencoder": torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=train.lr),
                "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=train.lr, betas=adversarial),
                "encoder": torch.optim.Adam(self.encoder.parameters(), lr=train.lr, betas=adversarial)}

    def encode_unit(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(to_unit(x, self.levels))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        c, h, w = self.shape
        return self.decoder(z).view(-1, c, self.levels, h, w)  # (B, C, L, H, W)

    def forward(self, phase: str, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """One loss per call, so that each backward pairs with one DDP forward: ``reconstruct`` (mean
        nats per image), ``discriminate`` (the discriminator's logistic loss, prior draws real) or
        ``regularize`` (the encoder's non-saturating loss against the discriminator)."""
        if phase == "reconstruct":
            return -categorical_log_likelihood(self.decode_logits(self.encode_unit(x)), x).mean()
        if phase == "discriminate":
            with torch.no_grad():
                codes = self.encode_unit(x)
            prior = self.prior_sample(len(x), labels)
            return F.softplus(-self._critic(prior, labels)).mean() + F.softplus(self._critic(codes, labels)).mean()
        if phase == "regularize":
            return F.softplus(-self._critic(self.encode_unit(x), labels)).mean()
        raise ValueError(f"unknown phase {phase!r}")

    def training_step(self, batch: Batch, optimizers, context: TrainingContext) -> dict[str, float]:
        labels = self.class_labels(batch.labels, len(batch.x))
        recon = self.run("reconstruct", batch.x, labels)
        self.optimize(optimizers["autoencoder"], recon)
        d_loss = self.run("discriminate", batch.x, labels)
        self.optimize(optimizers["discriminator"], d_loss)
        g_loss = self.run("regularize", batch.x, labels)
        self.optimize(optimizers["encoder"], g_loss)
        return {"loss": recon.item(), "recon_bpd": bits_per_dim(recon.item(), self.dims),
                "d_loss": d_loss.item(), "g_loss": g_loss.item()}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        labels = self.class_labels(batch.labels, len(batch.x))
        codes = self.encode_unit(batch.x)
        recon = -categorical_log_likelihood(self.decode_logits(codes), batch.x).mean().item()
        mmd = mmd2(codes, self.prior_sample(len(codes), labels)) if len(codes) > 1 else 0.0
        return {"loss": recon, "recon_bpd": bits_per_dim(recon, self.dims), "latent_mmd": mmd}

    # -- capabilities -----------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, x, labels=None) -> torch.Tensor:
        return self.encode_unit(x)

    @torch.no_grad()
    def reconstruction_log_prob(self, x, labels=None) -> torch.Tensor:
        """log p(x | z = E(x)), nats per image (B,)."""
        return categorical_log_likelihood(self.decode_logits(self.encode_unit(x)), x)

    @torch.no_grad()
    def latent_samples(self, x, labels=None, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The codes E(x) and as many prior draws (with the images' classes for a conditional prior)."""
        return self.encode_unit(x), self.prior_sample(len(x), self.class_labels(labels, len(x)), generator)

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None) -> torch.Tensor:
        z = self.prior_sample(n, self.class_labels(labels, n, default=True), generator)
        return categorical_sample(self.decode_logits(z), generator)

    @torch.no_grad()
    def interpolate(self, rows: int = 8, steps: int = 8, generator=None) -> torch.Tensor:
        """``rows`` straight lines between pairs of prior draws, ``steps`` decoder means each."""
        if len(self.means) == 0:
            z = latent_path(rows, steps, self.config.latent_dim, generator).to(self.device)
        else:
            ends = self.prior_sample(2 * rows, None, generator).view(2, rows, 1, -1)
            t = torch.linspace(0, 1, steps, device=self.device)[None, :, None]
            z = (ends[0] + t * (ends[1] - ends[0])).flatten(0, 1)
        return categorical_mean(self.decode_logits(z))

    @torch.no_grad()
    def traverse(self, steps: int = 8, span: float = 3.0, z: torch.Tensor | None = None) -> torch.Tensor:
        """Row d varies latent d from −span to +span, the others held at ``z`` (default 0): decoder means."""
        return categorical_mean(self.decode_logits(traversal_latents(self.config.latent_dim, steps, span, z,
                                                                     self.device)))

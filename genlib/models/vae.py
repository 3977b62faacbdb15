"""Variational autoencoders with a discrete decoder [1], and the β-VAE weighting [2].

The decoder is a categorical distribution over the dataset's ``levels`` for every sub-pixel, so
the ELBO and the IWAE bound [3] are bounds on the discrete log-likelihood and are directly
comparable in bits/dim with autoregressive models.

[1] Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
[2] Higgins et al., "β-VAE: Learning Basic Visual Concepts with a Constrained Variational
    Framework", ICLR 2017.
[3] Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
[4] Sohn, Lee & Yan, "Learning Structured Output Representation using Deep Conditional
    Generative Models", NeurIPS 2015 (the conditional VAE).

NOTE: [1] uses Bernoulli or Gaussian decoders; the categorical decoder here follows the discrete
likelihoods of the PixelCNN literature so that bits/dim mean the same thing for every family.
NOTE: ``log_prob(k=1)`` is the ELBO with β=1 whatever β training used: a bound needs β=1.
NOTE: the conditional VAE feeds the one-hot class to the encoder (as constant image planes) and
to the decoder (next to z); its bounds are on log p(x | y).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genlib.config import ANY, ModelConfig, at_least, checked, name, positive
from genlib.models.base import (
    ENCODE,
    INTERPOLATE,
    LATENT_PRIOR,
    LOG_PROB,
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
    importance_weighted_bound,
    latent_path,
    noise_device,
    posterior_and_prior,
    traversal_latents,
)


@dataclass(frozen=True)
class VAEConfig(ModelConfig):
    family: str = checked("vae", name())
    latent_dim: int = checked(16, at_least(1))  # size of z
    hidden: int = checked(32, at_least(1))  # channels of the first conv layer; doubled at each halving of resolution
    beta: float = checked(1.0, positive())  # weight of the KL term in training (β-VAE [2]); 1 is the true ELBO
    conditional: bool = checked(False, ANY)  # class-conditional VAE [4] (needs a labelled dataset)


@dataclass(frozen=True)
class BetaVAEConfig(VAEConfig):
    family: str = checked("beta-vae", name())
    beta: float = checked(4.0, positive())  # β > 1 trades reconstruction for a more factorised latent space [2]


class GaussianLatentModel(GenerativeModel):
    """What the VAE and PixelVAE share: a Gaussian posterior q(z|x) against a N(0, I) prior, the ELBO's
    terms, its metrics, the IWAE bound, ``encode`` and ``latent_samples``. A subclass implements
    ``q(x, labels) -> (mu, logvar)`` and ``decoded_log_likelihood(x, labels, z) -> log p(x|z)`` (B,)."""

    log_prob_exact = False
    iwae_chunk_images = 4096  # decoded images per chunk of the IWAE bound's samples

    def q(self, x: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decoded_log_likelihood(self, x: torch.Tensor, labels: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One draw z of N(mu, exp(logvar)) and the analytic KL to N(0, I) per image (B,)."""
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return z, 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)

    def _metrics(self, terms: dict[str, torch.Tensor], loss: torch.Tensor) -> dict[str, float]:
        nelbo = (terms["recon"] + terms["kl"]).mean().item()
        return {"loss": loss.item(), "recon": terms["recon"].mean().item(),
                "kl": terms["kl"].mean().item(), "elbo_bpd": bits_per_dim(nelbo, self.dims)}

    @torch.no_grad()
    def encode(self, x, labels=None) -> torch.Tensor:
        return self.q(x, labels)[0]

    @torch.no_grad()
    def latent_samples(self, x, labels=None, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """One draw of q(z|x) per image and as many of the prior N(0, I), (B, latent_dim) each."""
        return posterior_and_prior(*self.q(x, labels), generator)

    @torch.no_grad()
    def log_prob(self, x, labels=None, k: int = 1) -> torch.Tensor:
        """ELBO (k=1) or the IWAE bound with k importance samples, in nats per image (B,)."""
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        if k == 1:
            terms = self(x, labels)
            return -(terms["recon"] + terms["kl"])
        mu, logvar = self.q(x, labels)

        def log_likelihood(z: torch.Tensor, kk: int) -> torch.Tensor:
            return self.decoded_log_likelihood(x.repeat(kk, 1, 1, 1), None if labels is None else labels.repeat(kk), z)

        return importance_weighted_bound(mu, logvar, k, log_likelihood, chunk_images=self.iwae_chunk_images)


@MODELS.register("vae")
class VAE(GaussianLatentModel):
    config_class = VAEConfig
    capabilities = frozenset({SAMPLE, LOG_PROB, ENCODE, INTERPOLATE, TRAVERSE, RECONSTRUCT, LATENT_PRIOR})

    def __init__(self, config: VAEConfig, shape, levels, num_classes=None):
        super().__init__(config, shape, levels, num_classes)
        c, h, w = self.shape
        if h != w:
            raise ValueError(f"the VAE expects square images, got {h}×{w}")
        self.classes = num_classes if config.conditional else 0
        self.encoder = ConvEncoder(c + self.classes, h, config.hidden, 2 * config.latent_dim)
        self.decoder = ConvDecoder(config.latent_dim + self.classes, h, config.hidden, c * levels)

    # -- pieces -----------------------------------------------------------------------------

    def _onehot(self, labels: torch.Tensor | None, n: int, default: bool = False) -> torch.Tensor | None:
        labels = self.class_labels(labels, n, default)
        return None if labels is None else F.one_hot(labels.long(), self.classes).float()

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x[, y]), each (B, latent_dim); ``y`` one-hot or None."""
        inp = to_unit(x, self.levels)
        if y is not None:
            inp = torch.cat([inp, y[:, :, None, None].expand(-1, -1, *inp.shape[2:])], dim=1)
        mu, logvar = self.encoder(inp).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def q(self, x, labels):
        return self.posterior(x, self._onehot(labels, len(x)))

    def decoded_log_likelihood(self, x, labels, z):
        return categorical_log_likelihood(self.decode_logits(z, self._onehot(labels, len(x))), x)

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        c, h, w = self.shape
        if y is not None:
            z = torch.cat([z, y], dim=1)
        return self.decoder(z).view(-1, c, self.levels, h, w)  # (B, C, L, H, W)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-image terms of the negative ELBO with one reparameterised sample."""
        y = self._onehot(labels, len(x))
        z, kl = self.reparameterise(*self.posterior(x, y))
        return {"recon": -categorical_log_likelihood(self.decode_logits(z, y), x), "kl": kl}  # each (B,)

    # -- contract ---------------------------------------------------------------------------

    def training_step(self, batch: Batch, optimizers, context: TrainingContext) -> dict[str, float]:
        opt = optimizers["model"]
        terms = self.run(batch.x, batch.labels)
        loss = (terms["recon"] + self.config.beta * terms["kl"]).mean()
        self.optimize(opt, loss)
        return self._metrics(terms, loss)

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        terms = self(batch.x, batch.labels)
        # Validation reports the true negative ELBO (β=1) so checkpoints are chosen on the bound.
        return self._metrics(terms, (terms["recon"] + terms["kl"]).mean())

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None) -> torch.Tensor:
        noise = noise_device(generator)
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=noise).to(self.device)
        return categorical_sample(self.decode_logits(z, self._onehot(labels, n, default=True)), generator)

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's expected level per sub-pixel, rounded: (B, C, H, W) uint8 — the smooth
        picture of a latent, without the per-pixel sampling noise of ``sample``."""
        return categorical_mean(self.decode_logits(z, self._onehot(labels, len(z), default=True)))

    @torch.no_grad()
    def interpolate(self, rows: int = 8, steps: int = 8, generator=None) -> torch.Tensor:
        """``rows`` straight lines between random latents, ``steps`` decoder means each."""
        return self.decode_mean(latent_path(rows, steps, self.config.latent_dim, generator).to(self.device))

    @torch.no_grad()
    def traverse(self, steps: int = 8, span: float = 3.0, z: torch.Tensor | None = None) -> torch.Tensor:
        """Latent traversals: row d varies latent d from −span to +span, the others held at ``z``
        (default the prior mean). (latent_dim·steps, C, H, W) decoder means."""
        return self.decode_mean(traversal_latents(self.config.latent_dim, steps, span, z, self.device))

    @torch.no_grad()
    def reconstruction_log_prob(self, x, labels=None) -> torch.Tensor:
        """log p(x | z = the posterior mean), nats per image (B,)."""
        return self.decoded_log_likelihood(x, labels, self.encode(x, labels))


@MODELS.register("beta-vae")
class BetaVAE(VAE):
    """The VAE with β > 1 by default [2]; only the config differs."""

    config_class = BetaVAEConfig

"""Variational autoencoders with a discrete decoder [1], and the β-VAE weighting [2].

The decoder is a categorical distribution over the dataset's ``levels`` for every sub-pixel, so
the ELBO and the IWAE bound [3] are bounds on the discrete log-likelihood and are directly
comparable in bits/dim with autoregressive models.

[1] Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
[2] Higgins et al., "β-VAE: Learning Basic Visual Concepts with a Constrained Variational
    Framework", ICLR 2017.
[3] Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.

NOTE: [1] uses Bernoulli or Gaussian decoders; the categorical decoder here follows the discrete
likelihoods of the PixelCNN literature so that bits/dim mean the same thing for every family.
NOTE: ``log_prob(k=1)`` is the ELBO with β=1 whatever β training used: a bound needs β=1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from genlib.config import ModelConfig
from genlib.models import MODELS
from genlib.models.base import ENCODE, INTERPOLATE, LOG_PROB, Batch, GenerativeModel, to_unit
from genlib.models.layers import (ConvDecoder, ConvEncoder, bits_per_dim, categorical_log_likelihood,
                                  latent_path)


@dataclass(frozen=True)
class VAEConfig(ModelConfig):
    family: str = "vae"
    latent_dim: int = 16  # size of z
    hidden: int = 32  # channels of the first conv layer; doubled at each halving of resolution
    beta: float = 1.0  # weight of the KL term in training (β-VAE [2]); 1 is the true ELBO


@MODELS.register("vae")
class VAE(GenerativeModel):
    config_class = VAEConfig
    capabilities = frozenset({LOG_PROB, ENCODE, INTERPOLATE})
    log_prob_exact = False

    def __init__(self, config: VAEConfig, shape, levels, num_classes=None):
        super().__init__(config, shape, levels, num_classes)
        c, h, w = self.shape
        if h != w:
            raise ValueError(f"the VAE expects square images, got {h}×{w}")
        self.encoder = ConvEncoder(c, h, config.hidden, 2 * config.latent_dim)
        self.decoder = ConvDecoder(config.latent_dim, h, config.hidden, c * levels)

    # -- pieces -----------------------------------------------------------------------------

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x), each (B, latent_dim)."""
        mu, logvar = self.encoder(to_unit(x, self.levels)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        c, h, w = self.shape
        return self.decoder(z).view(-1, c, self.levels, h, w)  # (B, C, L, H, W)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image terms of the negative ELBO with one reparameterised sample."""
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = -categorical_log_likelihood(self.decode_logits(z), x)  # (B,)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)  # (B,) analytic KL to N(0, I)
        return {"recon": recon, "kl": kl}

    # -- contract ---------------------------------------------------------------------------

    def training_step(self, batch: Batch, optimizers, step: int) -> dict[str, float]:
        opt = optimizers["model"]
        terms = self.run(batch.x)
        loss = (terms["recon"] + self.config.beta * terms["kl"]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return self._metrics(terms, loss)

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        terms = self(batch.x)
        # Validation reports the true negative ELBO (β=1) so checkpoints are chosen on the bound.
        return self._metrics(terms, (terms["recon"] + terms["kl"]).mean())

    def _metrics(self, terms: dict[str, torch.Tensor], loss: torch.Tensor) -> dict[str, float]:
        nelbo = (terms["recon"] + terms["kl"]).mean().item()
        return {"loss": loss.item(), "recon": terms["recon"].mean().item(),
                "kl": terms["kl"].mean().item(), "elbo_bpd": bits_per_dim(nelbo, self.dims)}

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None) -> torch.Tensor:
        z = torch.randn(n, self.config.latent_dim, generator=generator, device="cpu").to(self.device)
        probs = self.decode_logits(z).softmax(dim=2)  # (n, C, L, H, W)
        flat = probs.movedim(2, -1).reshape(-1, self.levels).cpu()
        drawn = torch.multinomial(flat, 1, generator=generator).view(n, *self.shape)
        return drawn.to(torch.uint8)

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's expected level per sub-pixel, rounded: (B, C, H, W) uint8 — the smooth
        picture of a latent, without the per-pixel sampling noise of ``sample``."""
        probs = self.decode_logits(z).softmax(dim=2)  # (B, C, L, H, W)
        levels = torch.arange(self.levels, device=z.device, dtype=probs.dtype).view(1, 1, -1, 1, 1)
        return (probs * levels).sum(2).round().to(torch.uint8)

    @torch.no_grad()
    def interpolate(self, rows: int = 8, steps: int = 8, generator=None) -> torch.Tensor:
        """``rows`` straight lines between random latents, ``steps`` decoder means each."""
        return self.decode_mean(latent_path(rows, steps, self.config.latent_dim, generator).to(self.device))

    @torch.no_grad()
    def encode(self, x, labels=None) -> torch.Tensor:
        return self.posterior(x)[0]

    @torch.no_grad()
    def log_prob(self, x, labels=None, k: int = 1) -> torch.Tensor:
        """ELBO (k=1) or the IWAE bound with k importance samples, in nats per image (B,)."""
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        if k == 1:
            terms = self(x)
            return -(terms["recon"] + terms["kl"])
        mu, logvar = self.posterior(x)
        std = (0.5 * logvar).exp()
        # Chunk the k samples so memory stays bounded for large k.
        chunk = max(1, 4096 // max(1, len(x)))
        log_w = []
        for start in range(0, k, chunk):
            kk = min(chunk, k - start)
            eps = torch.randn(kk, *mu.shape, device=mu.device)  # (kk, B, Z)
            z = mu + eps * std
            log_q = _normal_log_density(eps).sum(-1) - std.log().sum(-1)  # (kk, B)
            log_p_z = _normal_log_density(z).sum(-1)
            logits = self.decode_logits(z.flatten(0, 1))
            log_px_z = categorical_log_likelihood(logits, x.repeat(kk, 1, 1, 1)).view(kk, -1)
            log_w.append(log_px_z + log_p_z - log_q)
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)


def _normal_log_density(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z.pow(2) + math.log(2 * math.pi))

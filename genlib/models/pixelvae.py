"""PixelVAE [1]: a VAE whose decoder is a small Gated PixelCNN [2] conditioned on the latent.

The latent z carries the global structure (which digit, its slant and weight); the
autoregressive decoder p(x | z) = Π p(x_i | x_<i, z) models the local detail that a factorised
decoder would blur. The decoder's sub-pixels are categoricals over the dataset's ``levels``, so
the ELBO and the IWAE bound [3] are bounds on the same discrete log-likelihood as every other
family's bits/dim. A decoder this strong can ignore z altogether (posterior collapse): training
warms the KL weight up linearly to 1 (step s of ``kl_warmup`` weighs it (s+1)/kl_warmup), and validation reports the KL in bits per data dimension and
the number of active latent units, so a collapse is visible in MLflow. (``active_units`` is
averaged over validation batches, each counting the latents whose posterior mean varies across
the batch by more than 0.01 — a per-batch version of [4]'s count over the whole data.)

[1] Gulrajani et al., "PixelVAE: A Latent Variable Model for Natural Images", ICLR 2017.
[2] van den Oord et al., "Conditional Image Generation with PixelCNN Decoders", NeurIPS 2016.
[3] Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
[4] Burda et al. [3], section 5.2: a latent unit is active when Cov_x(E_q[z_u | x]) > 0.01.

NOTE: [1] conditions the PixelCNN layers on z through a decoder that upsamples z to a feature
map; here that map (a transposed-convolution decoder as in the VAE) enters every gated layer
through its own 1×1 convolution, as a bias of both stacks (the h = V·s(z) term of [2]).
NOTE: [1] reports no KL warm-up schedule for its MNIST model; the linear warm-up over
``kl_warmup`` steps (Sønderby et al. 2016) is this implementation's guard against collapse.
NOTE: [1]'s MNIST results are on binarized images with Bernoulli outputs; here each sub-pixel is a
categorical over the dataset's levels, as for every genlib family, so the numbers are not [1]'s.
NOTE: the defaults are CPU-sized (4 gated layers of 32 channels, 16 latents), well below [1].
NOTE: ``complete`` encodes the image with its unobserved pixels set to level 0 and completes it
autoregressively given that latent; [1] does not define completion.
NOTE: ``interpolate`` and ``traverse`` decode greedily (the most likely level of each sub-pixel
in turn), so that the pictures show what the latent controls rather than sampling noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genlib.config import ModelConfig, at_least, checked, name, odd_at_least
from genlib.models.base import (
    COMPLETE,
    ENCODE,
    INTERPOLATE,
    LATENT_PRIOR,
    LOG_PROB,
    MODELS,
    SAMPLE,
    TRAVERSE,
    Batch,
    TrainingContext,
    to_unit,
)
from genlib.models.layers import (
    ConvDecoder,
    ConvEncoder,
    bits_per_dim,
    categorical_log_likelihood,
    latent_path,
    noise_device,
    traversal_latents,
)
from genlib.models.pixelcnn import GatedCache, GatedLayer, PixelHead, gated_skips, raster_sample
from genlib.models.vae import GaussianLatentModel

ACTIVE_UNIT = 0.01  # [4]'s threshold on the variance of a latent's posterior mean across the data


@dataclass(frozen=True)
class PixelVAEConfig(ModelConfig):
    family: str = checked("pixelvae", name())
    latent_dim: int = checked(16, at_least(1))  # size of z
    hidden: int = checked(32, at_least(1))  # encoder channels (doubled at each halving) and channels of the gated stacks
    layers: int = checked(4, at_least(1))  # gated PixelCNN layers of the decoder (the first one is the mask-A layer)
    kernel: int = checked(3, odd_at_least(1))  # kernel of the gated layers
    head: int = checked(64, at_least(1))  # channels of the 1×1 output head
    kl_warmup: int = checked(1000, at_least(0))  # training steps over which the KL weight grows linearly to 1; 0: none


@MODELS.register("pixelvae")
class PixelVAE(PixelHead, GaussianLatentModel):
    config_class = PixelVAEConfig
    capabilities = frozenset({SAMPLE, LOG_PROB, ENCODE, COMPLETE, INTERPOLATE, TRAVERSE, LATENT_PRIOR})

    def __init__(self, config: PixelVAEConfig, shape, levels, num_classes=None):
        super().__init__(config, shape, levels, num_classes)
        c, h, w = self.shape
        if h != w:
            raise ValueError(f"PixelVAE expects square images, got {h}×{w}")
        self.encoder = ConvEncoder(c, h, config.hidden, 2 * config.latent_dim)
        self.latent_map = ConvDecoder(config.latent_dim, h, config.hidden, config.hidden)  # z → (B, hidden, H, W)
        self.condition = nn.ModuleList(nn.Conv2d(config.hidden, 4 * config.hidden, 1) for _ in range(config.layers))
        self.layers = nn.ModuleList(
            GatedLayer(c if i == 0 else config.hidden, config.hidden, config.kernel, c,
                       first=i == 0, last=i == config.layers - 1, num_classes=None)
            for i in range(config.layers))
        self.build_head(config.hidden, config.head)

    # -- pieces -----------------------------------------------------------------------------

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z|x), each (B, latent_dim)."""
        mu, logvar = self.encoder(to_unit(x, self.levels)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def q(self, x, labels):
        return self.posterior(x)

    def decoded_log_likelihood(self, x, labels, z):
        return categorical_log_likelihood(self.decode_logits(x, z), x)

    @property
    def iwae_chunk_images(self) -> int:
        # The PixelCNN decoder keeps every layer's activations at full resolution: 4096 images of 8×8, fewer when larger.
        return max(16, 4096 * 64 // self.dims)

    def conditions(self, z: torch.Tensor) -> list[torch.Tensor]:
        """One conditioning map (B, 4·hidden, H, W) per gated layer."""
        features = torch.relu(self.latent_map(z))
        return [proj(features) for proj in self.condition]

    def decode_logits(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, L, H, W) of p(x_i | x_<i, z) for every sub-pixel of ``x``."""
        return self.head_logits(gated_skips(self.layers, to_unit(x, self.levels), None, self.conditions(z)))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-image terms of the negative ELBO with one reparameterised sample, and the posterior."""
        mu, logvar = self.posterior(x)
        z, kl = self.reparameterise(mu, logvar)
        return {"recon": -categorical_log_likelihood(self.decode_logits(x, z), x), "kl": kl, "mu": mu}  # (B,) each

    def kl_weight(self, step: int) -> float:
        warmup = self.config.kl_warmup
        return 1.0 if warmup == 0 else min(1.0, (step + 1) / warmup)

    # -- contract ---------------------------------------------------------------------------

    def training_step(self, batch: Batch, optimizers, context: TrainingContext) -> dict[str, float]:
        terms = self.run(batch.x)
        beta = self.kl_weight(context.step)
        loss = (terms["recon"] + beta * terms["kl"]).mean()
        self.optimize(optimizers["model"], loss)
        return {**self._metrics(terms, loss), "kl_weight": beta}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        terms = self(batch.x)
        # The true negative ELBO (KL weight 1) whatever the warm-up, so checkpoints are chosen on the bound.
        metrics = self._metrics(terms, (terms["recon"] + terms["kl"]).mean())
        # Collapse shows as a KL near 0 bits/dim and no active units.
        metrics["kl_bpd"] = bits_per_dim(terms["kl"].mean().item(), self.dims)
        spread = terms["mu"].var(0) if len(batch.x) > 1 else torch.zeros_like(terms["mu"][0])
        metrics["active_units"] = float((spread > ACTIVE_UNIT).sum())
        return metrics

    @torch.no_grad()
    def decode(self, z: torch.Tensor, generator=None, greedy: bool = False, x: torch.Tensor | None = None,
               observed: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) drawn from p(x | z) sub-pixel by sub-pixel with the cached gated stack;
        pixels of ``x`` where ``observed`` (B, H, W) is True are kept."""
        x = torch.zeros(len(z), *self.shape, dtype=torch.uint8, device=self.device) if x is None else x.clone()
        cache = GatedCache(self.layers, len(z), self.shape, self.device, None, self.conditions(z))

        def position_logits(i: int, j: int) -> torch.Tensor:
            return self.head_logits(cache.skips_at(to_unit(x, self.levels), i, j)[:, :, None, None])[..., 0, 0]

        return raster_sample(x, observed, self.levels, generator, position_logits, greedy=greedy)

    def _prior(self, n: int, generator) -> torch.Tensor:
        return torch.randn(n, self.config.latent_dim, generator=generator,
                           device=noise_device(generator)).to(self.device)

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None) -> torch.Tensor:
        return self.decode(self._prior(n, generator), generator)

    @torch.no_grad()
    def complete(self, x, mask, labels=None, generator=None) -> torch.Tensor:
        """Keep the pixels where ``mask`` (B, H, W) or (H, W) is True; sample the others given the
        latent of the observed part (the unobserved pixels set to level 0 for the encoder)."""
        x = x.to(self.device)
        observed = mask.to(torch.bool).expand(len(x), *self.shape[1:]).to(self.device)
        z = self.encode(torch.where(observed[:, None], x, torch.zeros_like(x)))
        return self.decode(z, generator, x=x, observed=observed)

    @torch.no_grad()
    def interpolate(self, rows: int = 8, steps: int = 8, generator=None) -> torch.Tensor:
        """``rows`` straight lines between random latents, ``steps`` greedy decodings each."""
        return self.decode(latent_path(rows, steps, self.config.latent_dim, generator).to(self.device), greedy=True)

    @torch.no_grad()
    def traverse(self, steps: int = 8, span: float = 3.0, z: torch.Tensor | None = None) -> torch.Tensor:
        """Row d varies latent d from −span to +span, the others held at ``z`` (default 0): greedy decodings."""
        return self.decode(traversal_latents(self.config.latent_dim, steps, span, z, self.device), greedy=True)

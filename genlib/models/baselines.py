"""Classical reference models behind the same contract: the rows every deep model must beat.

* ``categorical``: every sub-pixel an independent categorical over ``levels``, fitted by counting
  with add-α smoothing.
* ``mixture``: a mixture of K such product-of-categoricals components, fitted by EM [1].

Both are fitted by exact batch EM inside the ordinary training loop: ``training_step``
accumulates sufficient statistics under the current parameters (the E-step), and
``on_epoch_end`` sums them over workers and re-estimates the parameters (the M-step). One epoch
is one EM iteration; the independent model is exact after its first epoch.

[1] Dempster, Laird & Rubin, "Maximum Likelihood from Incomplete Data via the EM Algorithm",
    JRSS B, 1977.

NOTE: the parameters are buffers, not gradients' business: no optimizer, no DDP wrapper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from genlib.config import ModelConfig, at_least, checked, name, positive
from genlib.models.base import LOG_PROB, MODELS, SAMPLE, Batch, GenerativeModel, TrainingContext
from genlib.models.layers import bits_per_dim, noise_device


@dataclass(frozen=True)
class MixtureConfig(ModelConfig):
    family: str = checked("mixture", name())
    components: int = checked(30, at_least(1))  # K mixture components
    alpha: float = checked(1.0, positive())  # add-α smoothing of each categorical (a symmetric Dirichlet prior)


@dataclass(frozen=True)
class CategoricalConfig(ModelConfig):
    family: str = checked("categorical", name())
    alpha: float = checked(1.0, positive())  # add-α smoothing of each per-sub-pixel categorical


class _MixtureBase(GenerativeModel):
    capabilities = frozenset({SAMPLE, LOG_PROB})
    log_prob_exact = True

    def __init__(self, config, shape, levels, num_classes=None, components: int = 1):
        super().__init__(config, shape, levels, num_classes)
        k, d = components, self.dims
        # Random, seeded start (the loop seeds every rank alike): EM needs asymmetric components.
        start = torch.distributions.Dirichlet(torch.ones(levels)).sample((k, d))  # (K, D, L)
        self.register_buffer("log_theta", start.log())
        self.register_buffer("log_pi", torch.full((k,), -math.log(k)))
        self.register_buffer("stat_counts", torch.zeros(k, d, levels))
        self.register_buffer("stat_weights", torch.zeros(k))

    def configure_optimizers(self, train):
        return {}

    def _component_log_lik(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x | component k) for every image and component: (B, K)."""
        flat = x.flatten(1).long()  # (B, D)
        onehot = F.one_hot(flat, self.levels).float()  # (B, D, L)
        return torch.einsum("bdl,kdl->bk", onehot, self.log_theta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self._component_log_lik(x) + self.log_pi, dim=1)  # (B,) log p(x)

    @torch.no_grad()
    def training_step(self, batch: Batch, optimizers, context: TrainingContext) -> dict[str, float]:
        # Exact sums of thousands of log-probabilities: never in bf16 (train.precision=bf16 autocasts einsum).
        with torch.autocast(batch.x.device.type, enabled=False):
            return self._em_step(batch)

    def _em_step(self, batch: Batch) -> dict[str, float]:
        joint = self._component_log_lik(batch.x) + self.log_pi  # (B, K)
        log_px = torch.logsumexp(joint, dim=1)
        resp = (joint - log_px[:, None]).exp()  # E-step: responsibilities (B, K)
        onehot = F.one_hot(batch.x.flatten(1).long(), self.levels).float()
        self.stat_counts += torch.einsum("bk,bdl->kdl", resp, onehot)
        self.stat_weights += resp.sum(0)
        loss = -log_px.mean().item()
        return {"loss": loss, "bpd": bits_per_dim(loss, self.dims)}

    @torch.no_grad()
    def on_epoch_end(self) -> None:
        """M-step from the statistics of every worker's shard."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.stat_counts)
            dist.all_reduce(self.stat_weights)
        if self.stat_weights.sum() == 0:
            return
        alpha = self.config.alpha
        counts = self.stat_counts + alpha
        self.log_theta.copy_((counts / counts.sum(-1, keepdim=True)).log())
        weights = self.stat_weights + 1e-3  # keeps an emptied component from log(0)
        self.log_pi.copy_((weights / weights.sum()).log())
        self.stat_counts.zero_()
        self.stat_weights.zero_()

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        loss = -self(batch.x).mean().item()
        return {"loss": loss, "bpd": bits_per_dim(loss, self.dims)}

    @torch.no_grad()
    def log_prob(self, x, labels=None, k: int = 1) -> torch.Tensor:
        return self(x)

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None) -> torch.Tensor:
        noise = noise_device(generator)
        comp = torch.multinomial(self.log_pi.exp().to(noise), n, replacement=True, generator=generator)  # (n,)
        probs = self.log_theta.exp().to(noise)[comp]  # (n, D, L)
        drawn = torch.multinomial(probs.reshape(-1, self.levels), 1, generator=generator)
        return drawn.view(n, *self.shape).to(torch.uint8).to(self.device)


@MODELS.register("categorical")
class IndependentCategorical(_MixtureBase):
    """Every sub-pixel independent: a mixture with one component."""

    config_class = CategoricalConfig

    def __init__(self, config: CategoricalConfig, shape, levels, num_classes=None):
        super().__init__(config, shape, levels, num_classes, components=1)


@MODELS.register("mixture")
class MixtureOfCategoricals(_MixtureBase):
    config_class = MixtureConfig

    def __init__(self, config: MixtureConfig, shape, levels, num_classes=None):
        super().__init__(config, shape, levels, num_classes, components=config.components)

"""Test-split likelihood in bits/dim for every model that declares ``log_prob``, and the
latent-variable measures of the models that declare ``reconstruct`` or ``latent_prior``.

bits/dim = NLL(nats per image) / (D · ln 2) on the discrete data, D = C·H·W. Exact models report
``bpd``; models with a bound report the ELBO (k=1) and the IWAE bound with its k in the name.
Reconstruction bits/dim (−log p(x | z = the encoder's estimate)) is *not* a likelihood: it is
named ``recon_bpd`` and never ranks with the bounds. ``latent_mmd`` is the squared MMD between
draws of the aggregate posterior q(z) = E_x q(z|x) and of the prior, on up to
``LATENT_MMD_IMAGES`` test images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from genlib.models import GenerativeModel
from genlib.models.base import LATENT_PRIOR, LOG_PROB, RECONSTRUCT, Batch
from genlib.models.layers import bits_per_dim, mmd2

LATENT_MMD_IMAGES = 2000  # the MMD's kernel matrix is (2n)²: 2000 images keep it at 64 MB


def mean_bits_per_dim(log_probs: np.ndarray, dims: int) -> float:
    """Mean bits/dim of per-image log-likelihoods in nats (higher log-prob → lower bits/dim)."""
    return float(bits_per_dim(-np.mean(log_probs), dims))


@torch.no_grad()
def log_probs(model: GenerativeModel, dataset, k: int = 1, batch_size: int = 128,
              seed: int = 0, desc: str | None = None) -> np.ndarray:
    """Per-image log p(x) (or its bound with k samples) in nats over a dataset, (N,)."""
    model.eval()
    out = []
    device = model.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # manual_seed reseeds CUDA too
        torch.manual_seed(seed)
        for batch in _batches(model, dataset, batch_size, desc):
            out.append(model.log_prob(batch.x, labels=batch.labels, k=k).cpu().numpy())
    return np.concatenate(out)


def likelihood_metrics(model: GenerativeModel, dataset, iwae_k: int, batch_size: int = 128,
                       seed: int = 0, split: str = "test") -> dict[str, float]:
    """``{split}_bpd`` for exact models; ``{split}_elbo_bpd`` and ``{split}_iwae{k}_bpd`` for bounds."""
    if LOG_PROB not in model.capabilities:
        return {}
    if model.log_prob_exact:
        lp = log_probs(model, dataset, 1, batch_size, seed, desc=f"{split} log-likelihood")
        return {f"{split}_bpd": mean_bits_per_dim(lp, model.dims)}
    elbo = log_probs(model, dataset, 1, batch_size, seed, desc=f"{split} ELBO")
    iwae = log_probs(model, dataset, iwae_k, max(1, batch_size // 4), seed, desc=f"{split} IWAE k={iwae_k}")
    return {f"{split}_elbo_bpd": mean_bits_per_dim(elbo, model.dims),
            f"{split}_iwae{iwae_k}_bpd": mean_bits_per_dim(iwae, model.dims)}


@torch.no_grad()
def latent_metrics(model: GenerativeModel, dataset, batch_size: int = 128, seed: int = 0,
                   split: str = "test") -> dict[str, float]:
    """``{split}_recon_bpd`` for models that reconstruct, ``{split}_latent_mmd`` for models with a prior."""
    out: dict[str, float] = {}
    model.eval()
    if RECONSTRUCT in model.capabilities:
        nats = [model.reconstruction_log_prob(b.x, b.labels).cpu().numpy() for b in _batches(model, dataset, batch_size)]
        out[f"{split}_recon_bpd"] = mean_bits_per_dim(np.concatenate(nats), model.dims)
    if LATENT_PRIOR in model.capabilities:
        generator = torch.Generator(device=model.device).manual_seed(seed)
        n = min(len(dataset), LATENT_MMD_IMAGES)
        draws = [model.latent_samples(b.x, b.labels, generator)
                 for b in _batches(model, Subset(dataset, range(n)), batch_size)]
        posterior, prior = (torch.cat([d[k] for d in draws]).double() for k in (0, 1))
        out[f"{split}_latent_mmd"] = mmd2(posterior, prior)
    return out


def _batches(model: GenerativeModel, dataset, batch_size: int, desc: str | None = None):
    """Batches of ``dataset`` on the model's device, in order (a progress bar when ``desc`` is given)."""
    for item in tqdm(DataLoader(dataset, batch_size=batch_size), desc=desc, leave=False, disable=desc is None):
        yield Batch.from_loader(item).to(model.device)

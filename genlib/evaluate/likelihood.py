"""Test-split likelihood in bits/dim for every model that declares ``log_prob``.

bits/dim = NLL(nats per image) / (D · ln 2) on the discrete data, D = C·H·W. Exact models report
``bpd``; models with a bound report the ELBO (k=1) and the IWAE bound with its k in the name.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from genlib.models import GenerativeModel
from genlib.models.base import LOG_PROB, Batch
from genlib.models.layers import bits_per_dim


def mean_bits_per_dim(log_probs: np.ndarray, dims: int) -> float:
    """Mean bits/dim of per-image log-likelihoods in nats (higher log-prob → lower bits/dim)."""
    return float(bits_per_dim(-np.mean(log_probs), dims))


@torch.no_grad()
def log_probs(model: GenerativeModel, dataset, k: int = 1, batch_size: int = 128,
              seed: int = 0, desc: str | None = None) -> np.ndarray:
    """Per-image log p(x) (or its bound with k samples) in nats over a dataset, (N,)."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size)
    out = []
    device = model.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # manual_seed reseeds CUDA too
        torch.manual_seed(seed)
        for item in tqdm(loader, desc=desc, leave=False, disable=desc is None):
            batch = Batch.from_loader(item).to(model.device)
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

"""Sample-quality metrics as pure functions over feature arrays (N, D).

* Fréchet distance [1] between Gaussians fitted to two feature sets, in float64. The matrix
  square root goes through two symmetric eigendecompositions, tr√(Σ₁Σ₂) = tr√(√Σ₁ Σ₂ √Σ₁), so
  no complex numbers appear; eigenvalues that round-off makes slightly negative are clipped to
  zero and reported (count and most negative value) rather than crashing or hiding.
* KID [2]: unbiased squared MMD with the cubic polynomial kernel k(x, y) = (xᵀy / d + 1)³,
  averaged over random subsets, mean ± std.
* Precision and recall [3]: the fraction of generated samples inside the real k-NN manifold
  (balls of radius the k-th neighbour distance, k = 3) and vice versa.
* Density and coverage [4], from the same kind of balls around the real samples (k = 5, the paper's):
  density counts how many real balls each generated sample falls in (divided by k; about 1 when the
  two sets come from one distribution, above 1 where samples crowd the real modes), coverage is the
  share of real balls holding at least one generated sample. Strict inequalities, as the authors'
  ``prdc`` package has them.
* An Inception-Score analogue [5]: exp E_x KL(p(y|x) ‖ p(y)) from a classifier's logits — with the
  domain network's own class head instead of Inception's ImageNet one, mean ± std over splits.

Feature extraction, caching and logging live elsewhere: these functions only compute.

[1] Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
    Equilibrium", NeurIPS 2017.
[2] Bińkowski et al., "Demystifying MMD GANs", ICLR 2018.
[3] Kynkäänniemi et al., "Improved Precision and Recall Metric for Assessing Generative
    Models", NeurIPS 2019.
[4] Naeem et al., "Reliable Fidelity and Diversity Metrics for Generative Models", ICML 2020.
[5] Salimans et al., "Improved Techniques for Training GANs", NeurIPS 2016 (10 splits).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class FrechetDistance(NamedTuple):
    value: float  # the squared Fréchet distance (what papers call FID when the features are Inception's)
    clipped_eigenvalues: int  # eigenvalues below zero set to zero in the square roots
    most_negative_eigenvalue: float  # the most negative one before clipping (0.0 if none)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be (N ≥ 2, D), got shape {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> FrechetDistance:
    """‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2√(Σ₁Σ₂)) between two Gaussians."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shapes disagree: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    sqrt1, clipped1, low1 = _psd_sqrt(sigma1)
    inner = sqrt1 @ sigma2 @ sqrt1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    clipped2, low2 = int((eig < 0).sum()), float(min(eig.min(), 0.0))
    trace_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    return FrechetDistance(value, clipped1 + clipped2, min(low1, low2))


def _psd_sqrt(matrix: np.ndarray) -> tuple[np.ndarray, int, float]:
    eig, vec = np.linalg.eigh((matrix + matrix.T) / 2)
    clipped, low = int((eig < 0).sum()), float(min(eig.min(), 0.0))
    return (vec * np.sqrt(np.clip(eig, 0, None))) @ vec.T, clipped, low


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp E_x KL(p(y|x) ‖ p(y)) of class logits (N, K), on ``splits`` consecutive equal parts
    (p(y) is each part's mean prediction): (mean, std) over the parts, in float64.
    It is K for confident predictions spread evenly over K classes, 1 when every image gets the
    same prediction."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or len(logits) < splits or splits < 1:
        raise ValueError(f"need (N, K) logits with N ≥ splits ≥ 1, got shape {logits.shape} and {splits} splits")
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))  # log p(y|x)
    scores = []
    for part in np.array_split(log_p, splits):
        log_marginal = np.log(np.exp(part).mean(axis=0))  # log p(y)
        kl = (np.exp(part) * (part - log_marginal)).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of the unbiased MMD² over random subsets."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D, got {real.shape} and {fake.shape}")
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {len(real)} and {len(fake)}")
    rng = np.random.default_rng(seed)
    values = [_mmd2_poly(real[rng.choice(len(real), m, replace=False)],
                         fake[rng.choice(len(fake), m, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def _mmd2_poly(x: np.ndarray, y: np.ndarray) -> float:
    d, m = x.shape[1], len(x)
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    off = m * (m - 1)
    return float((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2 * kxy.mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, block: int = 4096) -> tuple[float, float]:
    """Improved precision and recall [3] with k-NN balls; distances computed in blocks."""
    real_t, fake_t = (torch.as_tensor(np.asarray(a, np.float32)) for a in (real, fake))
    if min(len(real_t), len(fake_t)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    real_radii, fake_radii = _kth_neighbour(real_t, k, block), _kth_neighbour(fake_t, k, block)
    precision = _inside_any_ball(fake_t, real_t, real_radii, block).float().mean().item()
    recall = _inside_any_ball(real_t, fake_t, fake_radii, block).float().mean().item()
    return precision, recall


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5, block: int = 4096) -> tuple[float, float]:
    """Density and coverage [4] of ``fake`` against ``real``, with balls of the real k-NN radii."""
    real_t, fake_t = (torch.as_tensor(np.asarray(a, np.float32)) for a in (real, fake))
    if len(real_t) <= k or len(fake_t) == 0:
        raise ValueError(f"density/coverage with k={k} needs more than {k} real samples and some generated ones, "
                         f"got {len(real_t)} and {len(fake_t)}")
    radii = _kth_neighbour(real_t, k, block)
    inside, covered = 0, torch.zeros(len(real_t), dtype=torch.bool)
    for start in range(0, len(fake_t), block):
        within = torch.cdist(fake_t[start:start + block], real_t) < radii[None, :]  # (b, N)
        inside += int(within.sum())
        covered |= within.any(dim=0)
    return inside / (k * len(fake_t)), covered.float().mean().item()


def _kth_neighbour(points: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point in the same set: (N,)."""
    out = []
    for start in range(0, len(points), block):
        d = torch.cdist(points[start:start + block], points)  # (b, N); the self-distance 0 is rank 0
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def _inside_any_ball(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, block: int) -> torch.Tensor:
    out = []
    for start in range(0, len(queries), block):
        d = torch.cdist(queries[start:start + block], centres)  # (b, M)
        out.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(out)

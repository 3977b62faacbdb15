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

Feature extraction, caching and logging live elsewhere: these functions only compute. The k-NN
balls are searched in shards by ``workers.Workers`` (in this process by default), so a reference set
may be a file larger than memory.

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

from genlib.evaluate.workers import Workers, as_rows


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
    """Kernel Inception Distance: mean and std of the unbiased MMD² over random subsets. Only the subsets'
    rows are read: ``real`` may be a memory-mapped reference set larger than memory."""
    if len(real.shape) != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D, got {real.shape} and {fake.shape}")
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {len(real)} and {len(fake)}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        pick_real, pick_fake = rng.choice(len(real), m, replace=False), rng.choice(len(fake), m, replace=False)
        values.append(_mmd2_poly(_rows(real, pick_real), _rows(fake, pick_fake)))
    return float(np.mean(values)), float(np.std(values))


def _rows(x, index: np.ndarray) -> np.ndarray:
    """x[index] in float64 (x: an array, or ``workers.Rows`` on disk, read forward once)."""
    return as_rows(x).take(index).astype(np.float64)


def _mmd2_poly(x: np.ndarray, y: np.ndarray) -> float:
    d, m = x.shape[1], len(x)
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    off = m * (m - 1)
    return float((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2 * kxy.mean())


def precision_recall(real, fake, k: int = 3, workers: Workers | None = None,
                     real_radii: np.ndarray | None = None) -> tuple[float, float]:
    """Improved precision and recall [3] with k-NN balls (d ≤ radius); ``real`` and ``fake``: arrays or
    ``Rows`` (a reference set on disk), searched by ``workers`` (default: this process).
    ``real_radii``: the real k-th neighbour distances, when the caller has them."""
    workers = workers or Workers()
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    real_radii = workers.kth_distances(real, k) if real_radii is None else real_radii
    fake_radii = workers.kth_distances(fake, k)
    precision = workers.balls(fake, real, real_radii, strict=False, desc="precision")[0].mean()
    recall = workers.balls(real, fake, fake_radii, strict=False, desc="recall")[0].mean()
    return float(precision), float(recall)


def density_coverage(real, fake, k: int = 5, workers: Workers | None = None,
                     real_radii: np.ndarray | None = None) -> tuple[float, float]:
    """Density and coverage [4] of ``fake`` against ``real``, with balls of the real k-NN radii (d < radius);
    arguments as ``precision_recall``'s."""
    workers = workers or Workers()
    if len(real) <= k or len(fake) == 0:
        raise ValueError(f"density/coverage with k={k} needs more than {k} real samples and some generated ones, "
                         f"got {len(real)} and {len(fake)}")
    real_radii = workers.kth_distances(real, k) if real_radii is None else real_radii
    _, inside, covered = workers.balls(fake, real, real_radii, strict=True, desc="density and coverage")
    return int(inside.sum()) / (k * len(fake)), float(covered.mean())

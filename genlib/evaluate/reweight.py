"""Dataset reweighting from a VAE's latent space (DB-VAE [1], as taught in [2]).

Encode every training image to its posterior mean z, estimate how dense the data is around each
z, and give a sample a sampling weight that grows as its density shrinks, so that rare kinds of
images are seen more often in training. The pieces, all pure functions over arrays:

* ``latent_means``: posterior means (N, d) of a model that declares ``encode``;
* densities, as LOG densities so that products over many dimensions neither overflow nor
  underflow: ``histogram_log_density`` per dimension (N, d), ``gmm_log_density`` and
  ``kde_log_density`` joint (N,);
* ``log_weights`` combines them (method "product" [1], "max" [2], "gmm", "kde") and
  ``normalise`` turns log weights into weights that sum to 1; ``estimate_weights`` does both
  from a ``ReweightConfig``;
* diagnostics (``effective_sample_size``, ``diagnostics``, ``per_label_table``) and figures
  (``weight_histogram``, ``extreme_samples``).

The weights file is ``genlib/data/weights.py``; the stage that writes it and records the run is
``genlib/stages/reweight.py``.

Labels only ever enter the per-label report: the weights never see them.

[1] Amini, Soleimany, Schwarting, Bhatia & Rus, "Uncovering and Mitigating Algorithmic Bias
    through Learned Latent Structure", AIES 2019: W(x) ∝ Π_i 1 / (Q̂_i(z_i(x)) + α) with Q̂_i
    the histogram of latent dimension i.
[2] MIT 6.S191 Introduction to Deep Learning, Lab 2 (debiasing facial detection),
    ``get_training_sample_probabilities``: per dimension, p ∝ 1 / normalised(histogram + α),
    normalised over samples; a sample's probability is the maximum of these over dimensions.

NOTE: both [1] and [2] multiply or divide densities directly; here every combination is done
in log space (``logaddexp`` for the +α, ``logsumexp`` for normalising), which gives the same
numbers where the direct form is representable and finite ones where it is not (d in the
hundreds). [2] also normalises the smoothed histogram over its bins before inverting it; that
is a constant per dimension, which the normalisation over samples cancels, so it is skipped.
NOTE: Q̂_i is the histogram *density* (count / (N · bin width)), as ``np.histogram(density=True)``
in [2], so α is on that scale: it is an absolute floor added to a density in units of 1/z.
NOTE: [1] recomputes the weights every epoch while the VAE trains jointly with a classifier;
here the VAE is trained first and the weights are computed once from its final encoder.
NOTE: "gmm" and "kde" are additions: a joint density instead of a product of marginals, weight
1 / (p(z) + α). A d-dimensional density is small (≈ 0.4^d at the mode of N(0, I)), so the
α = 1e-3 of the histogram methods would flatten it; their default α is 0 (see ``ReweightConfig``).
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from scipy.special import logsumexp

from genlib.config import DEFAULT_ALPHA, METHODS, ReweightConfig  # noqa: F401 - re-exported
from genlib.figures import image_grid
from genlib.models.base import ENCODE

# --------------------------------------------------------------------------- latents


@torch.no_grad()
def latent_means(model: torch.nn.Module, images: torch.Tensor | np.ndarray, batch_size: int = 512,
                 labels: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    """Posterior means ``model.encode(x)`` of uint8 images (N, C, H, W), in batches: (N, d) float32.

    The model is put in eval mode for the pass and given back in the mode it came in.
    ``labels`` (N,) are needed only by class-conditional encoders."""
    if ENCODE not in getattr(model, "capabilities", ()):
        raise ValueError(f"{type(model).__name__} does not declare {ENCODE!r}; reweighting needs a model "
                         f"with latent means (a VAE family)")
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be non-empty uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    labels = None if labels is None else torch.as_tensor(labels)
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    was_training, device = model.training, model.device
    model.eval()
    try:
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            y = None if labels is None else labels[start:start + batch_size].to(device)
            out.append(model.encode(x, y).float().cpu())  # (b, d)
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


# --------------------------------------------------------------------------- densities


def histogram_log_density(z: np.ndarray, bins: int = 10, alpha: float = 0.0) -> np.ndarray:
    """log(Q̂_i(z_i) + α) for every sample and latent dimension: (N, d).

    Q̂_i is the histogram density of dimension i over ``bins`` equal bins spanning its range
    (count / (N · width)); the outer edges are open, as in [2]. Every sample lies in a bin it
    helps fill, so the log is finite even with α = 0."""
    z = _check_latents(z)
    log_q = np.stack([_column_log_density(col, bins) for col in z.T], axis=1)
    return _smooth(log_q, alpha)


def _column_log_density(col: np.ndarray, bins: int) -> np.ndarray:
    edges = np.histogram_bin_edges(col, bins)  # a constant column gets the range value ± 0.5
    which = np.digitize(col, edges[1:-1])  # (N,) bin 0..bins-1; the outer edges are open
    counts = np.bincount(which, minlength=bins)
    return np.log(counts[which]) - np.log(len(col) * np.diff(edges)[which])


def gmm_log_density(z: np.ndarray, n_components: int = 10, seed: int = 0) -> np.ndarray:
    """log p(z) under a Gaussian mixture (full covariances) fitted to z itself: (N,)."""
    from sklearn.mixture import GaussianMixture

    z = _check_latents(z)
    if len(z) < n_components:
        raise ValueError(f"a {n_components}-component mixture needs at least {n_components} samples, got {len(z)}")
    # Fit on the rows in a canonical (lexicographic) order: k-means initialisation depends on row
    # order, and a sample's weight must not depend on where it sits in the split.
    canonical = z[np.lexsort(z.T[::-1])]
    gmm = GaussianMixture(n_components=n_components, covariance_type="full", random_state=seed).fit(canonical)
    return gmm.score_samples(z)


def kde_log_density(z: np.ndarray, bandwidth: float | str = "scott") -> np.ndarray:
    """log p(z) under a Gaussian kernel density estimate on z itself: (N,).

    Each sample's own kernel is included, which floors an isolated sample's density at
    K(0) / N; the cost is a tree query per sample (slow beyond ~10⁵ samples in high d)."""
    from sklearn.neighbors import KernelDensity

    z = _check_latents(z)
    return KernelDensity(kernel="gaussian", bandwidth=bandwidth).fit(z).score_samples(z)


def _check_latents(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.size == 0:
        raise ValueError(f"latents must be a non-empty (N, d) array, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError(f"latents hold {int((~np.isfinite(z)).sum())} non-finite values; check the encoder")
    return z


def _smooth(log_q: np.ndarray, alpha: float) -> np.ndarray:
    """log(q + α) from log q, without leaving log space."""
    if alpha < 0:
        raise ValueError(f"alpha must be ≥ 0, got {alpha}")
    return np.logaddexp(log_q, math.log(alpha)) if alpha > 0 else log_q


# --------------------------------------------------------------------------- weights


def log_weights(z: np.ndarray, method: str = "max", bins: int = 10, alpha: float | None = None,
                n_components: int = 10, bandwidth: float | str = "scott", seed: int = 0) -> np.ndarray:
    """Unnormalised log sampling weights (N,) of latents z (N, d); see ``ReweightConfig``.

    * product [1]: −Σ_i log(Q̂_i(z_i) + α);
    * max [2]: max_i log p_i, with p_i ∝ 1 / (Q̂_i(z_i) + α) normalised over samples;
    * gmm / kde: −log(p(z) + α) with p a joint density."""
    cfg = ReweightConfig(method=method, bins=bins, alpha=alpha, n_components=n_components,
                         bandwidth=bandwidth, seed=seed)
    return _combine(_log_density(z, cfg), cfg)


def estimate_weights(z: np.ndarray, config: ReweightConfig = ReweightConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Weights (N,) summing to 1, and the log density (N,) they came from.

    The log density is the unsmoothed estimate: the joint one for "gmm"/"kde", and Σ_i log Q̂_i
    (the density if the dimensions were independent) for the histogram methods."""
    log_q = _log_density(z, config)
    log_density = log_q.sum(axis=1) if log_q.ndim == 2 else log_q
    return normalise(_combine(log_q, config)), log_density


def _log_density(z: np.ndarray, cfg: ReweightConfig) -> np.ndarray:
    """(N, d) per-dimension log Q̂ for the histogram methods, (N,) joint log p otherwise."""
    return _DENSITY[cfg.method](z, cfg)


def _combine(log_q: np.ndarray, cfg: ReweightConfig) -> np.ndarray:
    return _COMBINE[cfg.method](-_smooth(log_q, cfg.smoothing))  # from log 1/(q + α): (N, d) or (N,)


def _lab_max(neg: np.ndarray) -> np.ndarray:
    """[2]: per dimension, normalise 1/(Q̂ + α) over samples; keep each sample's largest."""
    return (neg - logsumexp(neg, axis=0, keepdims=True)).max(axis=1)


# One entry per method: how to estimate the density, and how to combine log 1/(q + α) into (N,).
_DENSITY = {
    "max": lambda z, cfg: histogram_log_density(z, cfg.bins),
    "product": lambda z, cfg: histogram_log_density(z, cfg.bins),
    "gmm": lambda z, cfg: gmm_log_density(z, cfg.n_components, cfg.seed),
    "kde": lambda z, cfg: kde_log_density(z, cfg.bandwidth),
}
_COMBINE = {
    "max": _lab_max,
    "product": lambda neg: neg.sum(axis=1),  # [1]: Π_i 1/(Q̂_i + α)
    "gmm": lambda neg: neg,
    "kde": lambda neg: neg,
}


def normalise(log_w: np.ndarray) -> np.ndarray:
    """Weights exp(log_w) / Σ exp(log_w), computed stably (N,); −inf gives weight 0."""
    log_w = np.asarray(log_w, dtype=np.float64)
    if log_w.ndim != 1 or len(log_w) == 0:
        raise ValueError(f"log weights must be a non-empty (N,) array, got shape {log_w.shape}")
    if np.isnan(log_w).any() or np.isposinf(log_w).any():
        raise ValueError("log weights hold NaN or +inf; they must be finite or −inf (weight 0)")
    if np.isneginf(log_w).all():
        raise ValueError("every log weight is −inf: no sample could ever be drawn")
    return np.exp(log_w - logsumexp(log_w))


# --------------------------------------------------------------------------- diagnostics


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size (Σw)² / Σw²: N for equal weights, 1 if one sample has them all."""
    w = np.asarray(weights, dtype=np.float64)
    return float(w.sum() ** 2 / np.square(w).sum())


def diagnostics(weights: np.ndarray) -> dict[str, float]:
    """Scalar summaries to log: ESS, ESS as a share of N, and max / mean weight."""
    w = np.asarray(weights, dtype=np.float64)
    ess = effective_sample_size(w)
    return {"n": float(len(w)), "ess": ess, "ess_fraction": ess / len(w),
            "max_mean_ratio": float(w.max() / w.mean())}


def per_label_table(weights: np.ndarray, labels: np.ndarray):
    """One row per label: count, share of the data, share of the weight mass, and mean weight
    relative to the overall mean (> 1: sampled more often than under uniform sampling)."""
    import pandas as pd

    w, labels = np.asarray(weights, dtype=np.float64), np.asarray(labels)
    if w.shape != labels.shape:
        raise ValueError(f"weights {w.shape} and labels {labels.shape} must have the same shape")
    frame = pd.DataFrame({"label": labels, "weight": w})
    table = frame.groupby("label", sort=True)["weight"].agg(count="size", mass="sum").reset_index()
    table["data_share"] = table["count"] / len(w)
    table["weight_share"] = table["mass"] / w.sum()
    table["mean_weight_ratio"] = table["weight_share"] / table["data_share"]
    return table.drop(columns="mass")


# --------------------------------------------------------------------------- figures


def weight_histogram(weights: np.ndarray, bins: int = 50):
    """PIL image of the histogram of N·w (1 = the uniform weight) on a log axis, titled with the ESS."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    w = np.asarray(weights, dtype=np.float64)
    rel = w[w > 0] * len(w)
    lo, hi = rel.min(), rel.max()
    edges = np.geomspace(lo, hi if hi > lo else lo * 1.01, bins + 1)
    fig = Figure(figsize=(6, 3.5), dpi=100)  # not pyplot: no global state, safe in workers
    ax = fig.add_subplot()
    ax.hist(rel, bins=edges, color="tab:blue")
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1, label="uniform")
    ax.set(xscale="log", xlabel="weight × N", ylabel="samples")
    stats = diagnostics(w)
    ax.set_title(f"N={len(w)}  ESS={stats['ess']:.0f} ({stats['ess_fraction']:.1%})  "
                 f"max/mean={stats['max_mean_ratio']:.1f}")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def extreme_samples(images: torch.Tensor | np.ndarray, weights: np.ndarray, levels: int, k: int = 16) -> dict:
    """Galleries (PIL images via ``image_grid``) of the k most and k least weighted images,
    heaviest first and lightest first: ``{"most_weighted": ..., "least_weighted": ...}``."""
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != len(images):
        raise ValueError(f"{len(w)} weights for {len(images)} images")
    arr = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    most = np.argsort(-w, kind="stable")[:k]  # ties keep dataset order
    least = np.argsort(w, kind="stable")[:k]
    return {"most_weighted": image_grid(arr[most], levels), "least_weighted": image_grid(arr[least], levels)}

"""Dataset reweighting from a VAE's latent space (DB-VAE [1], as taught in [2]).

Encode every training image to its posterior mean z, estimate how dense the data is around each
z, and give a sample a sampling weight that grows as its density shrinks, so that rare kinds of
images are seen more often in training. The pieces, all pure functions over arrays:

* ``latent_means``: posterior means (N, d) of a model that declares ``encode``; ``sample_losses``:
  per-image negative ELBOs of a model that declares ``log_prob``;
* densities, as LOG densities so that products over many dimensions neither overflow nor
  underflow: ``histogram_log_density`` per dimension (N, d), ``gmm_log_density``,
  ``kde_log_density`` and ``knn_log_density`` joint (N,), over latents ``scale_latents`` may
  standardise or whiten;
* ``log_weights`` turns one rarity signal (method "knn", "max" [2], "product" [1], "gmm", "kde",
  "elbo") or a "+"-sum of standardised signals into log weights; ``temper`` flattens them just
  enough to keep an effective sample size; ``estimate_weights`` does all of it from a
  ``ReweightConfig``;
* diagnostics (``effective_sample_size``, ``diagnostics``, ``per_label_table``) and figures
  (``weight_histogram``, ``extreme_samples``).

The default ("knn", tempered to an ESS of 20 %) was chosen on ``bench/reweight_rarity.py``: rare
classes, rare styles and a rare class-style combination; the README gives the table.

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
``genlib reweight`` computes them once from a trained VAE, ``train.reweight_every``
(``genlib/train/adaptive.py``) recomputes them while the model trains.
NOTE: neither [1] nor [2] tempers; with d = 16 latents the paper's product gives one or two
images most of the weight (ESS < 1 % on digits), so every method is tempered to ``min_ess``.
NOTE: "gmm", "kde", "knn" and "elbo" are additions: a joint density instead of a product of
marginals, weight 1 / (p(z) + α) (for "elbo", exp(−ELBO) ≥ 1 / p(x)). A d-dimensional density
is small (≈ 0.4^d at the mode of N(0, I)), so the α = 1e-3 of the histogram methods would
flatten it; their default α is 0 (see ``ReweightConfig``).
"""

from __future__ import annotations

import io
import math
from typing import NamedTuple

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
    return _per_image(model, lambda x, y: model.encode(x, y).float(), images, labels, batch_size).numpy()


def _per_image(model: torch.nn.Module, fn, images: torch.Tensor, labels: torch.Tensor | None,
               batch_size: int) -> torch.Tensor:
    """``fn(x, y)`` over batches of images (and labels) on the model's device, concatenated on the CPU,
    with the model in eval mode for the pass and given back in the mode it came in."""
    was_training, device = model.training, model.device
    model.eval()
    try:
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            y = None if labels is None else labels[start:start + batch_size].to(device)
            out.append(fn(x, y).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


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


def knn_log_density(z: np.ndarray, k: int = 10) -> np.ndarray:
    """log p(z) of the k-nearest-neighbour estimate k / ((N − 1) · V_d · r_k(z)^d): (N,).

    r_k is the distance from each sample to its k-th nearest other sample (the exact engine of
    ``genlib.evaluate.knn``) and V_d the volume of the unit d-ball. Distances are floored at
    1e-12 times the data's spread, so duplicates give a large finite density, not an infinite one."""
    from genlib.evaluate.knn import nearest_neighbours

    z = _check_latents(z)
    n, d = z.shape
    if n <= k:
        raise ValueError(f"the {k}-nearest-neighbour density needs more than {k} samples, got {n}")
    r_k = nearest_neighbours(z.astype(np.float32), z.astype(np.float32), k=k, exclude_self=True).distances[:, -1]
    floor = 1e-12 * max(float(np.sqrt(z.var(axis=0).sum())), 1e-300)
    log_unit_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    return math.log(k) - math.log(n - 1) - log_unit_ball - d * np.log(np.maximum(r_k.astype(np.float64), floor))


def scale_latents(z: np.ndarray, how: str = "raw", eps: float = 1e-6) -> np.ndarray:
    """Latents for a joint density: as they are ("raw"), every dimension divided by its standard
    deviation ("standardise"), or rotated onto their principal axes and each divided by its
    standard deviation ("whiten"). Dimensions (axes) whose spread is below ``eps`` times the
    largest carry no information and are dropped instead of being blown up."""
    z = _check_latents(z)
    if how == "raw":
        return z
    centred = z - z.mean(axis=0)
    if how == "standardise":
        std = centred.std(axis=0)
        keep = std > eps * std.max() if std.max() > 0 else np.zeros(len(std), bool)
        return centred[:, keep] / std[keep] if keep.any() else centred[:, :1]
    if how == "whiten":
        _, sing, axes = np.linalg.svd(centred, full_matrices=False)
        std = sing / math.sqrt(len(z))
        keep = std > eps * std.max() if std.max() > 0 else np.zeros(len(std), bool)
        return (centred @ axes[keep].T) / std[keep] if keep.any() else centred[:, :1]
    raise ValueError(f"latents={how!r} is not a latent scaling; expected one of 'raw', 'standardise', 'whiten'")


def log_weights(z: np.ndarray, method: str = "max", bins: int = 10, alpha: float | None = None, k: int = 10,
                latents: str = "raw", n_components: int = 10, bandwidth: float | str = "scott", seed: int = 0,
                losses: np.ndarray | None = None) -> np.ndarray:
    """Unnormalised log sampling weights (N,) of latents z (N, d), untempered; see ``ReweightConfig``.

    * product [1]: −Σ_i log(Q̂_i(z_i) + α);
    * max [2]: max_i log p_i, with p_i ∝ 1 / (Q̂_i(z_i) + α) normalised over samples;
    * gmm / kde / knn: −log(p(z) + α) with p a joint density of the (scaled) latents;
    * elbo: the per-sample loss ``losses`` (N,) itself, the negative ELBO in nats: log 1/p(x)
      bounded from above;
    * a "+"-combination: each signal's log weights standardised (zero mean, unit variance over
      the samples), then summed."""
    cfg = ReweightConfig(method=method, bins=bins, alpha=alpha, k=k, latents=latents, n_components=n_components,
                         bandwidth=bandwidth, seed=seed)
    return _log_weights(z, cfg, losses)[0]


class Estimate(NamedTuple):
    weights: np.ndarray  # (N,) summing to 1
    log_density: np.ndarray  # (N,) what they came from (see estimate_weights)
    tau: float  # the tempering applied: 1 = none


def estimate_weights(z: np.ndarray, config: ReweightConfig = ReweightConfig(),
                     losses: np.ndarray | None = None) -> Estimate:
    """Weights (N,) summing to 1, tempered to ``config.min_ess``, the log density (N,) they came
    from, and the tempering τ.

    The log density is the first signal's unsmoothed estimate: the joint one for "gmm", "kde" and
    "knn", Σ_i log Q̂_i (the density if the dimensions were independent) for the histogram methods,
    and the ELBO for "elbo"."""
    log_w, log_density = _log_weights(z, config, losses)
    weights, tau = temper(log_w, config.min_ess)
    return Estimate(weights, log_density, tau)


def temper(log_w: np.ndarray, min_ess: float | None, tolerance: float = 1e-4) -> tuple[np.ndarray, float]:
    """(normalise(τ · log_w), τ) with the largest τ ∈ [0, 1] whose effective sample size is at
    least ``min_ess`` · N (τ = 1 when the weights already have it; None: no tempering).

    The ESS of exp(τ·s) falls as τ grows (its log is 2K(τ) − K(2τ) with K the convex cumulant
    generating function of s), so τ is found by bisection, to ``tolerance``."""
    w = normalise(log_w)
    if min_ess is None or effective_sample_size(w) >= min_ess * len(w):
        return w, 1.0
    drawn = ~np.isneginf(log_w)  # weight 0 stays 0 at every τ

    def tempered(tau: float) -> np.ndarray:
        return normalise(np.where(drawn, tau * np.where(drawn, log_w, 0.0), -np.inf))

    low, high = 0.0, 1.0
    while high - low > tolerance:
        mid = 0.5 * (low + high)
        if effective_sample_size(tempered(mid)) >= min_ess * len(w):
            low = mid
        else:
            high = mid
    return tempered(low), low


def _log_weights(z: np.ndarray, cfg: ReweightConfig, losses: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(log weights (N,), log density (N,)) of the config's signal, or the standardised sum of its signals."""
    z = _check_latents(z)
    parts = [_signal(z, name, cfg, losses) for name in cfg.signals]
    if len(parts) == 1:
        return parts[0]
    return sum(_standardised(log_w) for log_w, _ in parts), parts[0][1]


def _signal(z: np.ndarray, name: str, cfg: ReweightConfig, losses: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    alpha = cfg.smoothing_of(name)
    if name in ("max", "product"):
        log_q = histogram_log_density(z, cfg.bins)  # per dimension: scaling the latents changes nothing
        neg = -_smooth(log_q, alpha)
        return (_lab_max(neg) if name == "max" else neg.sum(axis=1)), log_q.sum(axis=1)
    if name == "elbo":
        if losses is None:
            raise ValueError("the 'elbo' signal needs per-sample losses (the negative ELBO of every image); "
                             "compute them with sample_losses(model, images)")
        losses = np.asarray(losses, dtype=np.float64)
        if losses.shape != (len(z),) or not np.isfinite(losses).all():
            raise ValueError(f"losses must be {len(z)} finite values, one per latent, got shape {losses.shape}")
        return losses.copy(), -losses
    scaled = scale_latents(z, cfg.latents)
    log_p = {"gmm": lambda: gmm_log_density(scaled, cfg.n_components, cfg.seed),
             "kde": lambda: kde_log_density(scaled, cfg.bandwidth),
             "knn": lambda: knn_log_density(scaled, cfg.k)}[name]()
    return -_smooth(log_p, alpha), log_p


def _standardised(log_w: np.ndarray) -> np.ndarray:
    spread = log_w.std()
    return (log_w - log_w.mean()) / spread if spread > 0 else np.zeros_like(log_w)


def _lab_max(neg: np.ndarray) -> np.ndarray:
    """[2]: per dimension, normalise 1/(Q̂ + α) over samples; keep each sample's largest."""
    return (neg - logsumexp(neg, axis=0, keepdims=True)).max(axis=1)


@torch.no_grad()
def sample_losses(model: torch.nn.Module, images: torch.Tensor | np.ndarray, batch_size: int = 512,
                  labels: torch.Tensor | np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Per-image negative ELBO in nats (N,) of a model that declares ``log_prob`` (one draw of z per
    image, from a generator seeded with ``seed``, so the same model gives the same losses)."""
    from genlib.models.base import LOG_PROB

    if LOG_PROB not in getattr(model, "capabilities", ()):
        raise ValueError(f"{type(model).__name__} does not declare {LOG_PROB!r}; the 'elbo' signal needs a "
                         f"model with a likelihood bound (a VAE family)")
    images, device = torch.as_tensor(images), model.device
    labels = None if labels is None else torch.as_tensor(labels)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _per_image(model, lambda x, y: -model.log_prob(x, y).double(), images, labels, batch_size).numpy()


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

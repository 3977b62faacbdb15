"""Has the model memorised its training set? Metrics over nearest-neighbour distances.

The neighbours come from ``knn.py``; these functions only read them.

* ``copy_rate``: the fraction of samples whose nearest / second-nearest training distance ratio
  is below a threshold (1/3): a sample far closer to one training image than to any other is
  a likely copy of it.
* ``data_copying_zscore``: the C_T statistic of [1]: in k-means cells of the training set, a
  Mann-Whitney test of generated→train nearest distances against test→train ones; strongly
  negative means generated samples sit closer to the training data than fresh data does.
* ``authenticity``: the share of generated samples farther from their nearest training image
  than that image is from its own nearest training neighbour [2].

[1] Meehan, Chaudhuri & Dasgupta, "A Non-Parametric Test to Detect Data-Copying in Generative
    Models", AISTATS 2020.
[2] Alaa et al., "How Faithful is your Synthetic Data? Sample-level Metrics for Evaluating and
    Auditing Generative Models", ICML 2022.

NOTE: [2] decides authenticity with a classifier over these distances; the plain distance
comparison used here is its deterministic core.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from genlib.evaluate.knn import Neighbours, nearest_neighbours


def copy_rate(neighbours: Neighbours, threshold: float = 1 / 3) -> tuple[float, np.ndarray]:
    """Fraction of queries with d1/d2 < threshold, and the per-query flags."""
    d1, d2 = neighbours.distances[:, 0], neighbours.distances[:, 1]
    flags = d1 < threshold * d2
    return float(flags.mean()), flags


KMEANS_ROWS = 50_000  # training rows the data-copying test's cells are fitted on (a seeded sample beyond)


def data_copying_zscore(train: np.ndarray, test: np.ndarray, generated: np.ndarray, cells: int = 10,
                        min_per_cell: int = 20, seed: int = 0, device: str | torch.device = "cpu",
                        distances: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, dict[int, float]]:
    """C_T of [1]: test-share-weighted mean of per-cell Mann-Whitney z-scores; also per cell.

    Cells with fewer than ``min_per_cell`` test or generated samples are left out, as in [1].
    ``distances``: the test→train and generated→train nearest distances, when the caller searched
    them (``workers.Workers``); ``train`` and ``test`` may then be memory-mapped files: the cells are
    fitted on at most ``KMEANS_ROWS`` training rows and assigned in chunks.

    NOTE: [1] fits the cells on the whole training set; beyond ``KMEANS_ROWS`` rows a seeded sample
    of them places the centroids (the test statistic still uses every test and generated sample)."""
    from sklearn.cluster import KMeans

    fit = train[:] if len(train) <= KMEANS_ROWS else train[np.sort(
        np.random.default_rng(seed).choice(len(train), KMEANS_ROWS, replace=False))]
    km = KMeans(n_clusters=cells, n_init=3, random_state=seed).fit(np.asarray(fit, np.float32))
    if distances is None:
        distances = tuple(nearest_neighbours(x[:], train[:], k=1, device=device).distances[:, 0]
                          for x in (test, generated))
    d_test, d_gen = distances
    c_test, c_gen = (np.concatenate([km.predict(np.asarray(x[s:s + 65536], np.float32))
                                     for s in range(0, len(x), 65536)]) for x in (test, generated))
    scores, weights = {}, {}
    for cell in range(cells):
        p, q = d_test[c_test == cell], d_gen[c_gen == cell]
        if len(p) < min_per_cell or len(q) < min_per_cell:
            continue
        scores[cell] = _mann_whitney_z(q, p)
        weights[cell] = len(p) / len(d_test)
    if not scores:
        raise ValueError(f"no cell holds {min_per_cell} test and generated samples; use fewer cells or more samples")
    total = sum(weights.values())
    return float(sum(scores[c] * weights[c] / total for c in scores)), scores


def _mann_whitney_z(q: np.ndarray, p: np.ndarray) -> float:
    """z of U = #{(i, j): q_i > p_j} (+½ per tie): negative when q is smaller than p."""
    from scipy.stats import rankdata

    m, n = len(q), len(p)
    ranks = rankdata(np.concatenate([q, p]))  # average ranks for ties
    u = ranks[:m].sum() - m * (m + 1) / 2
    return float((u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12))


def authenticity(generated_to_train: Neighbours, train_to_train: Neighbours) -> tuple[float, np.ndarray]:
    """Share of generated samples farther from their nearest training image than that image is
    from its own nearest training neighbour; and the per-sample flags (True = authentic)."""
    nearest = generated_to_train.indices[:, 0]
    flags = generated_to_train.distances[:, 0] > train_to_train.distances[nearest, 0]
    return float(flags.mean()), flags

"""Has the model memorised its training set? Nearest-neighbour tests over arrays (N, D).

* ``nearest_neighbours``: exact k-NN of queries among references, blocked over both sets so
  memory stays bounded (block_q × block_r distances at a time), on CPU or GPU.
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
from typing import NamedTuple

import numpy as np
import torch


class Neighbours(NamedTuple):
    distances: np.ndarray  # (Q, k) Euclidean, ascending
    indices: np.ndarray  # (Q, k) rows of the reference set


def nearest_neighbours(queries: np.ndarray, references: np.ndarray, k: int = 2, block_q: int = 1024,
                       block_r: int = 4096, device: str | torch.device = "cpu",
                       exclude_self: bool = False) -> Neighbours:
    """Exact k nearest references of every query (Euclidean), blocked over both sets.

    Ranking uses ‖r‖² − 2 q·r (one fused matrix product per block; ‖q‖² is the same for every
    candidate of a query and is added back to the k kept). ``exclude_self`` drops the match of a
    query with itself (queries and references the same array, same order)."""
    q_all = torch.as_tensor(np.asarray(queries, np.float32), device=device)
    r_all = torch.as_tensor(np.asarray(references, np.float32), device=device)
    if len(r_all) < k + int(exclude_self):
        raise ValueError(f"need at least {k + int(exclude_self)} references for k={k}, got {len(r_all)}")
    r_norms = (r_all * r_all).sum(1)
    dist_out, idx_out = [], []
    for qs in range(0, len(q_all), block_q):
        q = q_all[qs:qs + block_q]
        best_key = torch.full((len(q), k), math.inf, device=device)
        best_idx = torch.zeros((len(q), k), dtype=torch.long, device=device)
        for rs in range(0, len(r_all), block_r):
            key = torch.addmm(r_norms[rs:rs + block_r], q, r_all[rs:rs + block_r].T, alpha=-2)  # (b, block_r)
            if exclude_self:
                _mask_self(key, qs, rs)
            value, index = key.topk(min(k, key.shape[1]), dim=1, largest=False)
            best_key, order = torch.cat([best_key, value], 1).topk(k, dim=1, largest=False)
            best_idx = torch.cat([best_idx, index + rs], 1).gather(1, order)
        q_norms = (q * q).sum(1, keepdim=True)
        dist_out.append((best_key + q_norms).clamp_min(0).sqrt().cpu())
        idx_out.append(best_idx.cpu())
    return Neighbours(torch.cat(dist_out).numpy(), torch.cat(idx_out).numpy())


def _mask_self(key: torch.Tensor, q_start: int, r_start: int) -> None:
    """Set each query's own reference position (if inside this block) to +inf."""
    rows = torch.arange(key.shape[0], device=key.device)
    cols = rows + q_start - r_start
    inside = (cols >= 0) & (cols < key.shape[1])
    key[rows[inside], cols[inside]] = math.inf


def copy_rate(neighbours: Neighbours, threshold: float = 1 / 3) -> tuple[float, np.ndarray]:
    """Fraction of queries with d1/d2 < threshold, and the per-query flags."""
    d1, d2 = neighbours.distances[:, 0], neighbours.distances[:, 1]
    flags = d1 < threshold * d2
    return float(flags.mean()), flags


def data_copying_zscore(train: np.ndarray, test: np.ndarray, generated: np.ndarray, cells: int = 10,
                        min_per_cell: int = 20, seed: int = 0) -> tuple[float, dict[int, float]]:
    """C_T of [1]: test-share-weighted mean of per-cell Mann-Whitney z-scores; also per cell.

    Cells with fewer than ``min_per_cell`` test or generated samples are left out, as in [1]."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=cells, n_init=3, random_state=seed).fit(np.asarray(train, np.float32))
    d_test = nearest_neighbours(test, train, k=1).distances[:, 0]
    d_gen = nearest_neighbours(generated, train, k=1).distances[:, 0]
    c_test, c_gen = km.predict(np.asarray(test, np.float32)), km.predict(np.asarray(generated, np.float32))
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

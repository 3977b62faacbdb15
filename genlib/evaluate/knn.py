"""Nearest-neighbour search over arrays (N, D): exact and approximate, on CPU or GPU.

* ``nearest_neighbours``: exact k-NN of queries among references, blocked over both sets so
  memory stays bounded. A low-precision scan proves which references can be among the k
  nearest and only those are measured in float32 (see "Exact k-NN" below).
* ``IVFIndex`` / ``approximate_neighbours``: an inverted-file index [1] for reference sets too
  large to scan: references are clustered by coarse k-means and a query searches only its
  ``probes`` nearest cells; ``recall_at_k`` measures what that misses against the exact search.

[1] Jégou, Douze & Schmid, "Product Quantization for Nearest Neighbor Search", TPAMI 2011
    (the inverted file with a coarse k-means quantizer, IVF).

NOTE: [1] stores residuals compressed by product quantization; ``IVFIndex`` stores the vectors
themselves ("IVF-flat") and ranks a query's probed cells exactly, so with every cell probed it
returns the exact search's result.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import numpy as np
import torch

T, R = TypeVar("T"), TypeVar("R")


class Neighbours(NamedTuple):
    distances: np.ndarray  # (Q, k) Euclidean, ascending
    indices: np.ndarray  # (Q, k) rows of the reference set


# --- Exact k-NN ------------------------------------------------------------------------------
#
# One float32 pass costs a matrix product per (query, reference) pair, 2·D flops each, and that
# product is nearly all of the time (profiled on 10k × 200k × 256, 2 cores: the product 80%,
# top-k 18%, merges under 1%). So the search runs in two steps:
#
# 1. scan: ‖q − r‖² for every pair from one product in low precision (bfloat16 where the CPU
#    has native bfloat16 dot products: 1.1 against 5.3 ns a pair on one core here at D = 256),
#    kept only as the minimum over each group of GROUP references (an integer reduction, no top-k);
# 2. rank: the groups that can hold one of the k nearest, by a proven bound on the scan's error,
#    are measured in float32 and ranked. First the k groups with the smallest minima, which give
#    a k-th distance to beat; then every group whose lower bound does not exceed it.
#
# The bound. Write x̃ for x − mean rounded to the scan dtype and δx = (x − mean) − x̃ (computed
# exactly). The scan gives y = ‖q̃‖² + ‖r̃‖² − 2 q̃·r̃ (norms carried exactly in three bfloat16
# parts, products exact, summed in float32), so with Cauchy–Schwarz on q·r − q̃·r̃ = q̃·δr +
# δq·r̃ + δq·δr:
#     |y − ‖q − r‖²| ≤ u |y| + 2 (‖q̃‖ ‖δr‖ + ‖δq‖ (‖r̃‖ + ‖δr‖)) + slack · (‖q‖ + ‖r‖)²,
# u the rounding of the product's output and slack the float32 rounding of the sum, the norms
# and the centering (_slack); the float32 ranking errs relatively, by ≤ _rank_error · ‖q − r‖².
# Per group the reference norms are replaced by their maxima. Measured ‖δx‖ is ~0.4 of the worst
# case u‖x‖, which keeps the bound, and so the number of groups ranked, small (4.0 per query for
# k=2 on the bench data, 2 of them the first round; 2.0 with a float32 scan). Centering on the
# reference mean keeps the norms, and so the bound, small for data far from the origin. It stays
# loose where neighbours are much closer than ‖x − mean‖ (tight clusters far from the mean in
# high dimensions): then many groups are ranked, and the search slows, but stays exact.

GROUP = 32  # references summarised by one minimum in the scan; 16-64 time the same on the bench,
#             fewer references are ranked per group with 32 when many are tied (pixel data)
_U = 2.0 ** -24  # float32 unit roundoff
_TINY = 1e-30  # absolute slack for flushed denormals
_OUTPUT_ROUNDING = {torch.bfloat16: 2.0 ** -7, torch.float32: 2.0 ** -23}  # 2× round-to-nearest: covers truncation
_ROUND_UP = {torch.bfloat16: 2.0 ** -6, torch.float32: 2.0 ** -20}  # more than a conversion's rounding
_BITS = {torch.bfloat16: torch.int16, torch.float32: torch.int32}
_SWITCH_SHARE = 0.03  # share of references ranked above which a float32 scan pays (see _knn)
_FP32_INPUT_ROUNDING = 2.0 ** -7  # ‖δx‖/‖x‖ when a float32 matmul rounds inputs to TF32/bfloat16 itself
_RANK_BYTES = {"cpu": 2 ** 21}  # references gathered at once for ranking: cache-sized on CPU, 256 MiB elsewhere


def _gamma(n: int) -> float:
    """Relative error bound of a float32 sum of n + 1 terms in any order (Higham's γₙ)."""
    return n * _U / (1 - n * _U)


def _slack(dims: int) -> float:
    """Share of (‖q‖ + ‖r‖)² bounding the scan's float32 rounding: its sum of D + 6 terms (whose
    absolute values add up to ≤ (1 + 2⁻⁶)(‖q‖ + ‖r‖)²), the float32 norms, the centering and
    the norms' bfloat16 parts."""
    return _gamma(dims + 6) * (1 + 2 ** -6) + _gamma(dims) + 12 * _U


def _rank_error(dims: int) -> float:
    """Bound on |fl(‖q − r‖)² − ‖q − r‖²| / ‖q − r‖² for the float32 ranking (_distances)."""
    return _gamma(dims) + 6 * _U


class _Scan(NamedTuple):
    """The references as the scan sees them."""
    mean: torch.Tensor  # (D,) centre of the references
    lowp: torch.Tensor  # (Np, D + 6) [−2 r̃, ‖r‖² in three parts, 1, 1, 1]; Np: N padded to GROUP
    members: torch.Tensor  # (G, GROUP) reference rows of each group, ≥ N for padding
    norms: torch.Tensor  # (G, 3) per group max of ‖r‖, ‖δr‖ and ‖r‖ + ‖δr‖ (≥ ‖r̃‖)
    blocks: list[tuple[int, int]]  # (start, size) reference blocks, sizes multiples of GROUP


def nearest_neighbours(queries: np.ndarray, references: np.ndarray, k: int = 2, block_q: int = 1024,
                       block_r: int = 4096, device: str | torch.device = "cpu", exclude_self: bool = False,
                       scan_dtype: torch.dtype | None = None) -> Neighbours:
    """Exact k nearest references of every query (Euclidean), blocked over both sets.

    The result is that of an exhaustive float32 search: a low-precision scan only decides,
    with a proven error bound, which references need measuring (see "Exact k-NN" above).
    ``block_q`` × ``block_r`` (rounded up to a multiple of ``GROUP``) bounds the scan's memory.
    ``scan_dtype`` (bfloat16 or float32; default bfloat16 where the CPU has native bfloat16
    dot products, switching to float32 if it prunes too little) changes the speed, not the
    result. ``exclude_self`` drops the match of a query with itself (queries and references
    the same array, same order)."""
    q_all, r_all = _as_matrix(queries, "queries", device), _as_matrix(references, "references", device)
    return _to_numpy(*_knn(q_all, r_all, k, block_q, block_r, exclude_self, scan_dtype))


def _knn(q_all: torch.Tensor, r_all: torch.Tensor, k: int, block_q: int = 1024, block_r: int = 4096,
         exclude_self: bool = False, scan_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``nearest_neighbours`` on float32 tensors: (Q, k) distances and rows, on their device."""
    _check_knn(q_all, r_all, k, exclude_self)
    if scan_dtype is not None and scan_dtype not in _BITS:
        raise ValueError(f"scan_dtype {scan_dtype} is not supported; use one of {list(_BITS)}")
    scans = [_prepare_scan(r_all, block_r, scan_dtype or _fastest_scan_dtype(r_all.device))]
    dist = torch.empty(len(q_all), k, device=q_all.device)
    rows = torch.empty(len(q_all), k, dtype=torch.long, device=q_all.device)
    switching = threading.Lock()

    def search(qs: int) -> None:
        q, scan = q_all[qs:qs + block_q], scans[-1]
        dist[qs:qs + block_q], rows[qs:qs + block_q], ranked = _search_block(q, qs, r_all, scan, k, exclude_self)
        # Ranking a pair costs ~180 bfloat16 scan pairs (a gather; 200 against 1.1 ns at D = 256),
        # ~35 float32 ones. Where the bfloat16 bound is too loose to prune (see above) the
        # tighter float32 scan is cheaper overall: 2.7× on 3072-d pixels in tight clusters.
        if scan_dtype is None and scan.lowp.dtype != torch.float32 and ranked > _SWITCH_SHARE * len(q) * len(r_all):
            with switching:
                if scans[-1] is scan:
                    scans.append(_prepare_scan(r_all, block_r, torch.float32))

    _in_parallel(search, range(0, len(q_all), block_q), q_all.device)
    return dist, rows


def _in_parallel(work: Callable[[T], R], items: Sequence[T], device: torch.device) -> list[R]:
    """[work(item) for item in items]; on CPU from as many Python threads as torch has threads,
    each running single-threaded torch operations, like scikit-learn's prange over chunks.

    NOTE: this sets torch.set_num_threads(1) for the call (restored after). With one team of
    OpenMP threads per operation instead, a shared machine stalls every operation on its
    slowest thread while the others spin: the bench's exact search on 2 busy cores took
    12-47 s of wall time (12-20 s of CPU) that way against 2.1-6.0 s (3.4-4.7 s of CPU) this
    way, taking turns; on quiet cores both take 1.7 s."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1 or len(items) <= 1:
        return [work(item) for item in items]
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(work, items))
    finally:
        torch.set_num_threads(threads)


def _as_matrix(x: np.ndarray, name: str, device: str | torch.device) -> torch.Tensor:
    x = np.asarray(x, np.float32)
    t = torch.as_tensor(x if x.flags.writeable else x.copy(), device=device)  # a read-only memory map: copied
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (N, D), got shape {tuple(t.shape)}")
    return t


def _to_numpy(dist: torch.Tensor, rows: torch.Tensor) -> Neighbours:
    return Neighbours(dist.cpu().numpy(), rows.cpu().numpy())


def _check_knn(q_all: torch.Tensor, r_all: torch.Tensor, k: int, exclude_self: bool = False) -> None:
    if q_all.shape[1] != r_all.shape[1]:
        raise ValueError(f"queries have {q_all.shape[1]} dims and references {r_all.shape[1]}; they must match")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(r_all) < k + int(exclude_self):
        raise ValueError(f"need at least {k + int(exclude_self)} references for k={k}"
                         f"{' with exclude_self' if exclude_self else ''}, got {len(r_all)}; "
                         f"use k ≤ {len(r_all) - int(exclude_self)}")


def _fastest_scan_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CPUs that multiply it natively; float32 elsewhere (CUDA may reduce bfloat16
    products in bfloat16, which the error bound does not cover)."""
    native = device.type == "cpu" and any(getattr(torch.cpu, f"_is_{f}_supported", lambda: False)()
                                          for f in ("avx512_bf16", "amx_tile"))
    return torch.bfloat16 if native else torch.float32


def _fp32_matmul_is_exact(device: torch.device) -> bool:
    """False where float32 matmuls may round their inputs to TF32 or bfloat16."""
    backend = torch.backends.cuda.matmul if device.type == "cuda" else getattr(torch.backends.mkldnn, "matmul", None)
    return (torch.get_float32_matmul_precision() == "highest"
            and getattr(backend, "fp32_precision", "none") in ("none", "ieee"))


def _lowp(x: torch.Tensor, mean: torch.Tensor, dtype: torch.dtype, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x as the scan multiplies it, and per row ‖x − mean‖ and ‖δx‖ (see "Exact k-NN").

    Queries are [x̃, 1, 1, 1, ‖x‖² in three parts], references [−2 x̃, ‖x‖² in three parts,
    1, 1, 1]: one product gives ‖q̃‖² + ‖r̃‖² − 2 q̃·r̃. Built in row chunks that stay in cache."""
    n, d = x.shape
    out = torch.empty(n, d + 6, dtype=dtype, device=x.device)
    norms = torch.empty(n, 2, device=x.device)  # ‖x − mean‖, ‖δx‖
    rounds_itself = dtype == torch.float32 and not _fp32_matmul_is_exact(x.device)
    step = max(1, 2 ** 20 // d)  # rows: 4 MiB of float32
    for s in range(0, n, step):
        xc = x[s:s + step] - mean
        feat = out[s:s + step, :d]
        feat.copy_(xc)  # rounds to nearest
        torch.linalg.vector_norm(xc, dim=1, out=norms[s:s + step, 0])
        if rounds_itself:  # to an unknown nearby value: the worst case
            torch.mul(norms[s:s + step, 0], _FP32_INPUT_ROUNDING, out=norms[s:s + step, 1])
        else:
            torch.linalg.vector_norm(xc.sub_(feat), dim=1, out=norms[s:s + step, 1])
        if side == "references":
            feat.mul_(-2)  # exact: a power of two
    if not torch.isfinite(norms[:, 0]).all():  # a norm sees every element: cheaper than isfinite(x)
        raise ValueError(f"{side} hold NaN, inf or values too large to square in float32; "
                         f"distances to them are undefined")
    ones, parts = (slice(d, d + 3), slice(d + 3, d + 6)) if side == "queries" else (slice(d + 3, d + 6),
                                                                                  slice(d, d + 3))
    out[:, ones] = 1
    out[:, parts] = _split_bf16(norms[:, 0] ** 2).to(dtype)  # bfloat16 parts: exact in any matmul dtype
    return out, norms


def _split_bf16(x: torch.Tensor, parts: int = 3) -> torch.Tensor:
    """(n, parts) bfloat16-representable values summing to x within 2⁻²⁴ |x|."""
    out = []
    for _ in range(parts):
        out.append(x.to(torch.bfloat16).float())
        x = x - out[-1]
    return torch.stack(out, 1)


def _prepare_scan(r_all: torch.Tensor, block_r: int, dtype: torch.dtype) -> _Scan:
    n = len(r_all)
    mean = r_all.mean(0)
    lowp, norms = _lowp(r_all, mean, dtype, "references")
    pad = -n % GROUP
    if pad:  # padding rows scan as +inf: a zero vector of infinite norm
        filler = torch.zeros(pad, lowp.shape[1], dtype=dtype, device=lowp.device)
        filler[:, r_all.shape[1]] = math.inf
        lowp, norms = torch.cat([lowp, filler]), torch.cat([norms, norms.new_zeros(pad, 2)])
    block_r = -(-max(block_r, 1) // GROUP) * GROUP
    blocks = [(s, min(block_r, len(lowp) - s)) for s in range(0, len(lowp), block_r)]
    # Group c of a block holds its columns c, c + size/GROUP, ...: its minimum then reduces a
    # strided axis and vectorises along the contiguous one (20× faster than contiguous groups).
    members = torch.cat([torch.arange(size, device=lowp.device).view(GROUP, -1).T + s for s, size in blocks])
    per_row = torch.stack([norms[:, 0], norms[:, 1], norms.sum(1)], 1)  # (Np, 3)
    return _Scan(mean, lowp, members, per_row[members].amax(1), blocks)


def _search_block(q: torch.Tensor, q_start: int, r_all: torch.Tensor, scan: _Scan, k: int,
                  exclude_self: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Exact k nearest references of a block of queries: (b, k) distances and rows; and how
    many (query, reference) pairs were ranked."""
    b, dtype = len(q), scan.lowp.dtype
    qa, q_norms = _lowp(q, scan.mean, dtype, "queries")
    q_norms = torch.stack([q_norms[:, 0], q_norms[:, 1], q_norms.sum(1)], 1)  # (b, 3) like scan.norms
    minima = _group_minima(qa, scan, q_start, exclude_self)  # (b, G)
    # Round 1: the k groups with the smallest minima, ranked, give the k-th distance to beat.
    first = minima.topk(min(k, len(scan.members)), 1, largest=False).indices  # (b, k)
    owner = torch.arange(b, device=q.device).repeat_interleave(first.shape[1])
    dist, rows = _rank_groups(q, q_start, r_all, scan.members[first.reshape(-1)], owner, exclude_self)
    best, at = dist.view(b, -1).topk(k, 1, largest=False)  # (b, k)
    best_rows = rows.view(b, -1).gather(1, at)
    # Round 2: every other group whose lower bound does not exceed it.
    minima.scatter_(1, first, torch.iinfo(minima.dtype).max)
    limit = best[:, -1] ** 2 * (1 + 2 * _rank_error(q.shape[1]))  # ≥ the exact ‖q − r‖² of any that could beat it
    pairs = _groups_within(minima, limit, q_norms, scan.norms, dtype, q.shape[1])  # (P, 2)
    if len(pairs):
        dist, rows = _rank_groups(q, q_start, r_all, scan.members[pairs[:, 1]], pairs[:, 0], exclude_self)
        dist, at = dist.topk(min(k, GROUP), 1, largest=False)  # (P, ≤ k): a group's best first
        best, best_rows = _merge(best, best_rows, dist, rows.gather(1, at), pairs[:, 0])
    return best, best_rows, (first.numel() + len(pairs)) * GROUP


def _group_minima(qa: torch.Tensor, scan: _Scan, q_start: int, exclude_self: bool) -> torch.Tensor:
    """(b, G): per query, the smallest scanned ‖q − r‖² of each group, its bits read as integers.

    Non-negative floats order like their bits read as integers, and the integer minimum
    vectorises far better (0.03 vs 0.2 ns an element here). A negative y (rounding, for a
    reference at distance ~0) reads as a negative integer: _groups_within always keeps it."""
    b, bits = len(qa), _BITS[qa.dtype]
    minima = torch.empty(b, len(scan.members), dtype=bits, device=qa.device)
    buffer = torch.empty(b * max(size for _, size in scan.blocks), dtype=qa.dtype, device=qa.device)
    for start, size in scan.blocks:
        y = torch.mm(qa, scan.lowp[start:start + size].T, out=buffer[:b * size].view(b, size))  # (b, size)
        if exclude_self:
            _mask_self(y, q_start, start)
        torch.amin(y.view(bits).view(b, GROUP, size // GROUP), 1,
                   out=minima[:, start // GROUP:(start + size) // GROUP])
    return minima


def _groups_within(minima: torch.Tensor, limit: torch.Tensor, q_norms: torch.Tensor, g_norms: torch.Tensor,
                   dtype: torch.dtype, dims: int) -> torch.Tensor:
    """(P, 2) (query, group) pairs, sorted by query, whose lower bound on ‖q − r‖² is ≤ limit (b,)."""
    # A cheap necessary test on the integer bits with the largest group norms first, then the
    # group's own bound on the few pairs that pass.
    u = _OUTPUT_ROUNDING[dtype] / (1 - _OUTPUT_ROUNDING[dtype])  # relative to the rounded value
    worst = _scan_error(q_norms, g_norms.amax(0, keepdim=True), dims)  # (b,)
    pairs = (minima <= _bits_at_least((limit + worst) / (1 - u), dtype)[:, None]).nonzero()
    m = minima[pairs[:, 0], pairs[:, 1]]
    lower = m.view(dtype).float()
    lower = torch.where(m < 0, -math.inf, lower - u * lower.abs())
    lower -= _scan_error(q_norms[pairs[:, 0]], g_norms[pairs[:, 1]], dims)
    return pairs[lower <= limit[pairs[:, 0]]]


def _scan_error(q_norms: torch.Tensor, r_norms: torch.Tensor, dims: int) -> torch.Tensor:
    """The bound of "Exact k-NN" less its u |y| term; rows (‖x‖, ‖δx‖, ‖x‖ + ‖δx‖)."""
    (qc, qd, qt), (rc, rd, rt) = q_norms.unbind(-1), r_norms.unbind(-1)
    norms_rounding = 1 + 2 * _gamma(dims) + 8 * _U  # the norms are float32 themselves
    return 2 * (qt * rd + qd * (rt + rd)) * norms_rounding + _slack(dims) * (qc + rc) ** 2 + _TINY


def _bits_at_least(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x ≥ 0 in dtype, rounded up, its bits read as integers."""
    return (x * (1 + _ROUND_UP[dtype])).to(dtype).view(_BITS[dtype])


def _rank_groups(q: torch.Tensor, q_start: int, r_all: torch.Tensor, rows: torch.Tensor, owner: torch.Tensor,
                 exclude_self: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 distances (P, GROUP) of queries ``owner`` (P,) to reference ``rows`` (P, GROUP)."""
    dist = _distances(q, owner, r_all, rows)
    if exclude_self:
        dist.masked_fill_(rows == (owner + q_start)[:, None], math.inf)
    return dist, rows


def _distances(q: torch.Tensor, owner: torch.Tensor, r_all: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """fl(‖q[owner] − r_all[rows]‖), (P, m), for owner (P,) and rows (P, m); rows ≥ N give inf.

    The one place distances are measured, so exact and approximate search agree to the bit."""
    n, d = r_all.shape
    dist = torch.empty(rows.shape, device=q.device)
    safe = rows.clamp_max(n - 1)
    chunk = max(1, _RANK_BYTES.get(q.device.type, 2 ** 28) // (4 * d * rows.shape[1]))
    for s in range(0, len(rows), chunk):
        # index_select copies whole rows: 5× faster than indexing with the 2-d rows here
        diff = r_all.index_select(0, safe[s:s + chunk].reshape(-1)).view(-1, rows.shape[1], d)  # (c, m, D)
        diff.sub_(q[owner[s:s + chunk], None])
        torch.linalg.vector_norm(diff, dim=-1, out=dist[s:s + chunk])
    return dist.masked_fill_(rows >= n, math.inf)


def _merge(best: torch.Tensor, best_rows: torch.Tensor, dist: torch.Tensor, rows: torch.Tensor,
           owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of ``best`` (b, k) and of candidates ``dist``, ``rows`` (P, j) of queries ``owner`` (P,)."""
    (b, k), j = best.shape, dist.shape[1]
    order = owner.argsort(stable=True)
    owner, dist, rows = owner[order], dist[order], rows[order]
    counts = torch.bincount(owner, minlength=b)
    slot = torch.arange(len(owner), device=owner.device) - (counts.cumsum(0) - counts)[owner]  # rank within owner
    pool = torch.full((b, k + int(counts.max()) * j), math.inf, device=best.device)  # (b, k + most candidates)
    pool_rows = torch.full(pool.shape, -1, dtype=torch.long, device=best.device)
    pool[:, :k], pool_rows[:, :k] = best, best_rows
    at = owner.repeat_interleave(j), (k + slot[:, None] * j + torch.arange(j, device=owner.device)).reshape(-1)
    pool[at], pool_rows[at] = dist.reshape(-1), rows.reshape(-1)
    best, at = pool.topk(k, 1, largest=False)
    return best, pool_rows.gather(1, at)


def _mask_self(key: torch.Tensor, q_start: int, r_start: int) -> None:
    """Set each query's own reference position (if inside this block) to +inf."""
    rows = torch.arange(key.shape[0], device=key.device)
    cols = rows + q_start - r_start
    inside = (cols >= 0) & (cols < key.shape[1])
    key[rows[inside], cols[inside]] = math.inf


# --- Approximate k-NN: an inverted file (IVF-flat) -------------------------------------------

_CELL_ELEMENTS = 2 ** 24  # query × reference distances computed at once within one cell
_SCAN_PAIRS = 2 ** 20  # query × reference pairs from which a cell is searched like the exact search
#                        (the fastest of 2^18 ... 2^30 on the bench)


@dataclass(frozen=True, eq=False)
class IVFIndex:
    """References clustered into cells by coarse k-means [3] and stored cell by cell; a query
    searches only its ``probes`` nearest cells. Build once, search many times.

    NOTE: on data with more clusters than cells, Lloyd's algorithm leaves a few cells that
    merge many clusters; their centres lie near the data's centre, so most queries probe them
    and they dominate search time (the bench's clustered data: 65% of queries probe the
    largest cell). More lists (4-16 √N is common) even the cells out at a higher build cost."""
    centroids: torch.Tensor  # (lists, D) cell centres
    references: torch.Tensor  # (N, D) float32, sorted by cell
    rows: torch.Tensor  # (N,) row of each sorted reference in the references given
    offsets: list[int]  # cell c holds sorted references offsets[c]:offsets[c + 1]
    sq_norms: torch.Tensor  # (N,) ‖r‖² of the sorted references
    radius: torch.Tensor  # (lists,) largest ‖r‖ in each cell, for the float32 error bound

    @classmethod
    def build(cls, references: np.ndarray, lists: int | None = None, seed: int = 0, iterations: int = 10,
              sample_per_list: int = 64, device: str | torch.device = "cpu") -> IVFIndex:
        """Lloyd's k-means (``iterations`` rounds on a seeded sample of ``sample_per_list`` ×
        ``lists`` references; default lists ≈ √N), then every reference into its nearest cell."""
        r_all = _as_matrix(references, "references", device)
        lists = _check_lists(lists, len(r_all))
        centroids = _kmeans(r_all, lists, iterations, sample_per_list, seed)
        cell = _nearest_centroids(r_all, centroids, 1)[1][:, 0]
        rows = cell.argsort(stable=True)
        ordered = r_all[rows]
        norms = torch.linalg.vector_norm(ordered, dim=1)
        radius = norms.new_zeros(lists).scatter_reduce_(0, cell[rows], norms, "amax")
        offsets = [0, *torch.bincount(cell, minlength=lists).cumsum(0).tolist()]
        return cls(centroids, ordered, rows, offsets, norms ** 2, radius)

    @property
    def lists(self) -> int:
        return len(self.centroids)

    def search(self, queries: np.ndarray, k: int = 2, probes: int = 8) -> Neighbours:
        """k nearest references among those in each query's ``probes`` nearest cells, ranked
        exactly as ``nearest_neighbours`` does (probes = lists gives its result). A query whose
        cells hold fewer than k references gets distance inf and index -1 for the missing ones."""
        q_all = _as_matrix(queries, "queries", self.references.device)
        _check_knn(q_all, self.references, k)
        _check_probes(probes, self.lists)
        if not len(q_all):
            return _to_numpy(q_all.new_empty(0, k), torch.empty(0, k, dtype=torch.long))
        cells = _nearest_centroids(q_all, self.centroids, probes)[1]  # (Q, probes)
        owner, rows = self._candidates(q_all, cells, k)
        dist = _distances(q_all, owner, self.references, rows[:, None])  # (P, 1)
        best = torch.full((len(q_all), k), math.inf, device=q_all.device)
        best, at = _merge(best, torch.full_like(best, -1, dtype=torch.long), dist, rows[:, None], owner)
        return _to_numpy(best, torch.where(at < 0, -1, self.rows[at.clamp_min(0)]))

    def _candidates(self, q_all: torch.Tensor, cells: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(query, sorted reference) pairs that can be among a query's k nearest in its cells,
        found cell by cell for the queries probing it."""
        owner = torch.arange(len(q_all), device=q_all.device).repeat_interleave(cells.shape[1])
        owner = owner[cells.reshape(-1).argsort(stable=True)]  # grouped by cell
        per_cell = torch.bincount(cells.reshape(-1), minlength=self.lists).tolist()
        q_norms = torch.linalg.vector_norm(q_all, dim=1)
        starts = np.cumsum([0, *per_cell])
        jobs = [cell for cell, count in enumerate(per_cell) if count and self.offsets[cell + 1] > self.offsets[cell]]
        found = _in_parallel(lambda cell: self._cell_candidates(q_all, q_norms, owner[starts[cell]:starts[cell + 1]],
                                                                cell, k), jobs, q_all.device)
        if not found:  # every probed cell empty
            return owner[:0], owner[:0]
        return torch.cat([f[0] for f in found]), torch.cat([f[1] for f in found])

    def _cell_candidates(self, q_all: torch.Tensor, q_norms: torch.Tensor, who: torch.Tensor, cell: int,
                         k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidates in one cell for queries ``who``: (query, sorted reference) pairs.

        Small cells: ‖r‖² − 2 q·r from one float32 product, and every reference within twice
        its error bound (_cell_error) of the k-th smallest. Cells that many queries probe (on
        clustered data a few central cells take most queries): the exact search, whose
        low-precision scan is 5× faster there; it returns the cell's k nearest themselves."""
        lo, hi = self.offsets[cell], self.offsets[cell + 1]
        kk = min(k, hi - lo)
        if len(who) * (hi - lo) >= _SCAN_PAIRS:
            rows = _knn(q_all[who], self.references[lo:hi], kk)[1]  # (n, kk)
            return who.repeat_interleave(kk), rows.reshape(-1) + lo
        owners, rows = [], []
        error, step = _cell_error(q_all.shape[1], q_all.device), max(1, _CELL_ELEMENTS // (hi - lo))
        for s in range(0, len(who), step):
            part = who[s:s + step]
            key = torch.addmm(self.sq_norms[lo:hi], q_all[part], self.references[lo:hi].T, alpha=-2)  # (n, m)
            kth = key.topk(kk, 1, largest=False).values[:, -1]
            limit = kth + 2 * error * (q_norms[part] + self.radius[cell]) ** 2
            near = (key <= limit[:, None]).nonzero()
            owners.append(part[near[:, 0]])
            rows.append(near[:, 1] + lo)
        return torch.cat(owners), torch.cat(rows)


def _cell_error(dims: int, device: torch.device) -> float:
    """Share of (‖q‖ + ‖r‖)² bounding |fl(‖r‖² − 2 q·r) − (fl(‖q − r‖)² − ‖q‖²)|: the float32
    sum and norms, the ranking's own error, plus 2⁻⁶ where the matmul may round its inputs to
    TF32 or bfloat16."""
    return 2 * _gamma(dims + 1) + 4 * _U + _rank_error(dims) + (0.0 if _fp32_matmul_is_exact(device) else 2.0 ** -6)


def approximate_neighbours(queries: np.ndarray, references: np.ndarray, k: int = 2, lists: int | None = None,
                           probes: int = 8, seed: int = 0, device: str | torch.device = "cpu") -> Neighbours:
    """k nearest references of every query among its ``probes`` nearest of ``lists`` k-means
    cells (default lists ≈ √N); see ``IVFIndex``, and ``recall_at_k`` for what it misses.
    With probes = lists the result is the exact one."""
    _check_probes(probes, _check_lists(lists, len(references)))
    return IVFIndex.build(references, lists, seed, device=device).search(queries, k, probes)


def recall_at_k(approx: Neighbours, exact: Neighbours) -> float:
    """Share of the exact k nearest neighbours the approximate search found, by index (a
    different reference at a tied distance counts as missed)."""
    if approx.indices.shape != exact.indices.shape:
        raise ValueError(f"approximate and exact neighbours differ in shape: {approx.indices.shape} vs "
                         f"{exact.indices.shape}; search the same queries with the same k")
    return float((approx.indices[:, :, None] == exact.indices[:, None, :]).any(1).mean())


def _check_lists(lists: int | None, n: int) -> int:
    lists = max(1, round(math.sqrt(n))) if lists is None else lists
    if not 1 <= lists <= n:
        raise ValueError(f"lists must be between 1 and the number of references ({n}), got {lists}")
    return lists


def _check_probes(probes: int, lists: int) -> None:
    if not 1 <= probes <= lists:
        raise ValueError(f"probes must be between 1 and lists={lists} (a query searches at most every cell), "
                         f"got {probes}")


def _nearest_centroids(x: torch.Tensor, centroids: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, n) ≈ ‖x − c‖² and index of the n nearest centroids, from one product in the scan dtype.

    Not exact like _knn: a cell a rounding error away serves as well, and exact search ranks
    most centroids when they are nearly equidistant (building the bench's index took 4.8 s
    with it, 0.8 s without, on one core)."""
    dtype = _fastest_scan_dtype(x.device)
    mean = centroids.mean(0)
    lowp = _lowp(centroids, mean, dtype, "references")[0]
    found = _in_parallel(lambda s: torch.mm(_lowp(x[s:s + 4096], mean, dtype, "queries")[0], lowp.T).float()
                         .topk(n, 1, largest=False), range(0, len(x), 4096), x.device)
    return torch.cat([f.values for f in found]), torch.cat([f.indices for f in found])


def _kmeans(x: torch.Tensor, cells: int, iterations: int, per_cell: int, seed: int) -> torch.Tensor:
    """(cells, D) centroids by Lloyd's algorithm on a seeded random sample of x, started at
    random sample points; a cell left empty restarts at the sample point farthest from its own."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    sample = x[order[:cells * per_cell].to(x.device)]
    centroids = sample[:cells].clone()
    for _ in range(iterations):
        dist, nearest = _nearest_centroids(sample, centroids, 1)
        counts = torch.bincount(nearest[:, 0], minlength=cells)
        centroids = torch.zeros_like(centroids).index_add_(0, nearest[:, 0], sample) / counts.clamp_min(1)[:, None]
        empty = (counts == 0).nonzero()[:, 0]
        centroids[empty] = sample[dist[:, 0].topk(len(empty)).indices]
    return centroids

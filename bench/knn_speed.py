"""k-NN for memorization checks, same data, same run:

* exact: genlib's `nearest_neighbours` against scikit-learn's brute-force `NearestNeighbors` and
  FAISS's `IndexFlatL2` (what a user would reach for first); times, the speed-ups and how many
  queries got the same neighbours;
* approximate: genlib's IVF index (`IVFIndex`: build once, search) against the exact search and
  against FAISS's `IndexIVFFlat` with the same cells and probes, with recall@k, on the Gaussian data
  (the worst case for IVF: no cluster structure) and on a clustered variant (points around
  `--clusters` random centres).

Times are the minimum of `--repeats` runs, genlib and scikit-learn taking turns (the machine
may be shared).

    .venv/bin/python bench/knn_speed.py [--queries 10000] [--refs 200000] [--dims 256] [--k 2]
                                        [--lists √refs] [--probes 8] [--clusters 1000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import faiss
import numpy as np
import sklearn
import torch
from sklearn.neighbors import NearestNeighbors

from genlib.evaluate.knn import IVFIndex, Neighbours, nearest_neighbours, recall_at_k


def timed(*runs: Callable[[], object], repeats: int) -> list[tuple[float, object]]:
    """Per run, the minimum wall time over ``repeats`` rounds, and its last result. The runs
    take turns within a round, so a busy spell on a shared machine hits them alike."""
    best, results = [float("inf")] * len(runs), [None] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            started = time.perf_counter()
            results[i] = run()
            best[i] = min(best[i], time.perf_counter() - started)
    return list(zip(best, results))


def clustered(rng: np.random.Generator, n: int, dims: int, centres: np.ndarray) -> np.ndarray:
    """Points around random centres (unit spread) with noise of half that scale."""
    return (centres[rng.integers(len(centres), size=n)] + 0.5 * rng.normal(size=(n, dims))).astype(np.float32)


def approximate(name: str, queries: np.ndarray, refs: np.ndarray, exact: Neighbours, t_exact: float,
                args: argparse.Namespace) -> None:
    [(t_build, index)] = timed(lambda: IVFIndex.build(refs, args.lists), repeats=args.repeats)
    [(t_search, found)] = timed(lambda: index.search(queries, args.k, args.probes), repeats=args.repeats)
    print(f"IVF {name}: build {t_build:.2f} s, search {t_search:.2f} s (lists {index.lists}, probes {args.probes}); "
          f"exact {t_exact:.2f} s = search ×{t_exact / t_search:.1f}, build + search ×"
          f"{t_exact / (t_build + t_search):.1f}; recall@{args.k} {recall_at_k(found, exact):.4f}")
    [(f_build, faiss_index)] = timed(lambda: faiss_ivf(refs, index.lists), repeats=args.repeats)
    faiss_index.nprobe = args.probes
    [(f_search, (f_dist, f_idx))] = timed(lambda: faiss_index.search(queries, args.k), repeats=args.repeats)
    faiss_found = Neighbours(np.sqrt(np.maximum(f_dist, 0)), f_idx)
    print(f"  FAISS IndexIVFFlat, same lists and probes: build {f_build:.2f} s, search {f_search:.2f} s, "
          f"recall@{args.k} {recall_at_k(faiss_found, exact):.4f}; genlib/FAISS search time "
          f"{t_search / f_search:.2f}, build + search {(t_build + t_search) / (f_build + f_search):.2f}")


def faiss_flat(refs: np.ndarray):
    index = faiss.IndexFlatL2(refs.shape[1])
    index.add(refs)
    return index


def faiss_ivf(refs: np.ndarray, lists: int):
    quantizer = faiss.IndexFlatL2(refs.shape[1])
    index = faiss.IndexIVFFlat(quantizer, refs.shape[1], lists)
    index.train(refs)
    index.add(refs)
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=10000)
    parser.add_argument("--refs", type=int, default=200000)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--lists", type=int, default=None, help="IVF cells (default √refs)")
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(args.refs, args.dims)).astype(np.float32)
    queries = rng.normal(size=(args.queries, args.dims)).astype(np.float32)

    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), scikit-learn {sklearn.__version__}, FAISS {faiss.__version__} "
          f"({faiss.omp_get_max_threads()} threads); min of {args.repeats} runs")
    print(f"{args.queries} queries × {args.refs} references × {args.dims} dims, k={args.k}, float32")
    (t_ours, ours), (t_sk, (dist, idx)) = timed(
        lambda: nearest_neighbours(queries, refs, k=args.k),
        lambda: NearestNeighbors(n_neighbors=args.k, algorithm="brute").fit(refs).kneighbors(queries),
        repeats=args.repeats)
    print(f"exact: genlib {t_ours:.2f} s; sklearn brute {t_sk:.2f} s; speed-up sklearn/ours {t_sk / t_ours:.2f}×")
    print(f"queries with identical neighbours: {(ours.indices == idx).all(axis=1).mean():.4%}; max distance "
          f"difference {np.abs(ours.distances - dist).max():.2e}")
    flat = faiss_flat(refs)
    [(t_faiss, (f_dist, f_idx))] = timed(lambda: flat.search(queries, args.k), repeats=args.repeats)
    print(f"exact: FAISS IndexFlatL2 {t_faiss:.2f} s (index built beforehand); FAISS/ours time {t_faiss / t_ours:.2f}; "
          f"identical neighbours to ours: {(ours.indices == f_idx).all(axis=1).mean():.4%}; max distance difference "
          f"{np.abs(ours.distances - np.sqrt(np.maximum(f_dist, 0))).max():.2e} (FAISS: float32 squared distances "
          f"from norms and dot products)")

    approximate("gaussian", queries, refs, ours, t_ours, args)
    centres = rng.normal(size=(args.clusters, args.dims))
    refs, queries = clustered(rng, args.refs, args.dims, centres), clustered(rng, args.queries, args.dims, centres)
    [(t_exact, exact)] = timed(lambda: nearest_neighbours(queries, refs, k=args.k), repeats=args.repeats)
    approximate(f"{args.clusters} clusters", queries, refs, exact, t_exact, args)


if __name__ == "__main__":
    main()

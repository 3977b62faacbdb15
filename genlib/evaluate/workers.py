"""Where an evaluation's heavy steps run: in this process, or spread over Ray workers.

``eval.workers`` = 1 runs everything here. With ``eval.workers`` = n ≥ 2, sampling and feature
extraction run as Ray Data batch inference on a pool of n actors (each loads the model and the
feature network once, and takes ``eval.gpus_per_worker`` GPUs), and the searches and statistics
over reference sets run as Ray tasks, at most n at a time; on local Ray, or on the cluster
``RAY_ADDRESS`` names, with the data on storage every node reads. Work too small to pay for Ray
stays here: searches under ``RAY_MIN_WORK`` multiply-adds, and sampling or extraction whose first
batch, timed here, says the rest would be done before an actor pool had started (``RAY_POOL_SECONDS``).

Either way the work is cut into the same pieces:

* samples: batches of ``SAMPLE_BATCH``, batch i drawn under its own seed (``batch_seed``);
* features: batches of ``eval.batch_size`` images (a model's samples: within each sample batch);
* searches, ball counts and Gaussian moments over a reference set: shards of ``SHARD_ROWS`` rows,
  against query blocks of ``QUERY_ROWS`` rows;

and each piece runs with one torch thread, here (a Python thread per core, as the k-NN search
runs its blocks) as on a worker. So a piece gives the same bits wherever it runs, and the merges
— the exact top k by (distance, row); OR and sums of ball memberships; Chan's pairwise merge of
float64 moments, folded in shard order — give numbers that depend neither on the number of
workers nor on the order the pieces finish in.

A piece reads what it needs itself (``Rows``: a dataset split, a feature file in the cache, or an
array the driver holds, shipped once through Ray's object store), and the driver keeps only
per-query results, so its memory does not grow with the reference set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from genlib.evaluate.knn import Neighbours, _in_parallel, nearest_neighbours

log = logging.getLogger(__name__)

SAMPLE_BATCH = 256  # samples drawn at once, each batch under its own seed
SHARD_ROWS = 65536  # reference rows a search or statistics piece reads
QUERY_ROWS = 4096  # query rows a search or ball piece reads
BALL_ROWS = 512  # query rows a ball piece measures at once
# Searches, ball counts and moments smaller than this many multiply-adds (rows × rows × dims, or rows ×
# dims² for moments) run here even with eval.workers ≥ 2: shipping them costs more than they take
# (bench/eval_workers.py --crossover measures where two local Ray workers start to win).
RAY_MIN_WORK = 2e10
RAY_RETRIES = 3  # times Ray reruns a search or statistics task whose worker died
# What a Ray Data actor pool costs before its first batch comes back: 5.4–6.0 s for 2 actors with the
# digits domain network on a 2-core VM, Ray already up (bench/eval_workers.py --pool). Sampling or feature
# extraction whose first batch, timed here, says the rest would end sooner here than on a pool started
# now stays here (with as many workers as this process has cores, a pool never pays).
RAY_POOL_SECONDS = 6.0


def batch_seed(seed: int, batch: int) -> int:
    """The seed of sample batch ``batch`` of an evaluation seeded ``seed``: independent streams per batch,
    so any worker can draw any batch and get the same images."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1, np.uint64)[0] >> 1)


def shard_count(n: int) -> int:
    """How many shards a reference set of n rows is searched in."""
    return len(spans(n, SHARD_ROWS))


def search_spans(queries: int, refs: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """How a search of ``queries`` rows against ``refs`` rows is cut: query blocks and reference shards."""
    return spans(queries, QUERY_ROWS), spans(refs, SHARD_ROWS)


def spans(n: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of ``size`` rows covering n rows (the last may be shorter)."""
    return [(s, min(s + size, n)) for s in range(0, n, size)]


# --- What a piece reads -----------------------------------------------------------------------


class Rows:
    """A matrix a piece reads rows of, without the driver holding all of it."""

    def __getstate__(self) -> dict:
        """What a Ray task receives: where the rows are, never the rows a memory map opened here."""
        state = dict(self.__dict__)
        if not isinstance(self, ArrayRows):
            state.pop("array", None)
        return state

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def array(self) -> np.ndarray:
        """The whole matrix as an array (memory-mapped where it is a file): index it, do not copy it."""
        raise NotImplementedError

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return np.asarray(self.array[start:stop])

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        """Rows by a slice (step 1) or an index array, as an array."""
        if isinstance(key, slice) and key.step in (None, 1):
            return self.read(key.start or 0, key.stop)
        return self.take(np.asarray(key))

    def take(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (read in increasing order: a file is read once, forward)."""
        order = np.argsort(index, kind="stable")
        out = np.empty((len(index), *self.shape[1:]), self.array.dtype)
        out[order] = self.array[np.asarray(index)[order]]
        return out


@dataclass(frozen=True, eq=False)
class ArrayRows(Rows):
    """An array the driver holds (generated samples, their features)."""
    data: np.ndarray

    @property
    def array(self) -> np.ndarray:
        return self.data


@dataclass(frozen=True, eq=False)
class FileRows(Rows):
    """A ``.npy`` file (a split's features in the cache), read with positional reads: a process holds
    the rows it asked for, never pages of the file mapped into it."""
    path: str

    @cached_property
    def array(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")

    @cached_property
    def _layout(self) -> tuple[int, int, np.dtype]:
        """(offset of row 0, bytes per row, dtype), from the header (mapping a file reads none of its rows)."""
        mapped = self.array
        if not mapped.flags.c_contiguous:
            raise ValueError(f"{self.path}: not a C-ordered array; its rows are not contiguous")
        return mapped.offset, mapped.dtype.itemsize * int(np.prod(mapped.shape[1:], dtype=np.int64)), mapped.dtype

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        start, stop, _ = slice(start, stop).indices(len(self))
        offset, row, dtype = self._layout
        with open(self.path, "rb") as f:
            data = os.pread(f.fileno(), (stop - start) * row, offset + start * row)
        return np.frombuffer(bytearray(data), dtype).reshape(stop - start, *self.shape[1:])

    def take(self, index: np.ndarray) -> np.ndarray:
        offset, row, dtype = self._layout
        index = np.asarray(index)
        out = np.empty((len(index), *self.shape[1:]), dtype)
        with open(self.path, "rb") as f:
            for at in np.argsort(index, kind="stable"):  # forward through the file
                out[at] = np.frombuffer(os.pread(f.fileno(), row, offset + int(index[at]) * row), dtype).reshape(
                    self.shape[1:])
        return out


@dataclass(frozen=True, eq=False)
class SplitRows(Rows):
    """A dataset split's images: uint8 (N, C, H, W) (``pixels=False``), or float32 (N, C·H·W) pixels, the
    memorization checks' pixel space."""
    dataset: str
    split: str
    pixels: bool = False

    @cached_property
    def array(self) -> np.ndarray:
        from genlib.data.dataset import DatasetVersion
        return DatasetVersion(self.dataset).images(self.split)  # (N, H, W, C), memory-mapped

    @property
    def shape(self) -> tuple[int, ...]:
        n, h, w, c = self.array.shape
        return (n, c * h * w) if self.pixels else (n, c, h, w)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self._layout(np.asarray(self.array[start:stop]))

    def take(self, index: np.ndarray) -> np.ndarray:
        order = np.argsort(index, kind="stable")
        out = np.empty((len(index), *self.array.shape[1:]), np.uint8)
        out[order] = self.array[np.asarray(index)[order]]
        return self._layout(out)

    def _layout(self, images: np.ndarray) -> np.ndarray:
        images = images.transpose(0, 3, 1, 2)
        return images.reshape(len(images), -1).astype(np.float32) if self.pixels else np.ascontiguousarray(images)


@dataclass(frozen=True, eq=False)
class _StoredRows(Rows):
    """An ``ArrayRows`` put into Ray's object store once, read zero-copy by each piece."""
    ref: Any
    stored_shape: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.stored_shape

    @cached_property
    def array(self) -> np.ndarray:
        import ray
        return ray.get(self.ref)


@dataclass(frozen=True, eq=False)
class DerivedRows(Rows):
    """Rows computed from the rows of ``source`` as they are read (a piece computes them where it runs)."""
    source: Rows


def as_rows(x: Rows | np.ndarray | torch.Tensor) -> Rows:
    if isinstance(x, Rows):
        return x
    return ArrayRows(x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x))


# --- Pieces: pure functions of what they read, one torch thread --------------------------------


def _search_piece(queries: Rows, q: tuple[int, int], refs: Rows, r: tuple[int, int], k: int,
                  device: str) -> tuple[np.ndarray, np.ndarray]:
    """The exact k nearest rows of shard ``r`` for queries ``q``: (b, ≤ k) distances and global rows."""
    shard = np.array(refs.read(*r), np.float32)  # a copy: torch wants writable arrays
    found = nearest_neighbours(np.array(queries.read(*q), np.float32), shard, k=min(k, len(shard)), device=device)
    return found.distances, found.indices + r[0]


def _moments_piece(rows: Rows, r: tuple[int, int], device: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(n, mean, Σ (x − mean)(x − mean)ᵀ) of shard ``r``, in float64."""
    x = rows.read(*r).astype(np.float64)
    mean = x.mean(0)
    x -= mean
    return len(x), mean, x.T @ x


def _ball_piece(queries: Rows, q: tuple[int, int], centres: Rows, c: tuple[int, int], radii: np.ndarray,
                strict: bool, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For queries ``q`` against balls of ``radii`` around centres ``c``: per query whether it lies in any
    ball and in how many, per centre whether any query lies in its ball (``strict``: d < r, else d ≤ r).
    Distances ``BALL_ROWS`` queries at a time: 512 × 65,536 float32, 128 MiB."""
    centre = torch.from_numpy(np.array(centres.read(*c), np.float32)).to(device)
    r = torch.from_numpy(radii).to(device)[None, :]
    anywhere, count, covered = [], [], torch.zeros(len(centre), dtype=torch.bool, device=device)
    for s in range(q[0], q[1], BALL_ROWS):
        d = torch.cdist(torch.from_numpy(np.array(queries.read(s, min(s + BALL_ROWS, q[1])), np.float32)).to(device),
                        centre)
        inside = d < r if strict else d <= r
        anywhere.append(inside.any(1))
        count.append(inside.sum(1))
        covered |= inside.any(0)
    return torch.cat(anywhere).cpu().numpy(), torch.cat(count).cpu().numpy(), covered.cpu().numpy()


def _one_thread(fn: Callable, *args) -> Any:
    """Run a piece on a Ray worker with one torch thread, on its GPU if it was given one."""
    import ray
    torch.set_num_threads(1)
    return fn(*args, "cuda" if ray.get_gpu_ids() else "cpu")


# --- Ray Data: sampling and features on an actor pool ------------------------------------------


class _SampleActor:
    """Draws sample batches with the model it loaded once (from the object store), and extracts their
    features with the network it loaded once, when it was given one: one pool for both."""

    def __init__(self, model_ref, seed: int, truncation: float | None, labels: np.ndarray | None,
                 extractor_ref=None, batch_size: int = 512):
        import ray
        torch.set_num_threads(1)
        self.device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.model = ray.get(model_ref).to(self.device).eval()
        self.extractor = None if extractor_ref is None else ray.get(extractor_ref).to(self.device)
        self.seed, self.truncation, self.labels, self.batch_size = seed, truncation, labels, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = [sample_batch(self.model, int(b), int(s), int(e), self.seed, self.truncation, self.labels)
                  for b, s, e in zip(batch["batch"], batch["start"], batch["stop"])]
        out = {"row": np.concatenate([np.arange(s, e) for s, e in zip(batch["start"], batch["stop"])]),
               "images": np.concatenate(images)}
        if self.extractor is not None:  # each sample batch on its own, as in one process
            out["features"] = np.concatenate([self.extractor(torch.from_numpy(x), self.batch_size) for x in images])
        return out


class _FeatureActor:
    """Extracts features of image batches with the network it loaded once (from the object store)."""

    def __init__(self, extractor_ref, sources: list[Rows], batch_size: int):
        import ray
        torch.set_num_threads(1)
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.extractor = ray.get(extractor_ref).to(device)
        self.sources, self.batch_size = sources, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = list(zip(batch["source"].tolist(), batch["start"].tolist(), batch["stop"].tolist()))
        images = [np.array(self.sources[j].read(s, e)) for j, s, e in items]
        return {"source": np.concatenate([np.full(e - s, j) for j, s, e in items]),
                "row": np.concatenate([np.arange(s, e) for _, s, e in items]),
                "features": np.concatenate([self.extractor(torch.from_numpy(x), self.batch_size) for x in images])}


@torch.no_grad()
def sample_batch(model, batch: int, start: int, stop: int, seed: int, truncation: float | None,
                 labels: np.ndarray | None) -> np.ndarray:
    """Sample batch ``batch`` (rows ``start``–``stop``) of an evaluation: uint8 (n, C, H, W)."""
    generator = torch.Generator(device=model.device).manual_seed(batch_seed(seed, batch))
    extra = {} if truncation is None else {"truncation": truncation}
    wanted = None if labels is None else torch.from_numpy(labels[start:stop]).to(model.device)
    return model.sample(stop - start, wanted, generator=generator, **extra).cpu().numpy()


# --- Workers ----------------------------------------------------------------------------------


@dataclass
class Workers:
    """Runs an evaluation's pieces: here (``count`` = 1) or on ``count`` Ray workers."""
    count: int = 1
    gpus_per_worker: float = 0.0
    batch_size: int = 512  # images per feature-extraction batch
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # here: where pieces run
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _checked: bool = field(default=False, repr=False)

    @classmethod
    def from_config(cls, eval_cfg, device: torch.device | str = "cpu") -> Workers:
        return cls(eval_cfg.workers, eval_cfg.gpus_per_worker, eval_cfg.batch_size, torch.device(device))

    @property
    def on_ray(self) -> bool:
        return self.count > 1

    @property
    def feature_device(self) -> str:
        """The kind of device features are extracted on ("cpu", "cuda"): part of their cache key."""
        if self.on_ray:
            return "cuda" if self.gpus_per_worker > 0 else "cpu"
        return self.device.type

    def protocol(self) -> dict[str, Any]:
        """What the run records of how the work was spread (the numbers do not depend on it)."""
        return {"eval.workers": self.count, "eval.gpus_per_worker": self.gpus_per_worker,
                "eval.shard_rows": SHARD_ROWS, "eval.feature_batch": self.batch_size}

    # -- sampling and features

    def sample(self, model, n: int, seed: int, truncation: float | None = None,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` samples, uint8 (n, C, H, W): batch i of ``SAMPLE_BATCH`` drawn under ``batch_seed(seed, i)``."""
        return self.sample_features(model, n, seed, truncation, labels)[0]

    def sample_features(self, model, n: int, seed: int, truncation: float | None = None,
                        labels: torch.Tensor | None = None, extractor=None) -> tuple[torch.Tensor, np.ndarray | None]:
        """``sample``'s images and, with ``extractor``, their features (N, D), each sample batch extracted on
        its own in batches of ``batch_size``. On Ray the same actors draw and extract: one pool, unless the
        first batch, drawn here, says the rest would be done here before a pool started (``_pool_pays``)."""
        wanted = None if labels is None else labels.cpu().numpy()
        items = [(i, s, e) for i, (s, e) in enumerate(spans(n, SAMPLE_BATCH))]
        desc = f"sampling {n} images" + ("" if truncation is None else f" at ψ = {truncation:g}")
        started = time.perf_counter()
        first = sample_batch(model, *items[0], seed, truncation, wanted)  # its shape: the images'
        drawn = time.perf_counter() - started
        samples = np.empty((n, *first.shape[1:]), np.uint8)
        features = None if extractor is None else np.empty((n, extractor.dims), np.float32)

        def here(todo):  # batch after batch: a model's sampler need not be thread-safe
            for it in tqdm(todo, desc=desc, leave=False, disable=len(todo) < 4):
                samples[it[1]:it[2]] = first if it[0] == 0 else sample_batch(model, *it, seed, truncation, wanted)
            if extractor is not None:
                for it, found in zip(todo, self._here(lambda it: extractor(torch.from_numpy(samples[it[1]:it[2]]),
                                                                           self.batch_size), todo,
                                                      f"{extractor.name} features")):
                    features[it[1]:it[2]] = found

        rest = self._left_for_a_pool(here, items, desc, drawn)
        if not rest:
            return torch.from_numpy(samples), features
        import ray
        self._start()
        kwargs = {"model_ref": ray.put(_on_cpu(model)), "seed": seed, "truncation": truncation, "labels": wanted,
                  "extractor_ref": None if extractor is None else ray.put(_on_cpu(extractor)),
                  "batch_size": self.batch_size}
        for part in self._ray_data(_SampleActor, kwargs, [{"batch": i, "start": s, "stop": e} for i, s, e in rest],
                                   desc, n - items[0][2]):
            samples[part["row"]] = part["images"]
            if features is not None:
                features[part["row"]] = part["features"]
        return torch.from_numpy(samples), features

    def features(self, extractor, images: Rows | np.ndarray | torch.Tensor, out: Path | None = None) -> np.ndarray:
        """Features (N, D) of uint8 images (N, C, H, W), in batches of ``batch_size``; written into the
        ``.npy`` file ``out`` as they arrive when given (returned memory-mapped): the driver then holds
        one batch at a time, however large the split."""
        return self.features_of(extractor, [(images, out)])[0]

    def features_of(self, extractor, jobs: list[tuple[Rows | np.ndarray | torch.Tensor, Path | None]]
                    ) -> list[np.ndarray]:
        """``features`` of several image sets at once: on Ray, one actor pool (one start) for all, unless the
        first batch, extracted here, says the rest would be done here before a pool started."""
        sources = [as_rows(images) for images, _ in jobs]
        items = [(j, s, e) for j, source in enumerate(sources) for s, e in spans(len(source), self.batch_size)]
        desc = f"{extractor.name} features"
        with contextlib.ExitStack() as stack:
            sinks = [stack.enter_context(_FeatureSink(out, len(source), extractor.dims))
                     for source, (_, out) in zip(sources, jobs)]

            def extract(item):
                j, s, e = item
                sinks[j].put(s, extractor(torch.from_numpy(np.array(sources[j].read(s, e))), self.batch_size))

            rest = self._left_for_a_pool(lambda todo: self._here(extract, todo, desc), items, desc)
            if not rest:
                return [sink.result for sink in sinks]
            import ray
            self._start()
            kwargs = {"extractor_ref": ray.put(_on_cpu(extractor)),
                      "sources": [self._ship(source) for source in sources], "batch_size": self.batch_size}
            for part in self._ray_data(_FeatureActor, kwargs, [{"source": j, "start": s, "stop": e}
                                                               for j, s, e in rest],
                                       desc, sum(e - s for _, s, e in rest)):
                for start, stop in _runs(part["row"], part["source"]):  # one write per contiguous run
                    sinks[int(part["source"][start])].put(int(part["row"][start]), part["features"][start:stop])
        return [sink.result for sink in sinks]

    def _left_for_a_pool(self, here: Callable[[list], Any], items: list, what: str, spent: float = 0.0) -> list:
        """Run ``items`` with ``here``: all of them with one worker; with more, the first (timed, plus
        ``spent`` seconds already spent on it), then the rest too unless a pool would end sooner
        (``_pool_pays``). The items left for an actor pool."""
        if not self.on_ray:
            here(items)
            return []
        started = time.perf_counter()
        here(items[:1])
        rest = items[1:]
        if self._pool_pays(time.perf_counter() - started + spent, len(rest), what):
            return rest
        here(rest)
        return []

    def _pool_pays(self, first: float, remaining: int, what: str) -> bool:
        """Whether ``remaining`` more pieces like the first, which took ``first`` seconds here, end sooner on
        a new actor pool of ``count`` actors (``RAY_POOL_SECONDS`` to start) than on this process's cores
        (one Python thread per core on CPU, one lane on a GPU). Either way the pieces are the same: so are
        the numbers."""
        if not remaining:
            return False
        lanes = torch.get_num_threads() if self.device.type == "cpu" else 1
        here, there = first * remaining / lanes, RAY_POOL_SECONDS + first * remaining / self.count
        if there > here:
            log.info("eval.workers=%d: %s stays in this process (%.1f s here, by its first batch, against "
                     "%.1f s on an actor pool)", self.count, what, here, there)
        return there <= here

    # -- searches and statistics

    def neighbours(self, queries: Rows | np.ndarray, refs: Rows | np.ndarray, k: int,
                   exclude_self: bool = False, desc: str = "nearest neighbours") -> Neighbours:
        """The exact k nearest reference rows of every query (Euclidean; between shards, ties go to the
        lower row, within one the exact search picks); ``exclude_self``: queries and references are the
        same rows, and a row is not its own neighbour."""
        queries, refs = as_rows(queries), as_rows(refs)
        want = k + int(exclude_self)
        if len(refs) < want:
            raise ValueError(f"need at least {want} references for k={k}"
                             f"{' without each query itself' if exclude_self else ''}, got {len(refs)}")
        q_spans, r_spans = search_spans(len(queries), len(refs))
        best: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(q_spans)

        def merge(qi, found):
            with self._lock:
                best[qi] = found if best[qi] is None else top_k([best[qi], found], want)

        self.run_pieces(_search_piece, [(qi, (queries, q, refs, r, want)) for qi, q in enumerate(q_spans)
                                        for r in r_spans], desc, merge, len(queries) * len(refs) * refs.shape[1])
        ranked = [top_k([b], want) for b in best]  # one piece per block: its candidates still to order
        dist, rows = np.concatenate([d for d, _ in ranked]), np.concatenate([r for _, r in ranked])
        if exclude_self:
            dist, rows = drop_self(dist, rows)
        return Neighbours(dist, rows)

    def moments(self, rows: Rows | np.ndarray, desc: str = "feature statistics") -> tuple[np.ndarray, np.ndarray]:
        """Mean (D,) and covariance (D, D) of the rows in float64, merged from per-shard moments."""
        rows = as_rows(rows)
        if len(rows) < 2:
            raise ValueError(f"features must be (N ≥ 2, D), got shape {rows.shape}")
        r_spans = spans(len(rows), SHARD_ROWS)
        parts: dict[int, tuple] = {}
        folded: list[Any] = [None, 0]  # running moments, next shard to fold

        def merge(shard, found):
            with self._lock:
                parts[shard] = found
                while folded[1] in parts:
                    part = parts.pop(folded[1])
                    folded[0] = part if folded[0] is None else merge_moments(folded[0], part)
                    folded[1] += 1

        self.run_pieces(_moments_piece, [(i, (rows, r)) for i, r in enumerate(r_spans)], desc, merge,
                        len(rows) * rows.shape[1] ** 2)
        n, mean, m2 = folded[0]
        return mean, m2 / (n - 1)

    def kth_distances(self, rows: Rows | np.ndarray, k: int, desc: str = "k-NN radii") -> np.ndarray:
        """Each row's distance to its k-th nearest other row: the radius of its k-NN ball."""
        return self.neighbours(rows, rows, k, exclude_self=True, desc=desc).distances[:, k - 1]

    def balls(self, queries: Rows | np.ndarray, centres: Rows | np.ndarray, radii: np.ndarray, strict: bool,
              desc: str = "k-NN balls") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per query: inside any ball (bool) and inside how many (int); per centre: holds any query. The
        balls: ``radii`` around ``centres``; ``strict``: d < r, else d ≤ r."""
        queries, centres = as_rows(queries), as_rows(centres)
        radii = np.asarray(radii, np.float32)
        q_spans, c_spans = search_spans(len(queries), len(centres))
        anywhere = np.zeros(len(queries), bool)
        count = np.zeros(len(queries), np.int64)
        covered = np.zeros(len(centres), bool)

        def merge(item, found):
            (q0, q1), (c0, c1) = item
            with self._lock:
                anywhere[q0:q1] |= found[0]
                count[q0:q1] += found[1]
                covered[c0:c1] |= found[2]

        self.run_pieces(_ball_piece, [((q, c), (queries, q, centres, c, radii[c[0]:c[1]], strict))
                                      for q in q_spans for c in c_spans], desc, merge,
                        len(queries) * len(centres) * centres.shape[1])
        return anywhere, count, covered

    # -- running pieces

    def run_pieces(self, piece: Callable, items: Sequence[tuple[Any, tuple]], desc: str,
                   merge: Callable[[Any, Any], None], work: float) -> None:
        """``merge(key, piece(*args))`` for every (key, args) item: as Ray tasks, or here with one worker or
        under ``RAY_MIN_WORK`` multiply-adds (the same pieces: the same numbers)."""
        bar = tqdm(total=len(items), desc=desc, leave=False, disable=len(items) < 4)
        try:
            if not self.on_ray or work < RAY_MIN_WORK:
                def run(item):
                    merge(item[0], piece(*item[1], str(self.device)))
                    bar.update()
                self._here(run, items)
                return
            for key, found in self._ray_tasks(piece, items):
                merge(key, found)
                bar.update()
        finally:
            bar.close()

    def _here(self, work: Callable, items: Sequence, desc: str | None = None) -> list:
        """[work(item) ...] in this process with one torch thread per Python thread (one Python thread
        per core on CPU, as the k-NN search runs its blocks), as a Ray worker runs a piece."""
        bar = tqdm(total=len(items), desc=desc, leave=False, disable=desc is None or len(items) < 4)
        threads = torch.get_num_threads()

        def run(item):
            out = work(item)
            bar.update()
            return out
        try:
            if self.device.type == "cpu" and threads > 1 and len(items) > 1:
                return _in_parallel(run, items, self.device)  # one torch thread in each
            torch.set_num_threads(1)
            try:
                return [run(item) for item in items]
            finally:
                torch.set_num_threads(threads)
        finally:
            bar.close()

    def check_placement(self) -> None:
        """Refuse workers the Ray cluster (or, before Ray starts, this machine) can never place, rather
        than wait for them forever."""
        from genlib.train.launch import check_placement

        need = {"CPU": 1.0, **({"GPU": self.gpus_per_worker} if self.gpus_per_worker else {})}
        check_placement(self.count, need, "eval.workers", "eval.workers or eval.gpus_per_worker")

    def _start(self) -> None:
        """Join or start Ray (``RAY_ADDRESS``), and check once that it can place the workers."""
        ensure_ray()
        if not self._checked:
            self.check_placement()
            self._checked = True

    def _ship(self, rows: Rows) -> Rows:
        """Rows a Ray worker can read: an array the driver holds goes into the object store once."""
        if isinstance(rows, ArrayRows):
            import ray
            return _StoredRows(ray.put(rows.data), rows.shape)
        if isinstance(rows, DerivedRows):
            return dataclasses.replace(rows, source=self._ship(rows.source))
        return rows

    def _ray_tasks(self, piece: Callable, items: Sequence[tuple[Any, tuple]]) -> Iterator[tuple[Any, Any]]:
        """(key, result) of each item as its Ray task finishes, at most ``count`` running at once."""
        import ray
        self._start()
        shipped: dict[int, Rows] = {}

        def ship(arg):
            if isinstance(arg, (ArrayRows, DerivedRows)):  # each array into the object store once
                if id(arg) not in shipped:
                    shipped[id(arg)] = self._ship(arg)
                return shipped[id(arg)]
            return arg

        remote = ray.remote(num_cpus=1, num_gpus=self.gpus_per_worker, max_retries=RAY_RETRIES)(_one_thread)
        pending: dict[Any, Any] = {}
        todo = iter(items)
        while True:
            while len(pending) < self.count and (item := next(todo, None)) is not None:
                pending[remote.remote(piece, *[ship(a) for a in item[1]])] = item[0]
            if not pending:
                return
            done, _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(done[0]), ray.get(done[0])

    def _ray_data(self, actor: type, kwargs: dict, items: list[dict], desc: str, total: int) -> Iterator[dict]:
        """Stream ``items`` through a Ray Data actor pool of ``count`` actors; yield each output batch. An
        actor that dies (its node lost, its process killed) is replaced and its batch rerun: Ray Data's
        default for actor pools (an exception raised by our code is not retried)."""
        import ray.data
        self._start()
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        dataset = ray.data.from_items(items).map_batches(
            actor, fn_constructor_kwargs=kwargs, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.count), num_cpus=1, num_gpus=self.gpus_per_worker)
        with tqdm(total=total, desc=desc, leave=False) as bar:
            for part in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                bar.update(len(part["row"]))
                yield part


class _FeatureSink:
    """Where extracted features go: an array here, or a ``.npy`` file written at each batch's offset
    (positional writes, no memory map: the driver's memory holds none of the file)."""

    def __init__(self, out: Path | None, n: int, dims: int):
        self.out, self.dims = out, dims
        if out is None:
            self.array = np.empty((n, dims), np.float32)
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        header = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, dims))
        self.offset = header.offset
        del header
        self.fd = os.open(out, os.O_WRONLY)

    def __enter__(self) -> _FeatureSink:
        return self

    def put(self, start: int, features: np.ndarray) -> None:
        if self.out is None:
            self.array[start:start + len(features)] = features
        else:
            os.pwrite(self.fd, np.ascontiguousarray(features, np.float32).tobytes(), self.offset + start * self.dims * 4)

    def __exit__(self, *exc) -> None:
        if self.out is not None:
            os.close(self.fd)

    @property
    def result(self) -> np.ndarray:
        return self.array if self.out is None else np.load(self.out, mmap_mode="r")


def _runs(rows: np.ndarray, sources: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) positions of the runs of consecutive rows of one source."""
    breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(sources) != 0)) + 1
    edges = [0, *breaks.tolist(), len(rows)]
    return list(zip(edges[:-1], edges[1:]))


def _on_cpu(module):
    """A module as the object store ships it: on the CPU (a worker moves it to its own device)."""
    device = getattr(module, "device", torch.device("cpu"))
    if torch.device(device).type == "cpu":
        return module
    import copy
    return copy.deepcopy(module).to("cpu")


def ensure_ray() -> None:
    from genlib.train.launch import ensure_ray as start
    start()


# --- Merges -----------------------------------------------------------------------------------


def top_k(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (distance, row) pairs along the last axis of several candidate lists (per query, or per
    query and version), ties to the lower row: a total order, so the result does not depend on how the
    candidates were split or ordered."""
    dist = np.concatenate([p[0] for p in parts], -1)
    rows = np.concatenate([p[1] for p in parts], -1)
    order = np.lexsort((rows, dist), axis=-1)[..., :k]
    return np.take_along_axis(dist, order, -1), np.take_along_axis(rows, order, -1)


def drop_self(dist: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """k nearest others from k + 1 nearest rows of a self-search (query i is row i): drop row i, or,
    where k + 1 rows tie with it at distance 0 and it lost the tie, the last."""
    own = rows == np.arange(len(rows))[:, None]
    own[~own.any(1), -1] = True
    keep = ~own
    k = rows.shape[1] - 1
    return dist[keep].reshape(-1, k), rows[keep].reshape(-1, k)


def merge_moments(a: tuple[int, np.ndarray, np.ndarray], b: tuple[int, np.ndarray, np.ndarray]
                  ) -> tuple[int, np.ndarray, np.ndarray]:
    """(n, mean, Σ centred outer products) of two sets together (Chan, Golub & LeVeque's pairwise
    update): as stable as one pass over both."""
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), sa + sb + np.outer(delta, delta) * (na * nb / n)


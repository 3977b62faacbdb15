"""The evaluate stage in one process against ``eval.workers=2`` on local Ray, same checkpoint, same data:

* data: a 8×8 digits set grown to ``--reference`` training images (each digit shifted by up to a pixel
  and its grey levels jittered by ±1, 17 levels kept), with val and test splits of a tenth each;
* model: the ``digits-quick`` VAE trained for ``--epochs`` epochs on the plain digits set;
* evaluation: ``--generated`` samples scored against it (FID/KID/precision-recall/density-coverage
  against the test split, copy rates, authenticity and data-copying against the train split), in the
  digits domain network's feature space (``eval.extractor_from``), ``eval.iwae_k=1`` (the likelihood
  is not spread over workers) and ``eval.robust_copies=--robust`` (default none: the transform-robust
  copy searches, 54 versions of each sample, would outweigh everything else; ``--robust
  pixel+features --reference 50000 --generated 2000`` measures them);
* three configurations: one process on one torch thread (the baseline: the ideal for 2 workers is
  2× its speed), one process on every core (its pieces run on one Python thread per core: on this
  2-core machine 2 workers can at best match it), and 2 Ray workers;
* each runs in a fresh process, cold (reference features, their statistics and the train split's
  self-neighbours computed) and then warm (read back from the cache), and prints its wall time and
  the driver's peak rise in heap and in file pages (memory-mapped files read; reclaimable) over
  what it held with its libraries loaded; not Ray's object store. The metrics of the first and
  last configurations are compared: they must agree to 1e-9.
* ``--crossover``: instead, where two workers start to beat one process at the exact search: 2000
  queries against 4k–1M references of 128 dims (Gaussian), each timed here and on 2 local Ray workers
  (Ray already up, its workers warm), with the multiply-adds (queries × references × dims) of each;
  ``RAY_MIN_WORK`` in ``genlib/evaluate/workers.py`` is set from it.
* ``--pool``: what starting a Ray Data actor pool costs before its first batch comes back
  (``RAY_POOL_SECONDS`` is set from it): the digits train split through the domain network in one
  process and on 2 actors, twice each.

    .venv/bin/python bench/eval_workers.py [--reference 200000] [--generated 10000] [--epochs 3] [--robust none]
    .venv/bin/python bench/eval_workers.py --crossover
    .venv/bin/python bench/eval_workers.py --pool
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def grown_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n 8×8 images in 17 levels: sklearn's digits, each shifted by up to one pixel (zeros fill) and
    its levels jittered by ±1; and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = digits.images.astype(np.int16), digits.target
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(images), n)
    out = np.zeros((n, 8, 8), np.int16)
    shifts = rng.integers(-1, 2, (n, 2))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            mine = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            moved = np.roll(images[pick[mine]], (dy, dx), axis=(1, 2))
            if dy:
                moved[:, 0 if dy > 0 else -1, :] = 0
            if dx:
                moved[:, :, 0 if dx > 0 else -1] = 0
            out[mine] = moved
    out += (rng.integers(-1, 2, out.shape) * (out > 0)).astype(np.int16)  # jitter the strokes, not the background
    return np.clip(out, 0, 16).astype(np.uint8), labels[pick]


def memory() -> tuple[int, int]:
    """This process's resident (heap, file pages) in bytes; file pages include memory-mapped files read."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return tuple(int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "RssFile"))


def child(args) -> None:
    """One evaluation in this process: prints a JSON line with its wall time, peak memory and metrics."""
    import mlflow  # noqa: F401 - the libraries the stage loads, loaded before "before"
    import ray  # noqa: F401
    import sklearn.cluster  # noqa: F401

    import genlib.evaluate.suite  # noqa: F401
    from genlib.presets import load_config
    from genlib.stages.evaluate import evaluate

    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    peak, done = [0, 0], threading.Event()

    def watch():
        while not done.is_set():
            peak[:] = [max(p, m) for p, m in zip(peak, memory())]
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    cfg = load_config("digits-quick", [f"eval.workers={args.workers}", f"eval.n_generated={args.generated}",
                                       "eval.iwae_k=1", f"eval.robust_copies={args.robust}", "eval.n_samples=16",
                                       f"eval.extractor_from={args.network}"])
    before = memory()
    peak[:] = before
    start = time.perf_counter()
    result = evaluate(cfg, args.checkpoint, args.dataset)
    wall = time.perf_counter() - start
    done.set()
    peak[:] = [max(p, m) for p, m in zip(peak, memory())]
    print("RESULT " + json.dumps({"wall_s": wall, "heap_rise_mib": (peak[0] - before[0]) / 2 ** 20,
                                  "file_rise_mib": (peak[1] - before[1]) / 2 ** 20, "before_mib": sum(before) / 2 ** 20,
                                  "metrics": result.metrics}))


def crossover() -> None:
    """Exact search, one process against two local Ray workers, over growing reference sets."""
    import genlib.evaluate.workers as workers
    from genlib.evaluate.workers import FileRows, Workers

    workers.RAY_MIN_WORK = 0  # every search to the workers
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(2000, 128)).astype(np.float32)
    here, spread = Workers(1), Workers(2)
    spread.neighbours(queries[:10], queries, 2)  # Ray started, its workers warm
    print(f"machine: {platform.node()}, {os.cpu_count()} cores; exact k=2 search of 2000 queries, 128 dims")
    folder = Path(tempfile.mkdtemp(prefix="genlib-crossover-"))
    for n in (4096, 16384, 65536, 262144, 1048576):
        np.save(folder / "refs.npy", rng.normal(size=(n, 128)).astype(np.float32))  # read by the pieces, as the
        refs = FileRows(str(folder / "refs.npy"))  # evaluation's references are
        times = {}
        for name, who in (("here", here), ("2 workers", spread)):
            start = time.perf_counter()
            found = who.neighbours(queries, refs, 2)
            times[name] = time.perf_counter() - start
        print(f"{n:8d} references ({2000 * n * 128:.1e} multiply-adds): one process {times['here']:6.2f} s, "
              f"2 workers {times['2 workers']:6.2f} s, ratio {times['here'] / times['2 workers']:.2f}", flush=True)
        assert found.indices.shape == (2000, 2)


def pool() -> None:
    """What a Ray Data actor pool costs before its first batch (``RAY_POOL_SECONDS``): 2 feature actors
    (the digits domain network) extracting the digits train split (1259 images) in batches of 100, Ray
    already up, against one process."""
    import ray

    import genlib.evaluate.workers as workers
    from genlib.config import DataConfig
    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.evaluate.features import load_extractor
    from genlib.evaluate.workers import SplitRows, Workers

    os.environ["GENLIB_HOME"] = tempfile.mkdtemp(prefix="genlib-pool-")
    digits = DatasetVersion(prepare(DataConfig(source="digits")).path)
    extractor = load_extractor("domain", digits)
    images = SplitRows(str(digits.path), "train")
    workers.RAY_POOL_SECONDS = 0  # the pool, whatever the first batch says
    ray.init(address="local", num_cpus=2, logging_level="WARNING")
    print(f"machine: {platform.node()}, {os.cpu_count()} cores; {len(images)} digits in batches of 100, "
          f"domain network ({extractor.dims} features)")
    for label, who in (("one process", Workers(1, batch_size=100)), ("2 Ray actors", Workers(2, batch_size=100))):
        for attempt in range(2):
            arrived = []
            real = workers.Workers._ray_data

            def timed(self, *args, **kwargs):
                for part in real(self, *args, **kwargs):
                    arrived.append(time.perf_counter())
                    yield part
            workers.Workers._ray_data = timed
            start = time.perf_counter()
            who.features(extractor, images)
            took = time.perf_counter() - start
            workers.Workers._ray_data = real
            first = f", first batch back after {arrived[0] - start:.2f} s" if arrived else ""
            print(f"{label}, run {attempt + 1}: {took:.2f} s{first}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=int, default=200_000, help="training images of the grown set")
    parser.add_argument("--generated", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--robust", default="none", choices=("none", "pixel", "pixel+features"),
                        help="eval.robust_copies (default none: the searches over 54 versions of each sample "
                             "outweigh the rest at 10k samples against 200k)")
    parser.add_argument("--crossover", action="store_true", help="where 2 workers start to beat one process")
    parser.add_argument("--pool", action="store_true", help="what an actor pool costs before its first batch")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--network", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.crossover:
        return crossover()
    if args.pool:
        return pool()

    home = Path(tempfile.mkdtemp(prefix="genlib-eval-workers-"))
    os.environ["GENLIB_HOME"] = str(home)
    from genlib.config import DataConfig
    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.evaluate.domain import export_domain
    from genlib.evaluate.features import load_extractor
    from genlib.presets import load_config
    from genlib.stages.train import train

    digits = DatasetVersion(prepare(DataConfig(source="digits")).path)
    network = export_domain(load_extractor("domain", digits), home / "digits-network")
    images, labels = grown_digits(int(args.reference / 0.8) + 1)
    np.savez(home / "grown.npz", images=images, labels=labels)
    grown = DatasetVersion(prepare(DataConfig(source="npz", path=str(home / "grown.npz"), levels=17,
                                              val_fraction=0.1, test_fraction=0.1)).path)
    splits = grown.manifest["splits"]
    cfg = load_config("digits-quick", [f"train.epochs={args.epochs}"])
    checkpoint = train(cfg, digits.path).checkpoint
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
          f"python {platform.python_version()}")
    print(f"grown digits: {splits['train']} train, {splits['val']} val, {splits['test']} test images (8×8, 17 levels); "
          f"{args.generated} samples of a VAE trained {args.epochs} epochs on the digits; eval.robust_copies={args.robust}")

    # One process on one core (the baseline for the ideal 2×), one process on every core (its pieces on
    # one Python thread per core), two Ray workers of one core each.
    configs = {"1 process, 1 thread": (1, 1), f"1 process, {os.cpu_count()} threads": (1, 0),
               "2 Ray workers": (2, 0)}
    results = {}
    for label, (workers, threads) in configs.items():
        for cache in ("cold", "warm"):
            if cache == "cold":  # the grown set's references computed anew (the domain network stays)
                for cached in (home / "features").glob("*.np[yz]"):
                    cached.unlink()
            out = subprocess.run([sys.executable, __file__, "--child", f"--workers={workers}", f"--threads={threads}",
                                  f"--generated={args.generated}", f"--robust={args.robust}", f"--checkpoint={checkpoint}",
                                  f"--dataset={grown.path}", f"--network={network}"],
                                 env={**os.environ, "GENLIB_HOME": str(home)}, capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"the evaluation ({label}) failed:\n{out.stderr[-4000:]}")
            r = results[label, cache] = json.loads(out.stdout.split("RESULT ", 1)[1].splitlines()[0])
            print(f"{label:22} {cache:4}: {r['wall_s']:6.1f} s; the driver's peak rise: heap {r['heap_rise_mib']:+5.0f} "
                  f"MiB, file pages {r['file_rise_mib']:+5.0f} MiB (over {r['before_mib']:.0f} MiB with its libraries "
                  f"loaded)", flush=True)
    base, single, two = configs
    for cache in ("cold", "warm"):
        print(f"{cache}: 2 Ray workers {results[base, cache]['wall_s'] / results[two, cache]['wall_s']:.2f}× the speed "
              f"of one process on one thread (ideal: 2×), {results[single, cache]['wall_s'] / results[two, cache]['wall_s']:.2f}× "
              f"that of one process on {os.cpu_count()} threads (ideal on this machine: 1×)")
    one, two = results[base, "cold"]["metrics"], results[two, "cold"]["metrics"]
    worst = max(abs(two[k] - v) / max(abs(v), 1e-12) for k, v in one.items())
    print(f"metrics: {len(one)} equal in both, largest relative difference {worst:.1e}; e.g. "
          + ", ".join(f"{k} {one[k]:.4g}" for k in ("fid_domain", "precision_domain", "recall_domain",
                                                    "copy_rate_pixel", "authenticity_pixel", "copy_rate_pixel_robust",
                                                    "copy_rate_domain_robust") if k in one))
    if one.keys() != two.keys() or worst > 1e-9:
        sys.exit("the two configurations disagree")


if __name__ == "__main__":
    main()

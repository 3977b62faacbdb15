"""Audit wall time: ``--samples`` images against a dataset version of about ``--train`` training images.

The dataset is sklearn's real 8×8 digits, tiled: every copy of the 1797 images is moved by a random
pixel in each direction and gets ±1 level of noise, so no two training images are equal. The samples
are held-out test images with the same kind of jitter, in an ``.npz``. ``genlib.stages.audit.audit``
runs end to end into a local MLflow store: the domain network, the reference features, the held-out
calibration, FID/KID/precision/recall/density/coverage, the plain and the transform-robust copy
searches (pixel and feature space) and the report. Printed: the wall time of a first audit (nothing
cached) and of a second one on other samples (references cached), with the machine.

    .venv/bin/python bench/audit_speed.py [--train 200000] [--samples 10000]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def jittered(images, copies: int, rng):
    """``copies`` versions of each image (N, 8, 8) in 0..16, moved by up to a pixel, with ±1 level of noise."""
    import numpy as np

    out = []
    for _ in range(copies):
        dy, dx = rng.integers(-1, 2, size=2)
        moved = np.roll(images, (dy, dx), axis=(1, 2))
        out.append(np.clip(moved + rng.integers(-1, 2, size=images.shape), 0, 16))
    return np.concatenate(out).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=200_000, help="about this many training images")
    parser.add_argument("--samples", type=int, default=10_000)
    args = parser.parse_args()
    home = Path(os.environ.setdefault("GENLIB_HOME", tempfile.mkdtemp(prefix="genlib-bench-")))
    os.environ.setdefault("TQDM_DISABLE", "1")

    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    from genlib.data.prepare import prepare
    from genlib.presets import load_config
    from genlib.stages.audit import audit
    from genlib.tracking import Tracker

    rng = np.random.default_rng(0)
    digits = load_digits()
    base = digits.images.astype(np.uint8)
    copies = max(1, round(args.train / 0.7 / len(base)))  # 70 % of the version is its train split
    images = jittered(base, copies, rng)
    npz = home / "digits-tiled.npz"
    np.savez(npz, images=images, labels=np.tile(digits.target, copies))
    cfg = load_config("digits", ["data.source=npz", f"data.path={npz}", "data.levels=17"])
    started = time.perf_counter()
    version = prepare(cfg.data)
    prepare_seconds = time.perf_counter() - started
    splits = version.manifest["splits"]

    tracker = Tracker(f"sqlite:///{home / 'mlflow.db'}")
    times = []
    for name in ("first", "second"):
        picks = rng.choice(len(base), args.samples, replace=True)
        samples = home / f"samples-{name}.npz"
        np.savez(samples, images=jittered(base[picks], 1, rng), levels=17)
        started = time.perf_counter()
        result = audit(cfg, samples, version.path, name, tracker=tracker)
        times.append(time.perf_counter() - started)
        print(f"{name} audit: {times[-1]:.1f} s; copy_rate_pixel_robust {result.metrics['copy_rate_pixel_robust']:.3f}, "
              f"fid_domain {result.metrics['fid_domain']:.1f}", flush=True)

    print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, {torch.get_num_threads()} torch "
          f"threads; torch {torch.__version__}")
    print(f"dataset: {splits['train']} train / {splits['test']} test images of 8×8 (prepared in {prepare_seconds:.1f} s); "
          f"{args.samples} samples")
    print(f"audit wall time: first {times[0]:.1f} s (nothing cached: domain network, reference features, "
          f"calibration), second {times[1]:.1f} s (references cached)")


if __name__ == "__main__":
    main()

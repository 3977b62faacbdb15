"""Digits test-split bits/dim: genlib's VAE (full `digits` preset) against reference models.

Baselines are computed here, in the same run, on the same dataset version and test split:
uniform over the 17 levels, and an independent per-pixel categorical fitted on the train split
(add-α smoothing). The VAE is trained with Ray Train and scored with the IWAE bound (k from the
preset, ≥ 500), checkpoint chosen on validation loss.

    .venv/bin/python bench/digits_quality.py [--override train.seed=1 ...]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time

import numpy as np


def per_pixel_categorical_bpd(train: np.ndarray, test: np.ndarray, levels: int, alpha: float = 1.0) -> float:
    """Independent categorical per sub-pixel with add-α smoothing; mean test bits/dim."""
    flat_train, flat_test = train.reshape(len(train), -1), test.reshape(len(test), -1)
    counts = np.stack([np.bincount(col, minlength=levels) for col in flat_train.T])  # (D, L)
    probs = (counts + alpha) / (counts.sum(1, keepdims=True) + alpha * levels)
    log_p = np.log(probs[np.arange(flat_test.shape[1]), flat_test])  # (N, D)
    return float(-log_p.sum(1).mean() / (flat_test.shape[1] * math.log(2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--override", action="append", default=[], help="config override, e.g. train.seed=1")
    args = parser.parse_args()
    os.environ.setdefault("GENLIB_HOME", tempfile.mkdtemp(prefix="genlib-bench-"))

    from genlib.config import load_config
    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.evaluate.suite import evaluate
    from genlib.train.launch import train

    cfg = load_config("digits", args.override)
    version = DatasetVersion(prepare(cfg.data).path)
    train_x, test_x = np.asarray(version.images("train")), np.asarray(version.images("test"))
    rows = [("uniform", math.log2(version.levels)),
            ("per-pixel categorical (α=1)", per_pixel_categorical_bpd(train_x, test_x, version.levels))]
    started = time.perf_counter()
    trained = train(cfg, version.path)
    scores = evaluate(cfg, trained.checkpoint, version.path).metrics
    seconds = time.perf_counter() - started
    rows += [(f"genlib VAE, ELBO (epoch {trained.epoch})", scores["test_elbo_bpd"]),
             (f"genlib VAE, IWAE k={cfg.eval.iwae_k}", scores[f"test_iwae{cfg.eval.iwae_k}_bpd"])]

    baseline = rows[1][1]
    print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cores; "
          f"digits {version.manifest['splits']} (seed {cfg.data.seed}); VAE train+eval {seconds:.0f} s")
    print(f"{'model':40}{'test bits/dim':>15}{'ours/per-pixel':>16}")
    for name, bpd in rows:
        print(f"{name:40}{bpd:15.4f}{bpd / baseline:16.3f}")


if __name__ == "__main__":
    main()

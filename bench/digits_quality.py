"""Digits test-split bits/dim of every model in the `digits` preset, against plain baselines.

Two references are computed here with numpy, in the same run, on the same dataset version and
test split: uniform over the 17 levels, and an independent per-pixel categorical fitted on the
train split (add-α smoothing) — genlib's own `categorical` model must reproduce the latter.
Every model of the preset is trained with Ray Train (checkpoint chosen on validation loss) and
scored exactly (autoregressive, EM baselines) or with the IWAE bound (VAE, PixelVAE, k from the
preset); the AAE, which has no likelihood, by its reconstruction bits/dim and the MMD of its codes
to its prior, printed apart from the likelihoods with the VAE's and PixelVAE's latent measures.
It ends with the project's quality bar (issue 2): the VAE's IWAE bound (k ≥ 500) at most 2.15
bits/dim, with the checkpoint chosen on validation well inside the run; it exits 1 if missed.

    .venv/bin/python bench/digits_quality.py [--override train.seed=1 ...] [--only vae,pixelcnn]
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
    parser.add_argument("--only", default="", help="comma-separated model labels to run (default: all)")
    args = parser.parse_args()
    os.environ.setdefault("GENLIB_HOME", tempfile.mkdtemp(prefix="genlib-bench-"))

    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.presets import load_config
    from genlib.stages.evaluate import evaluate
    from genlib.stages.train import train

    cfg = load_config("digits", args.override)
    version = DatasetVersion(prepare(cfg.data).path)
    train_x, test_x = np.asarray(version.images("train")), np.asarray(version.images("test"))
    rows = [("numpy: uniform", math.log2(version.levels), "", 0.0),
            ("numpy: per-pixel categorical (α=1)", per_pixel_categorical_bpd(train_x, test_x, version.levels), "", 0.0)]
    only = set(filter(None, args.only.split(",")))
    bar, notes = None, []
    for model in cfg.pipeline_models():
        if only and model.label not in only:
            continue
        one = cfg.replace(model=model, models=())
        started = time.perf_counter()
        trained = train(one, version.path)
        scores = evaluate(one, trained.checkpoint, version.path).metrics
        seconds = time.perf_counter() - started
        if model.label == "vae" and f"test_iwae{cfg.eval.iwae_k}_bpd" in scores:
            bar = (scores[f"test_iwae{cfg.eval.iwae_k}_bpd"], trained.epoch)
        for key, bpd in sorted(scores.items()):
            if key.endswith("_bpd") and "recon" not in key:  # bits/dim: the likelihood or its bounds
                rows.append((f"{model.label} {key.removeprefix('test_').removesuffix('bpd').rstrip('_') or 'exact'}",
                             bpd, str(trained.epoch), seconds))
        # Latent-variable measures: reconstruction bits/dim (not a likelihood) and the MMD of q(z) to the
        # prior (evaluation), and for PixelVAE the KL
        # in bits/dim and the active units of the selected checkpoint's validation (collapse: both ≈ 0).
        diagnostics = {k: v for k, v in {**scores, **trained.metrics}.items()
                       if k.endswith(("recon_bpd", "latent_mmd", "kl_bpd", "active_units"))}
        if diagnostics:
            notes.append(f"{model.label}: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(diagnostics.items())))

    baseline = rows[1][1]
    print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cores; "
          f"digits {version.manifest['splits']} (seed {cfg.data.seed}); {cfg.train.epochs} epochs max, "
          f"best-validation checkpoint")
    print(f"{'model, score':40}{'test bits/dim':>15}{'ours/per-pixel':>16}{'epoch':>7}{'train+eval s':>14}")
    for name, bpd, epoch, seconds in rows:
        print(f"{name:40}{bpd:15.4f}{bpd / baseline:16.3f}{epoch:>7}{seconds:14.0f}")
    print("\nlatent measures (test_recon_bpd: −log p(x | z = the encoder's estimate) in bits/dim, not a likelihood; "
          "test_latent_mmd: MMD² of q(z) to the prior; val_*: the selected checkpoint's validation):")
    for line in notes:
        print(line)
    if bar is not None:
        iwae, epoch = bar
        met = iwae <= 2.15 and cfg.eval.iwae_k >= 500 and epoch < cfg.train.epochs - 5
        print(f"\nquality bar: VAE IWAE-{cfg.eval.iwae_k} {iwae:.4f} bits/dim ≤ 2.15, selected epoch {epoch} "
              f"< {cfg.train.epochs - 5}: {'met' if met else 'MISSED'}")
        if not met:
            raise SystemExit(1)


if __name__ == "__main__":
    main()

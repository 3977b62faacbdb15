"""Trainer overhead: genlib's Ray Train loop against a bare PyTorch loop, same model, data, batch.

Both train the digits VAE on one CPU (one Ray worker with 1 CPU vs one process with 1 thread)
over the same prepared dataset version (sklearn digits tiled ×16, ~20k training images, so an
epoch lasts seconds rather than milliseconds). Printed, with the machine they came from:

* training throughput (images/s in the training part of each epoch, first epoch excluded as
  warm-up) — the ratio ours/bare is the trainer's per-step overhead (target ≥ 0.85);
* full epoch cycle of ours (training + validation + checkpoint + report + MLflow logging),
  from the MLflow metric timestamps, as throughput and as a ratio to the bare loop;
* end-to-end wall time of each, Ray worker start-up included.

    .venv/bin/python bench/train_overhead.py [--epochs 4] [--batch-size 128] [--tile 16]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

from tiled_digits import tiled_digits_overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--tile", type=int, default=16, help="repeat the digits this many times")
    args = parser.parse_args()
    os.environ["GENLIB_HOME"] = tempfile.mkdtemp(prefix="genlib-bench-")

    import torch

    from genlib.data.prepare import prepare
    from genlib.presets import load_config

    data = tiled_digits_overrides(os.environ["GENLIB_HOME"], args.tile)
    cfg = load_config("digits", [*data,
                                 f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}",
                                 "train.num_workers=1", "train.cpus_per_worker=1", "train.checkpoint_every=1",
                                 f"train.sample_every={args.epochs}"])
    dataset = prepare(cfg.data).path

    bare_tput, bare_wall = bare_loop(cfg, dataset)
    ours_tput, ours_cycle, ours_wall = ray_loop(cfg, dataset)

    n_train = prepare(cfg.data).manifest["splits"]["train"]
    print()
    print(f"machine: {platform.node()} {platform.machine()} {platform.processor() or ''} "
          f"{os.cpu_count()} cores; python {platform.python_version()}; torch {torch.__version__}")
    print(f"workload: VAE on digits ×{args.tile} ({n_train} train images), batch {args.batch_size}, "
          f"{args.epochs} epochs, 1 CPU each")
    print(f"{'':34}{'bare PyTorch':>14}{'genlib+Ray':>14}{'ours/bare':>11}")
    print(f"{'training throughput (img/s)':34}{bare_tput:14.0f}{ours_tput:14.0f}{ours_tput / bare_tput:11.3f}")
    print(f"{'full epoch cycle (img/s)':34}{bare_tput:14.0f}{ours_cycle:14.0f}{ours_cycle / bare_tput:11.3f}")
    print(f"{'end-to-end wall (s)':34}{bare_wall:14.1f}{ours_wall:14.1f}{ours_wall / bare_wall:11.3f}")


def bare_loop(cfg, dataset) -> tuple[float, float]:
    """The baseline: a plain loop over the same Dataset, model and training_step."""
    import torch
    from torch.utils.data import DataLoader

    from genlib.data.dataset import DatasetVersion
    from genlib.models import build_model
    from genlib.models.base import Batch, TrainingContext

    torch.set_num_threads(1)
    started = time.perf_counter()
    version = DatasetVersion(dataset)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, version.shape, version.levels, version.num_classes)
    optimizers = model.configure_optimizers(cfg.train)
    train_set = version.dataset("train")
    loader = DataLoader(train_set, batch_size=cfg.train.batch_size, shuffle=True)
    rates, step = [], 0
    for epoch in range(cfg.train.epochs):
        t0 = time.perf_counter()
        model.train()
        for item in loader:
            model.training_step(Batch.from_loader(item), optimizers, TrainingContext(step))
            step += 1
        rates.append(len(train_set) / (time.perf_counter() - t0))
        print(f"bare epoch {epoch}: {rates[-1]:.0f} img/s", flush=True)
    return statistics.mean(rates[1:] or rates), time.perf_counter() - started


def ray_loop(cfg, dataset) -> tuple[float, float, float]:
    import ray

    from genlib.data.dataset import DatasetVersion
    from genlib.stages.train import train
    from genlib.tracking import Tracker

    ray.init(address="local", num_cpus=1, logging_level="ERROR", log_to_driver=False)
    started = time.perf_counter()
    tracker = Tracker()
    result = train(cfg, dataset, tracker)
    wall = time.perf_counter() - started
    ray.shutdown()
    rates = [m.value for m in sorted(tracker.client.get_metric_history(result.run_id, "images_per_second"),
                                     key=lambda m: m.step)]
    stamps = [m.timestamp for m in sorted(tracker.client.get_metric_history(result.run_id, "train_loss"),
                                          key=lambda m: m.step)]
    n_train = DatasetVersion(dataset).manifest["splits"]["train"]
    cycles = [n_train / ((b - a) / 1000) for a, b in zip(stamps, stamps[1:])]
    return statistics.mean(rates[1:] or rates), statistics.mean(cycles), wall


if __name__ == "__main__":
    sys.exit(main())

"""Ray Train scaling: the same job on 1 and on 2 workers (images/s and the ratio), and on a GPU
machine fp32 against bf16 autocast (`train.precision`).

The workload is the digits VAE on sklearn digits tiled ×16 (~20k training images), global batch
fixed, so 2 workers each take half of every batch (DDP over gloo on CPU, NCCL on GPU). Throughput
is the `images_per_second` genlib logs per epoch (whole train split / epoch time), first epoch
excluded as warm-up.

    .venv/bin/python bench/ray_scaling.py [--epochs 4] [--family vae] [--gpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile

from tiled_digits import tiled_digits_overrides


def throughput(cfg, dataset) -> float:
    from genlib.stages.train import train
    from genlib.tracking import Tracker

    tracker = Tracker()
    result = train(cfg, dataset, tracker)
    rates = [m.value for m in sorted(tracker.client.get_metric_history(result.run_id, "images_per_second"),
                                     key=lambda m: m.step)]
    return statistics.mean(rates[1:] or rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--tile", type=int, default=16)
    parser.add_argument("--gpu", action="store_true", help="also compare fp32 and bf16 on one GPU")
    args = parser.parse_args()
    os.environ["GENLIB_HOME"] = tempfile.mkdtemp(prefix="genlib-bench-")

    import ray
    import torch

    from genlib.data.prepare import prepare
    from genlib.presets import load_config

    data = tiled_digits_overrides(os.environ["GENLIB_HOME"], args.tile)
    base = [*data, "models=[]", f"train.epochs={args.epochs}",
            f"train.batch_size={args.batch_size}", "train.cpus_per_worker=1", f"train.sample_every={args.epochs}",
            "eval.n_samples=16"]
    dataset = prepare(load_config("digits", base).data).path
    ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=1 if args.gpu else 0, logging_level="ERROR",
             log_to_driver=False)
    rows = []
    for workers in (1, 2):
        cfg = load_config("digits", [*base, f"train.num_workers={workers}"])
        rows.append((f"CPU, {workers} worker(s)", throughput(cfg, dataset)))
    if args.gpu:
        for precision in ("fp32", "bf16"):
            cfg = load_config("digits", [*base, "train.num_workers=1", "train.gpus_per_worker=1",
                                         f"train.precision={precision}"])
            rows.append((f"1 GPU, {precision}", throughput(cfg, dataset)))
    ray.shutdown()

    gpu = torch.cuda.get_device_name(0) if args.gpu and torch.cuda.is_available() else "none"
    print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, GPU {gpu}; "
          f"torch {torch.__version__}")
    print(f"workload: VAE on digits ×{args.tile}, global batch {args.batch_size}, "
          f"{args.epochs} epochs (first excluded)")
    print(f"{'setting':22}{'images/s':>12}{'ratio to first':>16}")
    for name, rate in rows:
        print(f"{name:22}{rate:12.0f}{rate / rows[0][1]:16.2f}")
    if args.gpu:
        print(f"bf16 / fp32 on the GPU: {rows[3][1] / rows[2][1]:.2f}")


if __name__ == "__main__":
    main()

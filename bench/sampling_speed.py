"""Cached PixelCNN sampling [Ramachandran et al. 2017] against the naive sampler.

Both samplers draw a batch of 64 images of 28×28 with 256 levels from the same untrained
PixelCNN (speed does not depend on the weights) with the same random numbers, so they must
return identical images; the naive one re-runs the whole network for every pixel, the cached one
computes each layer once per position.

    .venv/bin/python bench/sampling_speed.py [--batch 64] [--size 28] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from genlib.models import build_model
from genlib.models.pixelcnn import PixelCNNConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = PixelCNNConfig()  # the preset-sized default: 64 channels, 6 residual layers
    model = build_model(cfg, (1, args.size, args.size), 256).eval()
    times, images = {}, {}
    for name, cached in (("naive", False), ("cached", True)):
        started = time.perf_counter()
        images[name] = model.sample(args.batch, generator=torch.Generator().manual_seed(1), cached=cached)
        times[name] = time.perf_counter() - started
        print(f"{name:>6}: {times[name]:.2f} s", flush=True)
    same = torch.equal(images["naive"], images["cached"])
    print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, {args.threads} torch threads; "
          f"torch {torch.__version__}")
    print(f"PixelCNN {cfg.hidden} ch × {cfg.layers} layers, batch {args.batch}, {args.size}×{args.size}, 256 levels")
    print(f"naive {times['naive']:.2f} s, cached {times['cached']:.2f} s, "
          f"speed-up naive/cached {times['naive'] / times['cached']:.1f}×; identical samples: {same}")


if __name__ == "__main__":
    main()

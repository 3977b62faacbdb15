"""Cached autoregressive sampling [Ramachandran et al. 2017] against the naive sampler, for every
autoregressive family: PixelCNN, Gated PixelCNN, PixelRNN's Row LSTM and Diagonal BiLSTM.

For each family both samplers draw a batch of 64 images of 28×28 with 256 levels from the same
untrained model (speed does not depend on the weights) with the same random numbers, so they must
return identical images; the naive one re-runs the whole network for every sub-pixel, the cached
one advances each layer by one position. Models are the families' default sizes.

    .venv/bin/python bench/sampling_speed.py [--batch 64] [--size 28] [--threads 2]
                                             [--families pixelcnn gated-pixelcnn row-lstm diagonal-bilstm]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from genlib.models import build_model
from genlib.models.pixelcnn import GatedPixelCNNConfig, PixelCNNConfig, PixelRNNConfig

FAMILIES = {
    "pixelcnn": PixelCNNConfig(),
    "gated-pixelcnn": GatedPixelCNNConfig(),
    "row-lstm": PixelRNNConfig(layer="row"),
    "diagonal-bilstm": PixelRNNConfig(layer="diagonal-bilstm"),
}


def describe(cfg) -> str:
    layer = f" {cfg.layer}" if hasattr(cfg, "layer") else ""
    return f"{cfg.family}{layer}: {cfg.hidden} ch × {cfg.layers} layers"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--levels", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for family in args.families:
        cfg = FAMILIES[family]
        torch.manual_seed(0)
        model = build_model(cfg, (1, args.size, args.size), args.levels).eval()
        times, images = {}, {}
        for name, cached in (("naive", False), ("cached", True)):
            started = time.perf_counter()
            images[name] = model.sample(args.batch, generator=torch.Generator().manual_seed(1), cached=cached)
            times[name] = time.perf_counter() - started
            print(f"{family:>16} {name:>6}: {times[name]:8.2f} s", flush=True)
        rows.append((describe(cfg), times["naive"], times["cached"], torch.equal(images["naive"], images["cached"])))
    print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, {args.threads} torch threads; "
          f"torch {torch.__version__}")
    print(f"batch {args.batch}, {args.size}×{args.size}, {args.levels} levels\n")
    print("| model | naive s | cached s | naive/cached | identical samples |\n|---|---|---|---|---|")
    for name, naive, cached, same in rows:
        print(f"| {name} | {naive:.2f} | {cached:.2f} | {naive / cached:.1f}× | {same} |")


if __name__ == "__main__":
    main()

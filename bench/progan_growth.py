"""Does growing help or hurt progan at a CPU budget? The digits32-progan preset's networks trained
in-process (the loop's training_step, 2 threads) twice for 12 epochs of 32×32 digits: at a fixed full
resolution (``fade_images=1 stable_images=0``) and grown as the preset schedules it; the validation
MMD² of 200 held-out images every 3 epochs, with where the schedule stands.

    .venv/bin/python bench/progan_growth.py [--epochs 12] [--override model.fade_images=30000 ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--override", action="append", default=[], help="config override for both runs")
    args = parser.parse_args()
    os.environ.setdefault("GENLIB_HOME", tempfile.mkdtemp(prefix="genlib-bench-progan-"))

    import torch
    from torch.utils.data import DataLoader

    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.models import build_model
    from genlib.models.base import Batch, TrainingContext
    from genlib.presets import load_config

    torch.set_num_threads(2)
    print(f"progan on 32×32 digits, {args.epochs} epochs; {platform.node()}, {os.cpu_count()} cores", flush=True)
    for name, extra in [("fixed 32×32", ["model.fade_images=1", "model.stable_images=0"]), ("grown (preset)", [])]:
        cfg = load_config("digits32-progan", [*args.override, *extra])
        version = DatasetVersion(prepare(cfg.data).path)
        torch.manual_seed(0)
        model = build_model(cfg.model, version.shape, version.levels, version.num_classes)
        optimizers = model.configure_optimizers(cfg.train)
        loader = DataLoader(version.dataset("train"), batch_size=cfg.train.batch_size, shuffle=True)
        held = Batch.from_loader(next(iter(DataLoader(version.dataset("val"), batch_size=200))))
        context, started = TrainingContext(), time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            model.train()
            for item in loader:
                batch = Batch.from_loader(item)
                model.training_step(batch, optimizers, context)
                context = context.after(len(batch.x))
            if epoch % 3 == 0:
                model.eval()
                level, alpha = model.level_of_detail()
                print(f"{name}: epoch {epoch}, level {level} (α {alpha:.2f}), val MMD² "
                      f"{model.validation_step(held)['loss']:.4f}, {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()

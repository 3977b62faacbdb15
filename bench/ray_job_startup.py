"""The fixed cost of one Ray Train job: wall time of `genlib.stages.train.train` for a one-epoch
categorical model on digits (under a second of training) on a local Ray instance started once,
with 1 and 2 workers, several jobs each; and the time a fresh Python process takes to import
what every Ray Train worker imports (`genlib.train.loop`: torch, Ray Train, genlib).

The test suite runs about 20 such jobs, so this start-up is most of its integration time.

    .venv/bin/python bench/ray_job_startup.py [--jobs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time


def import_seconds(module: str) -> float:
    """Wall time of `python -c "import MODULE"` in a fresh process, interpreter start-up included."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3, help="jobs per worker count")
    args = parser.parse_args()
    os.environ.setdefault("GENLIB_HOME", tempfile.mkdtemp(prefix="genlib-bench-"))

    import ray

    from genlib.data.prepare import prepare
    from genlib.presets import load_config
    from genlib.stages.train import train
    from genlib.tracking import Tracker

    imports = {m: import_seconds(m) for m in ("torch", "ray.train.torch", "genlib.train.loop")}
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    tracker = Tracker()
    times: dict[int, list[float]] = {}
    seed = 0
    for workers in (1, 2):
        for _ in range(args.jobs):
            cfg = load_config("digits-quick", ["model={family: categorical}", "train.epochs=1",
                                               f"train.num_workers={workers}", f"train.seed={seed}"])
            dataset = prepare(cfg.data).path
            started = time.perf_counter()
            train(cfg, dataset, tracker)
            times.setdefault(workers, []).append(time.perf_counter() - started)
            seed += 1
    ray.shutdown()

    print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cores; "
          f"one-epoch categorical on digits (training < 1 s), local Ray started once")
    for workers, secs in times.items():
        print(f"{workers} worker(s): job wall time {', '.join(f'{s:.1f}' for s in secs)} s "
              f"(median {statistics.median(secs):.1f} s)")
    print("import in a fresh process: " + ", ".join(f"{m} {s:.1f} s" for m, s in imports.items()))


if __name__ == "__main__":
    main()

"""What a Ray Train job costs before and around its work: the train stage on a 1-epoch digits VAE
(an epoch takes ~0.2 s) on 2 workers, ``--jobs`` times in a row on one local Ray (started before the
first job, not timed), each job's wall time printed with the machine. The first job also pays for
Ray's first worker processes; the later ones are what every test or pipeline stage that trains pays.

    .venv/bin/python bench/train_job_start.py [--jobs 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ["GENLIB_HOME"] = tempfile.mkdtemp(prefix="genlib-job-start-")
    import ray

    from genlib.data.prepare import prepare
    from genlib.presets import load_config
    from genlib.stages.train import train

    ray.init(address="local", num_cpus=os.cpu_count(), logging_level="WARNING")
    cfg = load_config("digits-quick", ["train.batch_size=128", "model.hidden=8", "eval.n_samples=16", "train.epochs=1",
                                       f"train.num_workers={args.workers}", "eval.n_generated=0"])
    dataset = prepare(cfg.data).path
    walls = []
    for _ in range(args.jobs):
        started = time.perf_counter()
        train(cfg, dataset)
        walls.append(time.perf_counter() - started)
    print(f"machine: {platform.node()}, {os.cpu_count()} cores; ray {ray.__version__}")
    print(f"train stage, 1 epoch of the digits VAE on {args.workers} Ray Train workers: "
          + ", ".join(f"job {i + 1} {w:.1f} s" for i, w in enumerate(walls)))


if __name__ == "__main__":
    main()

"""What a local Ray instance costs before any work, with and without its dashboard: the time
``ray.init`` takes to start it, and the share of the whole machine's CPU time its processes keep busy
while it sits idle (read from /proc/stat, so anything else running on the machine counts too: run it
alone). genlib's own instance starts without the dashboard (``launch.ensure_ray``; ``GENLIB_RAY_DASHBOARD=1``
turns it on); this measures why.

    .venv/bin/python bench/ray_idle.py [--rounds 2] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time


def _busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot (idle and iowait are not busy)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def busy_share(seconds: float) -> float:
    """The share of the whole machine's CPU time that was busy over the next ``seconds``."""
    before = _busy()
    time.sleep(seconds)
    after = _busy()
    return (after[0] - before[0]) / (after[1] - before[1])


def measure(dashboard: bool, seconds: float, settle: float) -> None:
    """One instance in this process: print its start time and its idle busy share as one line."""
    import ray

    started = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), logging_level="WARNING", include_dashboard=dashboard)
    start = time.perf_counter() - started
    time.sleep(settle)  # the dashboard's modules finish starting
    share = busy_share(seconds)
    ray.shutdown()
    print(f"{start:.2f} {share:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0, help="idle time measured per instance")
    parser.add_argument("--settle", type=float, default=15.0, help="wait after the start before measuring")
    args = parser.parse_args()
    baseline = busy_share(args.seconds / 3)
    rows = {True: [], False: []}
    for _ in range(args.rounds):
        for dashboard in (True, False):  # each in a fresh process: Ray keeps state per process
            done = subprocess.run([sys.executable, __file__, "--one", str(int(dashboard)), str(args.seconds),
                                   str(args.settle)], capture_output=True, text=True, check=True)
            start, share = map(float, done.stdout.split()[-2:])
            rows[dashboard].append((start, share))
    import ray

    print(f"machine: {platform.node()}, {os.cpu_count()} cores; ray {ray.__version__}; "
          f"busy with no Ray running: {baseline:.1%}")
    for dashboard, found in rows.items():
        starts = ", ".join(f"{s:.2f}" for s, _ in found)
        shares = ", ".join(f"{b:.1%}" for _, b in found)
        print(f"dashboard {'on ' if dashboard else 'off'}: ray.init {starts} s; machine busy while idle {shares}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        measure(sys.argv[2] == "1", float(sys.argv[3]), float(sys.argv[4]))
    else:
        main()

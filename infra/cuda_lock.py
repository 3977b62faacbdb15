"""Write requirements-cuda.lock: requirements.lock for the GPU nodes (linux x86_64, CPython 3.11).

requirements.lock pins ``torch==X+cpu``, the CPU wheel of the development machines. PyPI's ``torch==X`` for
linux x86_64 is the CUDA build (torch 2.13.0: CUDA 13.0), and it requires its CUDA libraries as wheels
(cuda-toolkit, nvidia-cudnn, nvidia-nccl, triton, ...) by exact version or by range. This script asks pip's
resolver, for the nodes' platform and against PyPI, what installing the lock with that one pin swapped
means, and writes every package it would install pinned with ``==``: the lock's own pins unchanged, torch
without ``+cpu``, and the CUDA-side packages the ranges resolve to today. The image (infra/Dockerfile) and
``ray up`` (infra/cluster-launcher.yaml) install this file, so a GPU node is reproducible like a CPU one.

    python infra/cuda_lock.py [--lock requirements.lock] [--out requirements-cuda.lock] [--index URL]

``make lock`` runs it after freezing requirements.lock. It needs the index (PyPI by default), not a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PYPI = "https://pypi.org/simple"
PYTHON = "3.11"
# pip does not widen a --platform to the older manylinux tags it is compatible with: name them all.
PLATFORMS = ([f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)]
             + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"])
TORCH_CPU = re.compile(r"^torch==([^+\s]+)\+cpu$", re.M)
HEADER = """\
# requirements.lock for GPU nodes (linux x86_64, CPython {python}): every pin of the lock, torch=={torch}
# from PyPI (the CUDA build) instead of torch=={torch}+cpu, and the CUDA packages it requires.
# Written by `make lock` (infra/cuda_lock.py); do not edit by hand.
"""


def gpu_requirements(lock_text: str) -> tuple[str, str]:
    """The lock with its CPU torch pin swapped for PyPI's CUDA build of the same version, and that version."""
    found = TORCH_CPU.findall(lock_text)
    if len(found) != 1:
        raise SystemExit("cuda_lock: the lock must pin exactly one 'torch==X+cpu'; "
                         f"found {len(found)} such lines: look at its torch pin")
    return TORCH_CPU.sub(r"torch==\1", lock_text), found[0]


def lock_lines(report: dict) -> list[str]:
    """``name==version`` for every package of a ``pip install --report``, sorted by name."""
    pins = {}
    for item in report["install"]:
        meta = item["metadata"]
        pins[re.sub(r"[-_.]+", "-", meta["name"]).lower()] = f"{meta['name']}=={meta['version']}"
    return [pins[name] for name in sorted(pins)]


def resolve(requirements: str, index: str) -> dict:
    """pip's resolution of ``requirements`` for the GPU nodes' platform: nothing is installed here."""
    with tempfile.TemporaryDirectory() as tmp:
        reqs, report = Path(tmp, "requirements.txt"), Path(tmp, "report.json")
        reqs.write_text(requirements)
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        # --isolated: this machine's pip configuration (find-links, constraints, local wheels) must not
        # decide what the nodes install; PIP_* variables are dropped for the same reason.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        subprocess.run([sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed",
                        "--quiet", "--only-binary=:all:", *platforms, "--python-version", PYTHON,
                        "--implementation", "cp", "--index-url", index, "--report", str(report), "-r", str(reqs)],
                       check=True, env=env)
        return json.loads(report.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=Path("requirements.lock"))
    parser.add_argument("--out", type=Path, default=Path("requirements-cuda.lock"))
    parser.add_argument("--index", default=PYPI, help="the index the nodes install from (default: PyPI)")
    args = parser.parse_args(argv)

    requirements, torch = gpu_requirements(args.lock.read_text())
    lines = lock_lines(resolve(requirements, args.index))
    if f"torch=={torch}" not in lines:
        raise SystemExit(f"cuda_lock: the resolution has no torch=={torch}: {[ln for ln in lines if 'torch' in ln]}")
    text = HEADER.format(python=PYTHON, torch=torch) + "\n".join(lines) + "\n"
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text(text)
    partial.replace(args.out)  # atomic: a failed run leaves the previous lock in place
    print(f"cuda_lock: wrote {args.out} ({len(lines)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

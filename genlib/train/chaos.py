"""Fault injection for checking recovery, in the spirit of Ray's own chaos tests.

Set ``GENLIB_CHAOS_KILL_AT_EPOCH=N`` in the driver's environment and the rank-0 worker of the
next training run dies abruptly (``os._exit``) right after reporting epoch N — once per run, so
the restarted worker group carries on. Recovery must then resume from the last checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

KILL_AT_EPOCH_ENV = "GENLIB_CHAOS_KILL_AT_EPOCH"


def plan(marker_dir: Path) -> dict | None:
    """Read the driver's environment into a plan the workers follow (None: no chaos)."""
    epoch = os.environ.get(KILL_AT_EPOCH_ENV)
    if not epoch:
        return None
    return {"kill_at_epoch": int(epoch), "marker": str(Path(marker_dir) / ".chaos-fired")}


def maybe_kill(chaos: dict | None, epoch: int, rank: int) -> None:
    if not chaos or rank != 0 or epoch != chaos["kill_at_epoch"]:
        return
    marker = Path(chaos["marker"])
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    os._exit(1)  # a hard death, as when a node is lost: no cleanup, no exception to catch

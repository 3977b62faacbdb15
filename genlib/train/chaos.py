"""Fault injection for checking recovery, in the spirit of Ray's own chaos tests.

Set ``GENLIB_CHAOS_KILL_AT_EPOCH=N`` in the driver's environment and the rank-0 worker of the
next training run dies abruptly (``os._exit``) once epoch N's report (and checkpoint, if any) is
committed by Ray Train — once per run, so the restarted worker group carries on. Recovery must
then resume from that checkpoint.
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
    import ray.train

    # Wait until the controller has committed everything reported so far, so the death lands
    # after epoch N's checkpoint exists rather than racing its registration.
    ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    os._exit(1)  # a hard death, as when a node is lost: no cleanup, no exception to catch

"""Fault injection for checking recovery, in the spirit of Ray's own chaos tests.

Set ``GENLIB_CHAOS_KILL_AT_EPOCH=N`` in the driver's environment and the rank-0 worker of the
next training run dies abruptly (``os._exit``) once epoch N's (counted from 1) report (and checkpoint, if any) is
committed by Ray Train — once per run, so the restarted worker group carries on. Recovery must
then resume from that checkpoint.

Set ``GENLIB_CHAOS_KILL_DRIVER_AT_EPOCH=N`` and the rank-0 worker kills the *driver* process
(SIGKILL; same machine only) once epoch N is committed, as when the machine running ``genlib``
dies: relaunching the same command must resume the job, in the same MLflow run.

Set ``GENLIB_CHAOS_INTERRUPT_DRIVER_AT_EPOCH=N`` and the rank-0 worker sends SIGINT to the driver
(a Ctrl-C; same machine only) as soon as epoch N's report returns — before Ray Train's controller
has recorded it — once per run and epoch: relaunching the same command must resume after epoch N.

Set ``GENLIB_CHAOS_NAN_AT_STEP=S`` and every worker overwrites its parameters with NaN just before
optimizer step S, as a diverged run would: the loss turns non-finite and the run must stop with
an error naming the step, keeping its last good checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

KILL_AT_EPOCH_ENV = "GENLIB_CHAOS_KILL_AT_EPOCH"
NAN_AT_STEP_ENV = "GENLIB_CHAOS_NAN_AT_STEP"
KILL_DRIVER_AT_EPOCH_ENV = "GENLIB_CHAOS_KILL_DRIVER_AT_EPOCH"
INTERRUPT_DRIVER_AT_EPOCH_ENV = "GENLIB_CHAOS_INTERRUPT_DRIVER_AT_EPOCH"


def plan(marker_dir: Path) -> dict | None:
    """Read the driver's environment into a plan the workers follow (None: no chaos)."""
    found = {key: os.environ.get(env) for key, env in (("kill_at_epoch", KILL_AT_EPOCH_ENV),
                                                       ("nan_at_step", NAN_AT_STEP_ENV),
                                                       ("kill_driver_at_epoch", KILL_DRIVER_AT_EPOCH_ENV),
                                                       ("interrupt_driver_at_epoch", INTERRUPT_DRIVER_AT_EPOCH_ENV))}
    if not any(found.values()):
        return None
    return {**{k: int(v) if v else None for k, v in found.items()}, "driver_pid": os.getpid(),
            "marker": str(Path(marker_dir) / ".chaos-fired")}


class Faults:
    """The faults a worker injects, from the driver's plan (``plan``); none when the plan is None."""

    def __init__(self, chaos: dict | None, rank: int):
        self.chaos, self.rank = chaos, rank

    def before_step(self, model, step: int) -> None:
        maybe_poison(self.chaos, model, step)

    def after_epoch(self, epoch: int) -> None:
        maybe_kill(self.chaos, epoch, self.rank)


def maybe_poison(chaos: dict | None, model, step: int) -> None:
    """Fill the model's parameters with NaN at the planned step."""
    if not chaos or chaos.get("nan_at_step") != step:
        return
    import torch

    with torch.no_grad():
        for param in model.parameters():
            param.fill_(float("nan"))


def maybe_kill(chaos: dict | None, epoch: int, rank: int) -> None:
    if chaos and rank == 0 and epoch == chaos.get("interrupt_driver_at_epoch"):
        interrupt = Path(f"{chaos['marker']}-interrupt-{epoch}")
        if not interrupt.exists():
            import signal
            import time

            interrupt.parent.mkdir(parents=True, exist_ok=True)
            interrupt.touch()
            os.kill(chaos["driver_pid"], signal.SIGINT)
            time.sleep(600)  # the driver's Ctrl-C stops the worker group, and this worker with it
        return
    if not chaos or rank != 0 or epoch not in (chaos.get("kill_at_epoch"), chaos.get("kill_driver_at_epoch")):
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
    if epoch == chaos.get("kill_driver_at_epoch"):
        import signal

        os.kill(chaos["driver_pid"], signal.SIGKILL)
        # Ray ends a job's workers once it sees its driver gone; until then, do nothing more, as a
        # worker on the lost machine would (no further epochs, no further logging).
        import time

        time.sleep(600)
    os._exit(1)  # a hard death, as when a node is lost: no cleanup, no exception to catch

"""What the worker loop tells the outside world, and nothing else.

The loop calls these on rank 0 only; every other rank gets the silent base class. The train stage
passes an implementation that records to MLflow (``genlib/stages/train.py``), so the loop itself
never knows where its numbers go. A hooks object travels to the workers inside Ray's loop
config, so it must pickle.
"""

from __future__ import annotations


class TrainHooks:
    """Rank 0's reports from the loop. The base does nothing (every other rank, and tests)."""

    def resumed(self, epoch: int) -> None:
        """Training continues after ``epoch`` (−1: a fresh start), so epochs up to it may have been
        reported by an attempt that died."""

    def epoch_end(self, model, cfg, metrics: dict[str, float], samples: bool, stopped_early: bool) -> None:
        """An epoch finished (``metrics`` holds ``epoch``); ``samples``: draw a sample grid now."""

    def nonfinite(self, step: int) -> None:
        """Training stops: a non-finite loss at optimizer ``step`` (on some rank)."""

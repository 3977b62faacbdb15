"""The pipeline's parent run: one MLflow run per pipeline, under which every stage nests its own.

A retried Prefect flow run reopens the parent run its earlier attempt opened, so one flow run
keeps one parent run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from genlib.config import Config
from genlib.tracking import Stage, Tag, Tracker, experiment_name


@contextlib.contextmanager
def parent_run(cfg: Config, tracker: Tracker, flow_run_id: str | None = None) -> Iterator[str]:
    """The pipeline's parent run: FINISHED when the block completes, FAILED if it raises."""
    tags = {Tag.STAGE: Stage.PIPELINE, Tag.PRESET: cfg.name}
    if flow_run_id:
        tags[Tag.PREFECT_FLOW_RUN] = flow_run_id
    earlier = _parent_of_flow_run(tracker, cfg, flow_run_id)
    name = cfg.tracking.run_name or f"pipeline-{cfg.name}"
    with tracker.run(experiment_name(cfg), name, tags=tags, reopen=earlier) as parent:
        if earlier is None:
            tracker.log_params(parent, cfg.flat())
        yield parent


def record_dataset(tracker: Tracker, parent: str, content_hash: str) -> None:
    """Tag the parent run with the dataset version its stages use."""
    tracker.set_tags(parent, {Tag.DATASET_HASH: content_hash})


def _parent_of_flow_run(tracker: Tracker, cfg: Config, flow_run_id: str | None) -> str | None:
    """The parent run an earlier attempt of this Prefect flow run opened (a flow retry), if any."""
    if not flow_run_id:
        return None
    earlier = tracker.find_runs(experiment_name(cfg), {Tag.PREFECT_FLOW_RUN: flow_run_id})
    return earlier[0].info.run_id if earlier else None

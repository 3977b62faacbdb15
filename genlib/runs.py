"""Find what a recorded run left behind: a training run's checkpoint, config and dataset version,
or a reweight run's weights file. Used by every command that starts from a run id."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genlib import paths
from genlib.config import Config, apply_override, config_from_dict
from genlib.models.io import read_state
from genlib.tracking import Tracker

WEIGHTS_FILE = "weights.parquet"


@dataclass(frozen=True)
class TrainedRun:
    run_id: str
    config: Config  # the config it trained with (stored in the checkpoint), plus any overrides
    checkpoint: Path  # a local copy of its selected checkpoint
    dataset: Path  # the prepared dataset version it trained on
    parent_run_id: str | None  # its pipeline run, if any


def trained_run(tracker: Tracker, run_id: str, overrides: list[str] | None = None) -> TrainedRun:
    """The training run ``run_id``: its checkpoint (local, else downloaded), config and dataset."""
    tags = _run(tracker, run_id).data.tags
    if tags.get("genlib.stage") != "train":
        raise ValueError(f"run {run_id} is a {tags.get('genlib.stage', 'non-genlib')!r} run; "
                         f"pass the id of a genlib training run (the train-<model> runs of a pipeline)")
    checkpoint = _checkpoint(tracker, run_id, tags)
    raw = read_state(checkpoint)["config"]
    for item in overrides or []:
        apply_override(raw, item)
    cfg = config_from_dict(raw)
    return TrainedRun(run_id, cfg, checkpoint, dataset_version(cfg, tags["genlib.dataset_hash"]),
                      tags.get("mlflow.parentRunId"))


def weights_file(tracker: Tracker, spec: str) -> Path:
    """A weights file given as a path, or as the id of the reweight run that logged it."""
    if Path(spec).is_file():
        return Path(spec)
    if "/" in spec or spec.endswith(".parquet"):
        raise FileNotFoundError(f"no weights file at {spec}; pass a .parquet path or a reweight run id")
    tags = _run(tracker, spec).data.tags
    if tags.get("genlib.stage") != "reweight":
        raise ValueError(f"run {spec} is a {tags.get('genlib.stage', 'non-genlib')!r} run, not a reweight run")
    local = paths.home() / "weights" / spec
    if not (local / WEIGHTS_FILE).is_file():
        tracker.download_artifacts(spec, WEIGHTS_FILE, local)
    return local / WEIGHTS_FILE


def dataset_version(cfg: Config, content_hash: str) -> Path:
    """The prepared dataset with this hash: found on disk, else prepared again from the config and checked."""
    path = paths.datasets_dir() / f"{cfg.data.source}-{content_hash[:12]}"
    if (path / "manifest.json").is_file():
        return path
    from genlib.data.prepare import prepare

    prepared = prepare(cfg.data)
    if prepared.content_hash != content_hash:
        raise ValueError(f"the run used dataset {content_hash[:12]}, but preparing its data config now gives "
                         f"{prepared.content_hash[:12]} (did the source change?); put the original version at {path}")
    return prepared.path


def _run(tracker: Tracker, run_id: str):
    try:
        return tracker.get_run(run_id)
    except Exception as err:  # noqa: BLE001 - MLflow raises its own types for unknown ids
        raise ValueError(f"no MLflow run {run_id!r} in {tracker.uri}: {err}") from err


def _checkpoint(tracker: Tracker, run_id: str, tags: dict[str, str]) -> Path:
    local = Path(tags.get("genlib.checkpoint", ""))
    if (local / "state.json").is_file():
        return local
    if "checkpoint" not in {p.split("/")[0] for p in tracker.list_artifacts(run_id)}:
        raise FileNotFoundError(f"training run {run_id} logged no checkpoint (its status: "
                                f"{tracker.get_run(run_id).info.status}); was it finished?")
    return tracker.download_artifacts(run_id, "checkpoint", paths.home() / "checkpoints" / f"{run_id}-download")

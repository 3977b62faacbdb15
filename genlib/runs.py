"""What recorded runs hold, for the commands that start from them.

* a training run's checkpoint, config and dataset version (``trained_run``), or just the
  checkpoint (``run_checkpoint``), or a registered model's (``model_checkpoint``);
* a reweight run's weights file (``weights_file``);
* the leaderboard of every evaluation in the store (``leaderboard``), and the training runs
  (``training_runs``).

It only reads: runs are opened and registered by the stages (``genlib/stages``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlib import paths
from genlib.config import Config, apply_override
from genlib.data.weights import WEIGHTS_FILE
from genlib.models.io import read_state
from genlib.presets import config_from_dict
from genlib.tracking import CHECKPOINT, HEADLINES, Stage, Tag, Tracker, headline_row


@dataclass(frozen=True)
class TrainedRun:
    run_id: str
    config: Config  # the config it trained with (stored in the checkpoint), plus any overrides
    checkpoint: Path  # a local copy of its selected checkpoint
    dataset: Path  # the prepared dataset version it trained on
    parent_run_id: str | None  # its pipeline run, if any


def trained_run(tracker: Tracker, run_id: str, overrides: list[str] | None = None) -> TrainedRun:
    """The training run ``run_id``: its checkpoint (local, else downloaded), config and dataset."""
    tags = _train_tags(tracker, run_id)
    checkpoint = _checkpoint(tracker, run_id, tags)
    raw = read_state(checkpoint)["config"]
    for item in overrides or []:
        apply_override(raw, item)
    cfg = config_from_dict(raw)
    return TrainedRun(run_id, cfg, checkpoint, dataset_version(cfg, tags[Tag.DATASET_HASH]), tags.get(Tag.PARENT))


def run_checkpoint(tracker: Tracker, run_id: str) -> Path:
    """The selected checkpoint of a training run, or of the training run an evaluation scored."""
    tags = _run(tracker, run_id).data.tags
    if tags.get(Tag.STAGE) == Stage.EVALUATE and Tag.TRAIN_RUN in tags:
        run_id = tags[Tag.TRAIN_RUN]
    return _checkpoint(tracker, run_id, _train_tags(tracker, run_id))


def model_checkpoint(tracker: Tracker, uri: str) -> Path:
    """The checkpoint behind ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``)."""
    if not uri.startswith("models:/") or uri.count("/") != 1 + ("@" not in uri):
        raise ValueError(f"{uri!r} is not a registered-model URI; use models:/NAME@ALIAS or models:/NAME/VERSION")
    name, _, alias = uri.removeprefix("models:/").partition("@")
    if not alias:
        name, _, version = name.partition("/")
    try:
        found = tracker.model_version(name, alias=alias) if alias else tracker.model_version(name, version=version)
    except Exception as err:  # noqa: BLE001 - MLflow raises its own types
        known = tracker.registered_model_names()
        raise ValueError(f"no model version {uri} in {tracker.uri} ({err}); registered models: {known}") from err
    return run_checkpoint(tracker, found.run_id)


def weights_file(tracker: Tracker, spec: str) -> Path:
    """A weights file given as a path, or as the id of the reweight run that logged it."""
    if Path(spec).is_file():
        return Path(spec)
    if "/" in spec or spec.endswith(".parquet"):
        raise FileNotFoundError(f"no weights file at {spec}; pass a .parquet path or a reweight run id")
    tags = _run(tracker, spec).data.tags
    if tags.get(Tag.STAGE) != Stage.REWEIGHT:
        raise ValueError(f"run {spec} is a {tags.get(Tag.STAGE, 'non-genlib')!r} run, not a reweight run")
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


def _train_tags(tracker: Tracker, run_id: str) -> dict[str, str]:
    tags = _run(tracker, run_id).data.tags
    if tags.get(Tag.STAGE) != Stage.TRAIN:
        raise ValueError(f"run {run_id} is a {tags.get(Tag.STAGE, 'non-genlib')!r} run; "
                         f"pass the id of a genlib training run (the train-<model> runs of a pipeline)")
    return tags


def _checkpoint(tracker: Tracker, run_id: str, tags: dict[str, str]) -> Path:
    local = Path(tags.get(Tag.CHECKPOINT, ""))
    if (local / "state.json").is_file():
        return local
    if CHECKPOINT not in {p.split("/")[0] for p in tracker.list_artifacts(run_id)}:
        raise FileNotFoundError(f"training run {run_id} logged no checkpoint (its status: "
                                f"{tracker.get_run(run_id).info.status}); was it finished?")
    return tracker.download_artifacts(run_id, CHECKPOINT, paths.home() / "checkpoints" / f"{run_id}-download")


# -- leaderboard --------------------------------------------------------------------------------


def leaderboard(tracker: Tracker, dataset: str | None = None, sort: str | None = None,
                experiment: str | None = None) -> list[dict[str, Any]]:
    """One row per finished evaluation run (and audit run: samples of another generator, family
    "external"): model, family, dataset, headline metrics, run ids.

    ``dataset`` keeps rows whose dataset (``<source>-<hash12>``) contains it; ``sort`` is a
    headline column (in its better-first direction); default: bits/dim, then FID."""
    experiments = tracker.experiment_ids(experiment)
    if not experiments:
        return []
    rows = [_leaderboard_row(run) for stage in (Stage.EVALUATE, Stage.AUDIT) for run in
            tracker.search_runs(experiments, f"tags.`{Tag.STAGE}` = '{stage}' and attributes.status = 'FINISHED'")]
    rows = [r for r in rows if not dataset or dataset in r["dataset"]]
    key = sort or ("bpd" if any("bpd" in r for r in rows) else "fid")
    if rows and not any(key in r for r in rows):
        raise ValueError(f"no run has a {key!r} column; columns: {sorted({k for r in rows for k in r})}")
    descending = any(h.column == key and h.direction == "max" for h in HEADLINES)
    missing = [r for r in rows if key not in r]
    return sorted((r for r in rows if key in r), key=lambda r: r[key], reverse=descending) + missing


def latest_run(tracker: Tracker, stage: str | None = None, finished: bool = False):
    """The newest run of genlib's experiments (of ``stage``; only FINISHED ones if ``finished``), or None."""
    experiments = tracker.experiment_ids()
    where = " and ".join([*([f"tags.`{Tag.STAGE}` = '{stage}'"] if stage else []),
                          *(["attributes.status = 'FINISHED'"] if finished else [])])
    found = tracker.search_runs(experiments, where, ["attributes.start_time DESC"], max_results=1) \
        if experiments else []
    return found[0] if found else None


def training_runs(tracker: Tracker, dataset: str | None = None, experiment: str | None = None) -> list[dict[str, Any]]:
    """One row per training run, newest first, whatever its status: model, family, dataset,
    status, epochs logged, the selected epoch and its validation loss, run id."""
    experiments = tracker.experiment_ids(experiment)
    if not experiments:
        return []
    rows = []
    for run in tracker.search_runs(experiments, f"tags.`{Tag.STAGE}` = '{Stage.TRAIN}'"):
        tags, metrics = run.data.tags, run.data.metrics
        row = {"model": tags.get(Tag.MODEL, run.info.run_name), "family": tags.get(Tag.FAMILY, ""),
               "dataset": tags.get(Tag.DATASET, tags.get(Tag.DATASET_HASH, "")[:12]), "status": run.info.status,
               "epochs": tracker.last_step(run.info.run_id, "val_loss"), "train_run_id": run.info.run_id,
               "started": run.info.start_time}
        if "selected_epoch" in metrics:
            row.update(selected_epoch=int(metrics["selected_epoch"]), val_loss=metrics["selected_val_loss"])
        rows.append(row)
    rows = [r for r in rows if not dataset or dataset in r["dataset"]]
    return sorted(rows, key=lambda r: r["started"], reverse=True)


def _leaderboard_row(run) -> dict[str, Any]:
    tags = run.data.tags
    return {"model": tags.get(Tag.MODEL, run.info.run_name), "family": tags.get(Tag.FAMILY, ""),
            "dataset": tags.get(Tag.DATASET, tags.get(Tag.DATASET_HASH, "")[:12]),
            "eval_run_id": run.info.run_id, "train_run_id": tags.get(Tag.TRAIN_RUN, ""),
            "extractor": tags.get(Tag.EXTRACTOR, "")[:8],
            **headline_row(run.data.metrics)}

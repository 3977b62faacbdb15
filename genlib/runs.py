"""What recorded runs hold, for the commands that start from them.

* a training run's checkpoint, config and dataset version (``trained_run``), or just the
  checkpoint (``run_checkpoint``), or a registered model's (``model_checkpoint``);
* a reweight run's weights file (``weights_file``);
* the leaderboard of every evaluation in the store (``leaderboard``);
* registering the best model of each family (``register_best``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    tags = _train_tags(tracker, run_id)
    checkpoint = _checkpoint(tracker, run_id, tags)
    raw = read_state(checkpoint)["config"]
    for item in overrides or []:
        apply_override(raw, item)
    cfg = config_from_dict(raw)
    return TrainedRun(run_id, cfg, checkpoint, dataset_version(cfg, tags["genlib.dataset_hash"]),
                      tags.get("mlflow.parentRunId"))


def run_checkpoint(tracker: Tracker, run_id: str) -> Path:
    """The selected checkpoint of a training run, or of the training run an evaluation scored."""
    tags = _run(tracker, run_id).data.tags
    if tags.get("genlib.stage") == "evaluate" and "genlib.train_run_id" in tags:
        run_id = tags["genlib.train_run_id"]
    return _checkpoint(tracker, run_id, _train_tags(tracker, run_id))


def model_checkpoint(tracker: Tracker, uri: str) -> Path:
    """The checkpoint behind ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``)."""
    if not uri.startswith("models:/") or uri.count("/") != 1 + ("@" not in uri):
        raise ValueError(f"{uri!r} is not a registered-model URI; use models:/NAME@ALIAS or models:/NAME/VERSION")
    name, _, alias = uri.removeprefix("models:/").partition("@")
    if not alias:
        name, _, version = name.partition("/")
    try:
        found = (tracker.client.get_model_version_by_alias(name, alias) if alias
                 else tracker.client.get_model_version(name, version))
    except Exception as err:  # noqa: BLE001 - MLflow raises its own types
        known = [m.name for m in tracker.client.search_registered_models()]
        raise ValueError(f"no model version {uri} in {tracker.uri} ({err}); registered models: {known}") from err
    return run_checkpoint(tracker, found.run_id)


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


def _train_tags(tracker: Tracker, run_id: str) -> dict[str, str]:
    tags = _run(tracker, run_id).data.tags
    if tags.get("genlib.stage") != "train":
        raise ValueError(f"run {run_id} is a {tags.get('genlib.stage', 'non-genlib')!r} run; "
                         f"pass the id of a genlib training run (the train-<model> runs of a pipeline)")
    return tags


def _checkpoint(tracker: Tracker, run_id: str, tags: dict[str, str]) -> Path:
    local = Path(tags.get("genlib.checkpoint", ""))
    if (local / "state.json").is_file():
        return local
    if "checkpoint" not in {p.split("/")[0] for p in tracker.list_artifacts(run_id)}:
        raise FileNotFoundError(f"training run {run_id} logged no checkpoint (its status: "
                                f"{tracker.get_run(run_id).info.status}); was it finished?")
    return tracker.download_artifacts(run_id, "checkpoint", paths.home() / "checkpoints" / f"{run_id}-download")


# -- leaderboard --------------------------------------------------------------------------------

HEADLINE = ("bpd", "fid", "kid", "precision", "recall", "copy_rate_pixel")


def leaderboard(tracker: Tracker, dataset: str | None = None, sort: str | None = None,
                experiment: str | None = None) -> list[dict[str, Any]]:
    """One row per finished evaluation run: model, family, dataset, headline metrics, run ids.

    ``dataset`` keeps rows whose dataset (``<source>-<hash12>``) contains it; ``sort`` is a
    column (ascending; precision and recall descending); default: bits/dim, then FID."""
    experiments = [e for e in tracker.client.search_experiments()
                   if (e.name == experiment if experiment else e.name.startswith("genlib-"))]
    if not experiments:
        return []
    where = "tags.`genlib.stage` = 'evaluate' and attributes.status = 'FINISHED'"
    runs = tracker.client.search_runs([e.experiment_id for e in experiments], filter_string=where)
    rows = [_leaderboard_row(run) for run in runs]
    rows = [r for r in rows if not dataset or dataset in r["dataset"]]
    key = sort or ("bpd" if any("bpd" in r for r in rows) else "fid")
    if rows and not any(key in r for r in rows):
        raise ValueError(f"no run has a {key!r} column; columns: {sorted({k for r in rows for k in r})}")
    descending = key.startswith(("precision", "recall", "authenticity"))
    missing = [r for r in rows if key not in r]
    return sorted((r for r in rows if key in r), key=lambda r: r[key], reverse=descending) + missing


def _leaderboard_row(run) -> dict[str, Any]:
    tags, metrics = run.data.tags, run.data.metrics
    row = {"model": tags.get("genlib.model", run.info.run_name), "family": tags.get("genlib.family", ""),
           "dataset": tags.get("genlib.dataset", tags.get("genlib.dataset_hash", "")[:12]),
           "eval_run_id": run.info.run_id, "train_run_id": tags.get("genlib.train_run_id", "")}
    bpd = [k for k in metrics if k.endswith("_bpd")]
    if bpd:  # exact if there is one, else the tightest bound
        row["bpd"] = metrics["test_bpd"] if "test_bpd" in metrics else min(metrics[k] for k in bpd)
    for name in ("fid", "kid", "precision", "recall"):
        found = [k for k in metrics if k.startswith(f"{name}_") and not k.endswith("_std")]
        if found:
            row[name] = metrics[sorted(found)[0]]
    if "copy_rate_pixel" in metrics:
        row["copy_rate_pixel"] = metrics["copy_rate_pixel"]
    return row


# -- model registry -----------------------------------------------------------------------------


def register_best(tracker: Tracker, rows: list[dict[str, Any]], source: str, dataset_hash: str,
                  config: dict[str, Any]) -> dict[str, str]:
    """Register each family's best model of a pipeline (lowest bits/dim, else lowest FID) as a new
    version of ``genlib-<source>-<family>``, aliased ``last``, and ``best`` when it beats the
    version holding ``best`` on the same metric. Returns {family: models:/NAME/VERSION}."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        metric = _headline(row)
        if metric and (row["family"] not in best or row[metric] < best[row["family"]][_headline(best[row["family"]])]):
            best[row["family"]] = row
    uris = {}
    for family, row in best.items():
        metric = _headline(row)
        name = f"genlib-{source}-{family}"
        tags = {"genlib.model": row["model"], "genlib.dataset_hash": dataset_hash, "genlib.metric": metric,
                "genlib.metric_value": str(row[metric]), "genlib.config": json.dumps(config, default=str)[:5000]}
        version = tracker.register_version(name, row["train_run_id"], "checkpoint", tags)
        tracker.set_alias(name, "last", version)  # ("latest" is reserved by MLflow)
        holder = tracker.version_by_alias(name, "best")
        if holder is None or (holder.tags.get("genlib.metric") == metric
                              and row[metric] < float(holder.tags.get("genlib.metric_value", "inf"))):
            tracker.set_alias(name, "best", version)
        uris[family] = f"models:/{name}/{version}"
    return uris


def _headline(row: dict[str, Any]) -> str | None:
    if "test_bpd" in row:
        return "test_bpd"
    bounds = sorted(k for k in row if k.endswith("_bpd"))
    if bounds:
        return min(bounds, key=lambda k: row[k])
    return next((k for k in sorted(row) if k.startswith("fid_")), None)

"""The genlib pipeline as a Prefect flow: prepare → (train → evaluate) per model → summary.

One parent MLflow run per flow run; each stage of each model opens its own nested run, and the
summary compares the models side by side. Tasks wrap one stage call each (``genlib/stages``) and
pass paths, run ids and plain config data between them.

Retries and caching (``flows/policy.py``): every task retries transient failures with backoff, and
a finished stage is a cache hit when the flow run is retried or run again — prepare within one
flow run, train by dataset hash + config, evaluate and reweight by run id + config. A retried flow
run also reopens its own parent MLflow run rather than starting a second one.

Run it directly (``python -m flows.pipeline digits-quick``) or through ``genlib pipeline``; serve it
with ``genlib deploy`` (see ``prefect.yaml``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.runtime import flow_run

from flows.policy import backoff, cache_key, persisted
from flows.policy import transient as _transient
from flows.reweight import reweight_task
from genlib.config import Config, command_line_overrides
from genlib.data.dataset import DatasetVersion
from genlib.data.prepare import prepare, read_manifest
from genlib.models import MODELS
from genlib.presets import config_from_dict, load_config
from genlib.report import REWEIGHTED
from genlib.stages.checks import check_names
from genlib.stages.evaluate import evaluate
from genlib.stages.pipeline import parent_run, record_dataset
from genlib.stages.summary import format_summary, summarise, summary_markdown
from genlib.stages.train import check_model_fits, train
from genlib.tracking import Tracker
from genlib.train.adaptive import check_encoder


def _dataset_hash(dataset: str) -> str:
    return read_manifest(Path(dataset))["content_hash"]


def _prepare_key(context, p: dict[str, Any]) -> str:
    # Scoped to the flow run: within it (retries) the data config decides; across flow runs genlib's
    # own content hash does, because a folder or npz source can change under the same config and a
    # nightly run must see the change. Preparing an unchanged source again is a cheap cache hit.
    return cache_key("prepare", None, data=p["config"]["data"], flow_run=str(context.task_run.flow_run_id))


def _train_key(context, p: dict[str, Any]) -> str:
    # Dataset hash + the whole config (genlib's own job key, which resumes an unfinished run, is the
    # same minus the tracking section): a miss on a half-finished job re-enters train() and resumes
    # it. Not the parent run: a finished training is reused by a later flow run too.
    return cache_key("train", p["tracking_uri"], dataset_hash=_dataset_hash(p["dataset"]), config=p["config"])


def _evaluate_key(context, p: dict[str, Any]) -> str:
    # The training run fixes the checkpoint; the config fixes the protocol (n generated, extractor, ...).
    return cache_key("evaluate", p["tracking_uri"], train_run_id=p["train_run_id"], config=p["config"],
                     dataset_hash=_dataset_hash(p["dataset"]))


@task(name="prepare", retries=3, retry_delay_seconds=backoff(5), retry_condition_fn=_transient,
      cache_policy=CacheKeyFnPolicy(cache_key_fn=_prepare_key), persist_result=True)
def prepare_task(config: dict[str, Any]) -> dict[str, Any]:
    prepared = prepare(config_from_dict(config).data)
    return {"path": str(prepared.path), "content_hash": prepared.content_hash,
            "cache_hit": prepared.cache_hit, "splits": prepared.manifest["splits"]}


# A retry re-enters train(), which resumes rather than restarts: the Ray run name is stable per
# (dataset hash, config) and the unfinished MLflow run is reopened. Ray Train itself restarts lost
# workers first (train.max_failures); this retry covers the driver side giving up.
@task(name="train", retries=2, retry_delay_seconds=backoff(10), retry_condition_fn=_transient,
      cache_policy=CacheKeyFnPolicy(cache_key_fn=_train_key), persist_result=True)
def train_task(config: dict[str, Any], dataset: str, tracking_uri: str, parent_run_id: str) -> dict[str, Any]:
    result = train(config_from_dict(config), dataset, Tracker(tracking_uri), parent_run_id)
    return {"run_id": result.run_id, "checkpoint": str(result.checkpoint), "epoch": result.epoch,
            "val_loss": result.metrics.get("val_loss")}


@task(name="evaluate", retries=2, retry_delay_seconds=backoff(5), retry_condition_fn=_transient,
      cache_policy=CacheKeyFnPolicy(cache_key_fn=_evaluate_key), persist_result=True)
def evaluate_task(config: dict[str, Any], checkpoint: str, dataset: str, tracking_uri: str,
                  parent_run_id: str, train_run_id: str) -> dict[str, Any]:
    result = evaluate(config_from_dict(config), checkpoint, dataset, Tracker(tracking_uri),
                      parent_run_id, train_run_id)
    return {"run_id": result.run_id, "metrics": result.metrics}


# Never cached: it writes into this flow run's parent MLflow run, whichever stages were cache hits.
@task(name="summary", retries=2, retry_delay_seconds=backoff(5), retry_condition_fn=_transient,
      cache_policy=NO_CACHE)
def summary_task(cfg_dict: dict[str, Any], dataset: dict[str, Any], rows: list[dict[str, Any]],
                 tracking_uri: str, parent_run_id: str, weights: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = config_from_dict(cfg_dict)
    summary = summarise(cfg, dataset, rows, Tracker(tracking_uri), parent_run_id, weights)
    create_markdown_artifact(summary_markdown(summary), key="genlib-summary", description=f"genlib pipeline {cfg.name}")
    if summary["mlflow_url"]:
        create_link_artifact(summary["mlflow_url"], link_text=f"MLflow run {parent_run_id}",
                             key="genlib-mlflow-run", description=f"genlib pipeline {cfg.name} in MLflow")
    return summary


@flow(name="genlib-pipeline")
def pipeline(preset: str = "digits-quick", overrides: list[str] | None = None) -> dict[str, Any]:
    """Prepare the preset's dataset, train its model family, score it, and summarise — one parent MLflow run."""
    cfg = load_config(preset, overrides)
    return run_stages(cfg)


def run_stages(cfg: Config) -> dict[str, Any]:
    check_names(cfg)
    _check_reweight_stage(cfg)
    tracker = Tracker(cfg.tracking.tracking_uri)
    config = cfg.to_dict()
    with parent_run(cfg, tracker, flow_run.id) as parent:
        dataset = persisted(prepare_task)(config)
        record_dataset(tracker, parent, dataset["content_hash"])
        version = DatasetVersion(dataset["path"])
        for model in cfg.pipeline_models():  # every model takes this data, before the first one trains
            check_model_fits(cfg.replace(model=model), version)
        rows = [_train_and_evaluate(cfg.replace(model=model, models=()), dataset, tracker, parent)
                for model in cfg.pipeline_models()]
        weights = None
        if cfg.reweight.retrain:
            encoder = next(row for row in rows if row["model"] == cfg.reweight.encoder)
            weights = persisted(reweight_task)(encoder["train_run_id"], dataset["path"], tracker.uri, parent)
            for model in cfg.pipeline_models():
                if model.label in cfg.reweight.retrain:
                    again = cfg.replace(model=dataclasses.replace(model, name=f"{model.label}{REWEIGHTED}"),
                                        models=(), train=dataclasses.replace(cfg.train, weights=weights["run_id"]))
                    rows.append(_train_and_evaluate(again, dataset, tracker, parent))
        return persisted(summary_task)(config, dataset, rows, tracker.uri, parent, weights)


def _train_and_evaluate(one: Config, dataset: dict[str, Any], tracker: Tracker, parent: str) -> dict[str, Any]:
    label, config = one.model.label, one.to_dict()
    trained = persisted(train_task, name=f"train-{label}")(config, dataset["path"], tracker.uri, parent)
    scores = persisted(evaluate_task, name=f"evaluate-{label}")(
        config, trained["checkpoint"], dataset["path"], tracker.uri, parent, trained["run_id"])
    return {"model": label, "family": one.model.family, "selected_epoch": trained["epoch"],
            "train_run_id": trained["run_id"], "eval_run_id": scores["run_id"], **scores["metrics"]}


def _check_reweight_stage(cfg: Config) -> None:
    """Fail before any training if the reweight stage names models the pipeline does not train."""
    if not cfg.reweight.retrain:
        return
    labels = [m.label for m in cfg.pipeline_models()]
    unknown = [name for name in (cfg.reweight.encoder, *cfg.reweight.retrain) if name not in labels]
    if unknown:
        raise ValueError(f"reweight.encoder / reweight.retrain name {unknown}, which this pipeline does not train; "
                         f"its models: {labels}")
    encoder = next(m for m in cfg.pipeline_models() if m.label == cfg.reweight.encoder)
    check_encoder(cfg, encoder.family, MODELS.get(encoder.family).capabilities)


if __name__ == "__main__":
    # `python -m flows.pipeline PRESET [--section.key=value ...]`: as `genlib pipeline`, the flow and its table.
    from flows.policy import configure_prefect

    configure_prefect()
    args = sys.argv[1:] or ["digits-quick"]
    print(format_summary(pipeline(args[0], command_line_overrides(args[1:]))))

"""The genlib pipeline as a Prefect flow: prepare → (train → evaluate) per model → summary.

One parent MLflow run per flow run; each stage of each model opens its own nested run, and the
summary compares the models side by side. Tasks wrap one genlib
call each and pass paths, run ids and plain config data between them.

Run it directly (``python -m flows.pipeline digits-quick``) or through ``genlib pipeline``.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from genlib.config import Config, config_from_dict, load_config
from genlib.data.prepare import prepare
from genlib.report import evaluation_report
from genlib.evaluate.suite import evaluate
from flows.reweight import reweight_task
from genlib.tracking import Tracker
from genlib.train.launch import experiment_name, train


def _transient(task, task_run, state) -> bool:
    """Retry downloads and I/O hiccups, never bad input (ValueError/TypeError say what to fix)."""
    try:
        state.result()
    except (ValueError, TypeError):
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False


@task(name="prepare", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=_transient)
def prepare_task(config: dict[str, Any]) -> dict[str, Any]:
    prepared = prepare(config_from_dict(config).data)
    return {"path": str(prepared.path), "content_hash": prepared.content_hash,
            "cache_hit": prepared.cache_hit, "splits": prepared.manifest["splits"]}


# Ray Train already restarts failed workers from the last checkpoint (train.max_failures); a
# Prefect retry here would start a second, fresh run, so none is declared.
@task(name="train")
def train_task(config: dict[str, Any], dataset: str, tracking_uri: str, parent_run_id: str) -> dict[str, Any]:
    result = train(config_from_dict(config), dataset, Tracker(tracking_uri), parent_run_id)
    return {"run_id": result.run_id, "checkpoint": str(result.checkpoint), "epoch": result.epoch,
            "val_loss": result.metrics.get("val_loss")}


@task(name="evaluate")
def evaluate_task(config: dict[str, Any], checkpoint: str, dataset: str, tracking_uri: str,
                  parent_run_id: str, train_run_id: str) -> dict[str, Any]:
    result = evaluate(config_from_dict(config), checkpoint, dataset, Tracker(tracking_uri),
                      parent_run_id, train_run_id)
    return {"run_id": result.run_id, "metrics": result.metrics}


@task(name="summary")
def summary_task(cfg_dict: dict[str, Any], dataset: dict[str, Any], rows: list[dict[str, Any]],
                 tracking_uri: str, parent_run_id: str, weights: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = config_from_dict(cfg_dict)
    name = f"{cfg.data.source}-{dataset['content_hash'][:12]}"
    rows = [{**row, "dataset": name} for row in rows]
    summary = {"preset": cfg.name, "experiment": experiment_name(cfg), "parent_run_id": parent_run_id,
               "tracking_uri": tracking_uri, "rows": rows, "reweight": weights}
    tracker = Tracker(tracking_uri)
    headline = headline_columns(rows)
    tracker.log_metrics(parent_run_id, {f"{row['model']}.{k}": row[k] for row in rows for k in headline if k in row})
    tracker.log_dict(parent_run_id, summary, "summary.json")
    markdown = summary_markdown(summary)
    tracker.log_text(parent_run_id, markdown, "summary.md")
    report = evaluation_report(tracker, [row["eval_run_id"] for row in rows], title=f"genlib pipeline {cfg.name}",
                               intro=[f"Dataset {name} (splits {dataset['splits']}); MLflow experiment "
                                      f"{summary['experiment']}, parent run {parent_run_id}."],
                               reweight_run_ids=[weights["run_id"]] if weights else [])
    tracker.log_text(parent_run_id, report, "report.html")
    create_markdown_artifact(markdown, key="genlib-summary", description=f"genlib pipeline {cfg.name}")
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    rows = summary["rows"]
    metric_keys = headline_columns(rows)
    head = ["model", "family", "dataset", "selected epoch", *metric_keys, "train run"]
    lines = [f"# genlib pipeline `{summary['preset']}`", "",
             f"MLflow experiment `{summary['experiment']}`, parent run `{summary['parent_run_id']}` "
             f"({summary['tracking_uri']})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["model"], row["family"], row["dataset"], str(row["selected_epoch"]),
                 *(f"{row[k]:.4f}" if k in row else "—" for k in metric_keys), row["train_run_id"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@flow(name="genlib-pipeline")
def pipeline(preset: str = "digits-quick", overrides: list[str] | None = None) -> dict[str, Any]:
    """Prepare the preset's dataset, train its model family, score it, and summarise — one parent MLflow run."""
    cfg = load_config(preset, overrides)
    return run_stages(cfg)


def headline_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Headline columns present in any row: exact ``test_bpd`` first, then the bounds, then FID
    and the pixel-space copy rate."""
    keys = {k for row in rows for k in row if k.endswith("_bpd") or k.startswith("fid_") or k == "copy_rate_pixel"}
    return sorted(keys, key=lambda k: (not k.endswith("_bpd"), k != "test_bpd", k))


def run_stages(cfg: Config) -> dict[str, Any]:
    _check_reweight_stage(cfg)
    tracker = Tracker(cfg.tracking.tracking_uri)
    config = cfg.to_dict()
    name = cfg.tracking.run_name or f"pipeline-{cfg.name}"
    tags = {"genlib.stage": "pipeline", "genlib.preset": cfg.name}
    with tracker.run(experiment_name(cfg), name, tags=tags) as parent:
        tracker.log_params(parent, cfg.flat())
        dataset = prepare_task(config)
        tracker.set_tags(parent, {"genlib.dataset_hash": dataset["content_hash"]})
        rows = [_train_and_evaluate(cfg.replace(model=model, models=()), dataset, tracker, parent)
                for model in cfg.pipeline_models()]
        weights = None
        if cfg.reweight.retrain:
            encoder = next(row for row in rows if row["model"] == cfg.reweight.encoder)
            weights = reweight_task(encoder["train_run_id"], dataset["path"], tracker.uri, parent)
            for model in cfg.pipeline_models():
                if model.label in cfg.reweight.retrain:
                    again = cfg.replace(model=dataclasses.replace(model, name=f"{model.label}-reweighted"),
                                        models=(), train=dataclasses.replace(cfg.train, weights=weights["run_id"]))
                    rows.append(_train_and_evaluate(again, dataset, tracker, parent))
        return summary_task(config, dataset, rows, tracker.uri, parent, weights)


def _train_and_evaluate(one: Config, dataset: dict[str, Any], tracker: Tracker, parent: str) -> dict[str, Any]:
    label, config = one.model.label, one.to_dict()
    trained = train_task.with_options(name=f"train-{label}")(config, dataset["path"], tracker.uri, parent)
    scores = evaluate_task.with_options(name=f"evaluate-{label}")(
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


if __name__ == "__main__":
    # Same entry as `genlib pipeline PRESET [overrides]`: same checks, same summary table.
    from genlib.cli import main

    sys.exit(main(["pipeline", *(sys.argv[1:] or ["digits-quick"])]))

"""The pipeline's summary, in its parent run: the models side by side, the best of each family
registered, a comparison report, and the same table for the terminal.

Which metrics are headline columns, which way is better and which one ranks a family's models
are the record schema's (``genlib.tracking.HEADLINES``).
"""

from __future__ import annotations

import json
from typing import Any

from genlib.config import Config
from genlib.models import MODELS
from genlib.models.base import SAMPLE, TRANSLATE
from genlib.report import collect, render
from genlib.stages.locations import LOCAL_UI, mlflow_run_url, report_location
from genlib.tracking import (
    CHECKPOINT,
    REPORT,
    SUMMARY_JSON,
    SUMMARY_MD,
    Tag,
    Tracker,
    experiment_name,
    headline,
    headline_metrics,
    ranking_metric,
)


def summarise(cfg: Config, dataset: dict[str, Any], rows: list[dict[str, Any]], tracker: Tracker,
              parent_run_id: str, weights: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record the summary of a pipeline's rows (one per trained and evaluated model) in its parent
    run: headline metrics, summary.json/.md, registered models and the comparison report."""
    name = f"{cfg.data.source}-{dataset['content_hash'][:12]}"
    rows = [{**row, "dataset": name} for row in rows]
    experiment_id = tracker.get_run(parent_run_id).info.experiment_id
    summary = {"preset": cfg.name, "experiment": experiment_name(cfg), "experiment_id": experiment_id,
               "parent_run_id": parent_run_id, "tracking_uri": tracker.uri,
               "mlflow_url": mlflow_run_url(tracker.uri, experiment_id, parent_run_id),
               "rows": rows, "reweight": weights}
    summary["registered"] = register_best(tracker, rows, cfg.data.source, dataset["content_hash"], cfg.to_dict())
    columns = summary_columns(rows)
    tracker.log_metrics(parent_run_id, {f"{row['model']}.{k}": row[k] for row in rows for k in columns if k in row})
    report = render(f"genlib pipeline {cfg.name}", [collect(tracker, row["eval_run_id"]) for row in rows],
                    [f"Dataset {name} (splits {dataset['splits']}); MLflow experiment {summary['experiment']}, "
                     f"parent run {parent_run_id}."],
                    [collect(tracker, weights["run_id"])] if weights else [])
    tracker.log_text(parent_run_id, report, REPORT)
    summary["report"] = report_location(tracker, parent_run_id)
    tracker.log_dict(parent_run_id, summary, SUMMARY_JSON)
    tracker.log_text(parent_run_id, summary_markdown(summary), SUMMARY_MD)
    return summary


def summary_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The summary's headline metrics present in any row, in column order."""
    return [key for key, _ in headline_metrics({k for row in rows for k in row}, summary=True)]


def register_best(tracker: Tracker, rows: list[dict[str, Any]], source: str, dataset_hash: str,
                  config: dict[str, Any]) -> dict[str, str]:
    """Register each family's best model of a pipeline (by the ranking headline metric: lowest
    bits/dim, else lowest FID) as a new version of ``genlib-<source>-<family>``, aliased ``last``,
    and ``best`` when it beats the version holding ``best`` on the same metric.
    Returns {family: models:/NAME/VERSION}."""
    best: dict[str, tuple[dict[str, Any], str, float]] = {}
    for row in rows:
        ranked = ranking_metric(row)
        if ranked and (row["family"] not in best or ranked[1] < best[row["family"]][2]):
            best[row["family"]] = (row, *ranked)
    uris = {}
    for family, (row, metric, value) in best.items():
        name = f"genlib-{source}-{family}"
        tags = {Tag.MODEL: row["model"], Tag.DATASET_HASH: dataset_hash, Tag.METRIC: metric,
                Tag.METRIC_VALUE: str(value), Tag.CONFIG: json.dumps(config, default=str)[:5000]}
        version = tracker.register_version(name, row["train_run_id"], CHECKPOINT, tags)
        tracker.set_alias(name, "last", version)  # ("latest" is reserved by MLflow)
        holder = tracker.version_by_alias(name, "best")
        if holder is None or (holder.tags.get(Tag.METRIC) == metric
                              and value < float(holder.tags.get(Tag.METRIC_VALUE, "inf"))):
            tracker.set_alias(name, "best", version)
        uris[family] = f"models:/{name}/{version}"
    return uris


def summary_markdown(summary: dict[str, Any]) -> str:
    rows = summary["rows"]
    metric_keys = summary_columns(rows)
    head = ["model", "family", "dataset", "selected epoch", *metric_keys, "train run"]
    url, parent = summary.get("mlflow_url"), summary["parent_run_id"]
    lines = [f"# genlib pipeline `{summary['preset']}`", "",
             f"MLflow experiment `{summary['experiment']}`, parent run "
             f"{f'[`{parent}`]({url})' if url else f'`{parent}`'} ({summary['tracking_uri']})", ""]
    if url and url.startswith(LOCAL_UI):
        lines += [f"[Open the run in MLflow]({url}) (local store: start `genlib ui` first).", ""]
    elif url:
        lines += [f"[Open the run in MLflow]({url}).", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        run_url = url and mlflow_run_url(summary["tracking_uri"], summary["experiment_id"], row["train_run_id"])
        cells = [row["model"], row["family"], row["dataset"], str(row["selected_epoch"]),
                 *(f"{row[k]:.4f}" if k in row else "—" for k in metric_keys),
                 f"[{row['train_run_id']}]({run_url})" if run_url else row["train_run_id"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_summary(summary: dict[str, Any]) -> str:
    """The pipeline's results as a plain-text table plus where to look next."""
    rows = summary["rows"]
    metric_keys = summary_columns(rows)
    head = ["model", "family", "epoch", *metric_keys]
    table = [head] + [[r["model"], r["family"], str(r["selected_epoch"]),
                       *(f"{r[k]:.4f}" if k in r else "-" for k in metric_keys)] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    unscored = [r["model"] for r in rows if not headline("bpd").matching(r, lead=True)
                and SAMPLE in MODELS.get(r["family"]).capabilities]
    if unscored:
        lines.append(f"(no likelihood: {', '.join(unscored)}; see their samples and sample-quality scores in MLflow)")
    return "\n".join([
        "", f"genlib pipeline {summary['preset']}: done, dataset {rows[0]['dataset']} "
            f"(test split; bits/dim and FID: lower is better)", "", *lines, "",
        f"MLflow experiment {summary['experiment']!r}, parent run {summary['parent_run_id']}",
        f"  tracking store: {summary['tracking_uri']}",
        *([f"The report:        {summary['report']}"] if summary.get("report") else []),
        "Browse every run:  .venv/bin/genlib ui   (serves the MLflow UI and opens this experiment's runs)",
        "Best model per family: " + ", ".join(summary.get("registered", {}).values()),
        *(["Draw samples:      .venv/bin/genlib sample --model <one of those> -n 64 -o grid.png"]
          if any(SAMPLE in MODELS.get(r["family"]).capabilities for r in rows) else []),
        *(["Translate images:  .venv/bin/genlib translate --model <one of those> --input DIR|in.npz -o DIR|out.npz"]
          if any(TRANSLATE in MODELS.get(r["family"]).capabilities for r in rows) else []),
    ])

"""One HTML page per evaluation or pipeline run: the numbers, their protocol, and the pictures.

``render`` turns ``RunView``s into the page. An evaluation builds its view from the scores it
holds in memory; a pipeline's comparison reads its runs back from MLflow (``collect``), so it can
be rebuilt later from any tracking store. Columns, directions, artifact paths and captions are
the record schema's (``genlib.tracking``). Images are embedded as base64, so the file renders on
its own: in MLflow's artifact view, or opened from disk.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genlib.tracking import FIGURES, TABLES, Tag, Tracker, headline_metrics

REWEIGHTED = "-reweighted"  # the label suffix of a model the pipeline retrains with the weights
PROTOCOL_PREFIXES = ("eval.", "quality.", "fid.", "memorization.", "data_copying.", "reweight.", "rare.")


@dataclass
class RunView:
    """What the report shows of one evaluation run."""
    name: str
    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]
    params: dict[str, str]
    images: dict[str, bytes] = field(default_factory=dict)  # artifact path → PNG
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # artifact path → rows


def collect(tracker: Tracker, run_id: str) -> RunView:
    """Read one run's metrics, params, figures and tables back from the tracking store."""
    run = tracker.get_run(run_id)
    present = set(tracker.list_artifacts(run_id))
    view = RunView(run.info.run_name or run_id, run_id, dict(run.data.tags), dict(run.data.metrics),
                   dict(run.data.params))
    with tempfile.TemporaryDirectory() as tmp:
        for path in [p for p in (*FIGURES, *TABLES) if p in present]:
            local = tracker.download_artifacts(run_id, path, tmp)
            if path.endswith(".png"):
                view.images[path] = Path(local).read_bytes()
            else:
                view.tables[path] = json.loads(Path(local).read_text())
    return view


def headline_keys(runs: list[RunView]) -> list[tuple[str, str | None]]:
    """(metric, direction) of every headline metric any run has, in column order."""
    return headline_metrics({k for run in runs for k in run.metrics})


def render(title: str, runs: list[RunView], intro: list[str] = (), reweights: list[RunView] = ()) -> str:
    body = [f"<h1>{_e(title)}</h1>", *(f"<p>{_e(line)}</p>" for line in intro),
            "<h2>Results</h2>", _leaderboard(runs),
            "<p class=note>Test split. Bold: the best value of a column (lower bits/dim, FID, KID and copy rate; "
            "higher precision, recall and authenticity). A strongly negative data-copying z flags copying.</p>"]
    for run in runs:
        body.append(_run_section(run))
    debias = _debias_section(runs, reweights)
    if debias:
        body.append(debias)
    for run in reweights:
        body += ["<h2>Reweighting (DB-VAE)</h2>", _table([{"diagnostic": k, "value": v}
                                                        for k, v in sorted(run.metrics.items())]),
                 _run_section(run)]
    return _PAGE.format(title=_e(title), body="\n".join(body))


def _debias_section(runs: list[RunView], reweights: list[RunView]) -> str:
    """Each model retrained with the weights beside the same model without them, on what the dataset
    flags as rare (``genlib.evaluate.debias``); empty when no run has rare-subgroup measures."""
    by_model = {run.tags.get(Tag.MODEL, run.name): run for run in runs}
    pairs = [(by_model[label.removesuffix(REWEIGHTED)], run) for label, run in by_model.items()
             if label.endswith(REWEIGHTED) and label.removesuffix(REWEIGHTED) in by_model]
    check = next((r.metrics for r in reweights if "classifier_rare_accuracy_uniform" in r.metrics), None)
    if not any(k.startswith("rare_") for pair in pairs for run in pair for k in run.metrics) and check is None:
        return ""
    parts = ["<h2>Debiasing: without and with the weights</h2>",
             "<p class=note>The rare subgroup is the one the dataset version flags (data.rare_class or "
             "data.style), a label training never sees. Share of samples: those a classifier fitted on the val "
             "split assigns to it (its balanced accuracy on the test split below; the train split's share is "
             "the reference). Precision and recall against the rare test images only; FID of the samples "
             "assigned rare against them.</p>"]
    for base, weighted in pairs:
        keys = sorted({k for run in (base, weighted) for k in run.metrics if k.startswith("rare_")})
        rows = [{"measure": k, base.tags.get(Tag.MODEL, base.name): base.metrics.get(k),
                 weighted.tags.get(Tag.MODEL, weighted.name): weighted.metrics.get(k)} for k in keys]
        parts.append(_table(rows))
    if check is not None:
        parts.append("<h3>A classifier of the labels trained on the biased split (DB-VAE's check)</h3>")
        parts.append(_table([{"accuracy": what, "uniform sampling": _pm(check, f"{key}_uniform"),
                              "reweighted sampling": _pm(check, f"{key}_weighted")}
                             for what, key in (("on the rare test images", "classifier_rare_accuracy"),
                                               ("on all test images", "classifier_accuracy"))]))
    return "\n".join(parts)


def _pm(metrics: dict[str, float], key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "—"
    return f"{value:.4f}" + (f" ± {metrics[key + '_std']:.4f}" if key + "_std" in metrics else "")


def _leaderboard(runs: list[RunView]) -> str:
    columns = headline_keys(runs)
    best = {}
    for key, direction in columns:
        values = [run.metrics[key] for run in runs if key in run.metrics]
        if direction and len(values) > 1:
            best[key] = min(values) if direction == "min" else max(values)
    head = "".join(f"<th>{_e(k)}</th>" for k, _ in columns)
    rows = []
    for run in runs:
        cells = []
        for key, _ in columns:
            value = run.metrics.get(key)
            text = "—" if value is None else f"{value:.4f}"
            if value is not None and f"{key}_std" in run.metrics:
                text += f" ± {run.metrics[f'{key}_std']:.4f}"
            cells.append(f"<td><b>{text}</b></td>" if value is not None and best.get(key) == value
                         else f"<td>{text}</td>")
        model = run.tags.get(Tag.MODEL, run.name)
        rows.append(f"<tr><td><a href='#{_e(run.run_id)}'>{_e(model)}</a></td>"
                    f"<td>{_e(run.tags.get(Tag.FAMILY, ''))}</td>{''.join(cells)}</tr>")
    return f"<div class=wide><table><tr><th>model</th><th>family</th>{head}</tr>{''.join(rows)}</table></div>"


def _run_section(run: RunView) -> str:
    model = run.tags.get(Tag.MODEL, run.name)
    parts = [f"<h2 id='{_e(run.run_id)}'>{_e(model)} <small>({_e(run.tags.get(Tag.FAMILY, ''))}, "
             f"MLflow run {_e(run.run_id)})</small></h2>"]
    protocol = {k: v for k, v in sorted(run.params.items()) if k.startswith(PROTOCOL_PREFIXES)}
    if protocol:
        parts.append("<details><summary>evaluation protocol</summary>" + _table(
            [{"param": k, "value": v} for k, v in protocol.items()]) + "</details>")
    figures = [f"<figure><img alt='{_e(path)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
               f"<figcaption>{_e(FIGURES.get(path, path))}</figcaption></figure>"
               for path, png in run.images.items()]
    if figures:
        parts.append(f"<div class=figures>{''.join(figures)}</div>")
    for path, rows in run.tables.items():
        parts.append(f"<h3>{_e(TABLES.get(path, path))}</h3>{_table(rows)}")
    return "\n".join(parts)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{_e(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(v))}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
th, td {{ border: 1px solid #ccc; padding: .25em .6em; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, th:first-child {{ text-align: left; }}
.figures {{ display: flex; flex-wrap: wrap; gap: 1.5em; }}
figure {{ margin: 0; }} figcaption {{ font-size: .85em; color: #555; max-width: 28em; }}
img {{ image-rendering: pixelated; max-width: 30em; }}
.wide {{ overflow-x: auto; }} .note {{ font-size: .85em; color: #555; }} small {{ color: #777; font-weight: normal; }}
</style></head>
<body>
{body}
</body></html>
"""

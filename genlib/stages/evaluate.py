"""The evaluate stage: score a checkpoint (``genlib.evaluate.suite``) and record it in one MLflow run,
with an HTML report rendered from the scores in memory."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from genlib.config import Config
from genlib.data.dataset import DatasetVersion
from genlib.data.kinds import DIRECTIONS
from genlib.evaluate.extractor import eval_device
from genlib.evaluate.references import References
from genlib.evaluate.suite import CURVE_PREFIX, Scores, score
from genlib.evaluate.translate import translation_scores
from genlib.figures import curves, png_bytes
from genlib.models import check_model_data
from genlib.models.base import TRANSLATE
from genlib.models.io import load_model
from genlib.report import RunView, render
from genlib.runs import trained_run
from genlib.stages.extractors import load_references, record_network
from genlib.stages.locations import report_location
from genlib.tracking import DURING_TRAINING, REPORT, Stage, Tag, Tracker, experiment_name, param_text


@dataclass(frozen=True)
class EvalResult:
    run_id: str  # the MLflow run holding the metrics, figures and report
    metrics: dict[str, float]
    report: str  # where to open the report: its page in the MLflow UI and, for a local store, the file


def evaluate(cfg: Config, checkpoint: str | Path, dataset: str | Path, tracker: Tracker | None = None,
             parent_run_id: str | None = None, train_run_id: str | None = None) -> EvalResult:
    """Score ``checkpoint`` on ``dataset`` in a new (nested) MLflow run, with an HTML report."""
    tracker = tracker or Tracker(cfg.tracking.tracking_uri)
    version = DatasetVersion(dataset)
    model = load_model(checkpoint, map_location=eval_device(cfg.eval.device))
    model.eval()
    check_model_data(model, version)  # before a run opens
    if TRANSLATE in model.capabilities and cfg.eval.extractor_from:
        raise ValueError("eval.extractor_from brings one feature network; a translator is scored in each target "
                         "domain's own network: leave eval.extractor_from unset")
    tags = {Tag.STAGE: Stage.EVALUATE, Tag.FAMILY: cfg.model.family, Tag.MODEL: cfg.model.label,
            Tag.DATASET_HASH: version.content_hash, Tag.PRESET: cfg.name,
            Tag.DATASET: f"{version.manifest['source']}-{version.content_hash[:12]}"}
    if train_run_id:
        tags[Tag.TRAIN_RUN] = train_run_id
    name = f"evaluate-{cfg.model.label}"
    with tracker.run(experiment_name(cfg), name, parent_run_id, tags) as run_id:
        tracker.log_params(run_id, {"checkpoint": str(checkpoint)})
        tracker.log_dataset(run_id, version.manifest, version.path, context="test")
        with tempfile.TemporaryDirectory() as scratch:
            if TRANSLATE in model.capabilities:
                parts, refs = _translation_parts(model, cfg, version, tracker, Path(scratch))
            else:
                refs = load_references(cfg, version, model.device, tracker, Path(scratch)) \
                    if cfg.eval.n_generated > 0 else None
                parts = score(model, cfg, version, refs)
        if refs is not None:
            record_network(tracker, run_id, refs.extractor)
        if train_run_id:
            parts += memorization_curves(tracker, train_run_id)
        view = run_view(name, run_id, tags, parts)
        log_view(tracker, run_id, view)
        tracker.log_text(run_id, render(f"genlib evaluation: {cfg.model.label}", [view]), REPORT)
    return EvalResult(run_id, view.metrics, report_location(tracker, run_id))


def _translation_parts(model, cfg: Config, version: DatasetVersion, tracker: Tracker, scratch: Path):
    """A translator's scores (``translate.py``), each domain's references loaded once; and the references
    whose network the run records (the first direction's target domain: the other's digest is in the
    params of its direction)."""
    loaded: dict[str, References] = {}

    def references(domain: str) -> References:
        if domain not in loaded:
            (scratch / domain).mkdir(exist_ok=True)
            loaded[domain] = load_references(cfg, version.domain(domain), model.device, tracker, scratch / domain)
        return loaded[domain]

    parts = translation_scores(model, cfg, version, references)
    first = DIRECTIONS[model.directions[0]][1]
    return parts, loaded.get(first)


def memorization_curves(tracker: Tracker, train_run_id: str) -> list[Scores]:
    """The memorization curve the training run logged (``train.eval_every``), as a figure of the
    evaluation: copy rates and data-copying z against the epoch. None when it logged none."""
    keys = [k for k in tracker.get_run(train_run_id).data.metrics if k.startswith(CURVE_PREFIX)]
    if not keys:
        return []
    series = {k.removeprefix(CURVE_PREFIX): [(m.step, m.value) for m in tracker.client.get_metric_history(train_run_id, k)]
              for k in keys}
    figure = curves(series, "epoch", "memorization during training (copy rate < 1 is a share; z ≪ 0 flags copying)")
    return [Scores({}, {"memorization.during_training": ", ".join(sorted(series))}, {DURING_TRAINING: figure}, {})]


def evaluate_run(train_run_id: str, overrides: list[str] | None = None,
                 tracker: Tracker | None = None) -> EvalResult:
    """Evaluate the checkpoint a training run selected, on the dataset version it was trained on.

    The config is the one stored in the checkpoint, with ``overrides`` (e.g. ``eval.n_generated=5000``)
    applied; the new run is nested where the training run is (under its pipeline run, if any)."""
    tracker = tracker or Tracker()
    run = trained_run(tracker, train_run_id, overrides)
    return evaluate(run.config, run.checkpoint, run.dataset, tracker, run.parent_run_id, train_run_id)


def run_view(name: str, run_id: str, tags: dict[str, str], parts: list[Scores]) -> RunView:
    """What the report shows of a run, from the scores in memory (params as MLflow stores them)."""
    view = RunView(name, run_id, dict(tags), {}, {})
    for part in parts:
        view.metrics.update(part.metrics)
        view.params.update({k: param_text(v) for k, v in part.params.items()})
        view.images.update({path: png_bytes(figure) for path, figure in part.figures.items()})
        view.tables.update(part.tables)
    return view


def log_view(tracker: Tracker, run_id: str, view: RunView) -> None:
    """Record what the report shows: the same metrics, params, PNG bytes and tables."""
    tracker.log_metrics(run_id, view.metrics)
    tracker.log_params(run_id, view.params)
    for path, png in view.images.items():
        tracker.log_image(run_id, png, path)
    for path, rows in view.tables.items():
        tracker.log_dict(run_id, rows, path)

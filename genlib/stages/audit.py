"""The audit stage: samples from any generator, scored against a prepared dataset version as the
evaluate stage scores a genlib model, in one MLflow run with the same HTML report.

The samples are a folder of PNG/JPEG files or an ``.npz`` (``genlib.data.samples``); they are read and
checked before the run opens, so bad input leaves no run behind. Sample quality is measured against
the test split, memorization (plain and transform-robust copy rates, authenticity, data-copying z,
per-class table, closest pairs) against the train split; there is no likelihood (no model). What was
done to the samples to fit the dataset (``--resize``, ``--quantise``) and their SHA-256 are in the
protocol.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import torch

from genlib.config import Config
from genlib.data.dataset import DatasetVersion
from genlib.data.samples import read_samples
from genlib.evaluate.extractor import eval_device
from genlib.evaluate.suite import Scores, sample_scores
from genlib.figures import image_grid
from genlib.report import render
from genlib.stages.evaluate import EvalResult, log_view, run_view
from genlib.stages.extractors import load_references, record_network
from genlib.stages.locations import report_location
from genlib.tracking import REPORT, SAMPLES, Stage, Tag, Tracker

EXTERNAL = "external"  # the family tag of audited samples: genlib did not make them


def audit(cfg: Config, samples: str | Path, dataset: str | Path, name: str | None = None, resize: bool = False,
          quantise: bool = False, tracker: Tracker | None = None) -> EvalResult:
    """Score the images in ``samples`` against ``dataset`` in a new MLflow run, with an HTML report.
    ``cfg`` gives the evaluation settings (``eval.*``) and the tracking store."""
    version = DatasetVersion(dataset)
    if version.kind != "images":
        raise ValueError(f"dataset {version.path.name} holds {version.kind} data (two domains): audit against one of "
                         f"them, --dataset {version.path / 'a'} or --dataset {version.path / 'b'}")
    images, conversions = read_samples(samples, version.shape, version.levels, resize, quantise)
    name = name or Path(samples).stem
    device = eval_device(cfg.eval.device)
    tracker = tracker or Tracker(cfg.tracking.tracking_uri)
    tags = {Tag.STAGE: Stage.AUDIT, Tag.FAMILY: EXTERNAL, Tag.MODEL: name, Tag.DATASET_HASH: version.content_hash,
            Tag.DATASET: f"{version.manifest['source']}-{version.content_hash[:12]}"}
    experiment = cfg.tracking.experiment or f"genlib-{version.manifest['source']}"
    run_name = f"audit-{name}"
    with tracker.run(experiment, run_name, None, tags) as run_id:
        protocol = {"audit.samples": str(Path(samples).resolve()), "audit.n": len(images),
                    "audit.samples_sha256": hashlib.sha256(images.tobytes()).hexdigest(), **conversions,
                    "eval.device": device.type}
        tracker.log_dataset(run_id, version.manifest, version.path, context="test")
        generated = torch.from_numpy(images)
        grid = image_grid(generated[:cfg.eval.n_samples], version.levels)
        with tempfile.TemporaryDirectory() as scratch:
            refs = load_references(cfg, version, device, tracker, Path(scratch))
            parts = [Scores({}, protocol, {SAMPLES: grid}, {}), *sample_scores(generated, cfg, version, device, refs)]
        record_network(tracker, run_id, refs.extractor)
        view = run_view(run_name, run_id, tags, parts)
        log_view(tracker, run_id, view)
        tracker.log_text(run_id, render(f"genlib audit: {name}", [view]), REPORT)
    return EvalResult(run_id, view.metrics, report_location(tracker, run_id))

"""The train stage: one family on one dataset version, on Ray Train, recorded in one MLflow run.

The driver opens the run (or reopens the unfinished run of the same logical job after a crash),
logs the config and the dataset, runs ``genlib.train.launch.fit`` with hooks through which rank 0
records each epoch, then logs the selected checkpoint. A failure marks the run FAILED.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genlib import paths
from genlib.config import Config
from genlib.data.dataset import DatasetVersion
from genlib.data.weights import check_weights, read_weights
from genlib.figures import image_grid
from genlib.models import MODELS
from genlib.models.base import SAMPLE, TRANSLATE
from genlib.runs import weights_file
from genlib.tracking import CHECKPOINT, Stage, Tag, Tracker, epoch_samples, experiment_name
from genlib.train.adaptive import check_adaptive
from genlib.train.hooks import TrainHooks
from genlib.train.launch import (
    check_cluster_storage,
    check_finite,
    check_resources,
    download,
    ensure_ray,
    fit,
    job_key,
    job_lane,
    select_checkpoint,
)


@dataclass(frozen=True)
class TrainResult:
    run_id: str  # the MLflow run of this training
    checkpoint: Path  # local copy of the selected checkpoint
    epoch: int  # epoch of the selected checkpoint
    metrics: dict[str, Any]  # metrics reported with the selected checkpoint


def train(cfg: Config, dataset: str | Path, tracker: Tracker | None = None,
          parent_run_id: str | None = None) -> TrainResult:
    """Train ``cfg.model`` on a prepared dataset version in a new MLflow run (nested if a parent is given)."""
    tracker = tracker or Tracker(cfg.tracking.tracking_uri)
    version = DatasetVersion(dataset)
    tags = {Tag.STAGE: Stage.TRAIN, Tag.FAMILY: cfg.model.family, Tag.MODEL: cfg.model.label,
            Tag.DATASET_HASH: version.content_hash, Tag.PRESET: cfg.name}
    weights, weights_meta = training_weights(cfg, version, tracker)
    check_adaptive(cfg, MODELS.get(cfg.model.family).capabilities)  # also for callers that skip check_names
    check_model_fits(cfg, version)
    ensure_ray()
    check_resources(cfg.train)  # before any run is opened
    check_cluster_storage(cfg.train.storage_path, version.path)
    if weights_meta:
        tags.update({Tag.WEIGHTS_KEY: weights_meta["key"], Tag.VAE_RUN: weights_meta["vae_run_id"]})
    job = job_key(cfg, version)
    with job_lane(job) as lane:
        tags.update({Tag.JOB_KEY: job, Tag.JOB_LANE: str(lane)})
        earlier = tracker.find_runs(experiment_name(cfg), {Tag.JOB_KEY: job, Tag.JOB_LANE: str(lane)})
        unfinished = next((r.info.run_id for r in earlier if r.info.status != "FINISHED"), None)
        # The Ray run name is stable for a logical job: a relaunched driver (after a crash, or a
        # Prefect retry) finds the same name in storage and Ray Train resumes from its last
        # checkpoint; the unfinished MLflow run is reopened, so the job keeps one run and one metric
        # history. Drivers running the same job at the same time hold different lanes: separate runs.
        finished = sum(r.info.status == "FINISHED" for r in earlier)
        ray_name = f"{cfg.name}-{cfg.model.label}-{job[:12]}-{lane}-{finished}"
        return _train_in_run(cfg, version, tracker, parent_run_id, tags, weights, unfinished, ray_name)


def check_model_fits(cfg: Config, version: DatasetVersion) -> None:
    """Build ``cfg.model`` once for the dataset's shape, levels and classes and drop it, so that what
    the family refuses for this data (a size progan cannot grow to, biggan without labels, an
    attention resolution the networks never pass) is an error here, before Ray starts or a run
    opens, not in a worker. The caller's random state is left as it was.
    A family that does not train on the dataset's kind (pix2pix on unpaired data) is refused here too,
    and so is a memorization curve (``train.eval_every``) for a family that does not sample.
    NOTE: on the CPU, not PyTorch's meta device: the EM baselines draw their start with a
    distribution that meta tensors cannot validate."""
    from genlib.models import build_model_for

    if cfg.train.eval_every and SAMPLE not in MODELS.get(cfg.model.family).capabilities:
        raise ValueError(f"train.eval_every draws samples for a memorization curve; {cfg.model.family!r} does not "
                         f"sample (it translates): set train.eval_every=0")
    with torch.random.fork_rng(devices=[]):
        build_model_for(cfg.model, version)


def _train_in_run(cfg: Config, version: DatasetVersion, tracker: Tracker, parent_run_id: str | None, tags: dict,
                  weights, unfinished: str | None, ray_name: str) -> TrainResult:
    with tracker.run(experiment_name(cfg), f"train-{cfg.model.label}", parent_run_id, tags,
                     reopen=unfinished) as run_id:
        if unfinished:
            tracker.set_tags(run_id, {Tag.DRIVER_RELAUNCHED: "true"})
        else:
            tracker.log_params(run_id, cfg.flat())
            tracker.log_dataset(run_id, version.manifest, version.path, context="train")
        tracker.set_tags(run_id, {Tag.RAY_RUN_NAME: ray_name})
        live = sys.stdout.isatty()  # a bar on a terminal; one line per epoch in logs (CI, Prefect)
        try:
            with EpochBar(tracker, run_id, cfg) if live else contextlib.nullcontext():
                result = fit(cfg, version.path, MLflowEpochs(tracker, run_id, lines=not live,
                                                                      dataset=str(version.path)), ray_name, weights)
        except (KeyboardInterrupt, SystemExit) as err:  # Ray Train's Ctrl-C handler exits with SystemExit(1)
            raise KeyboardInterrupt(f"training {cfg.model.label} interrupted: MLflow run {run_id} is marked KILLED; "
                                    f"the same command resumes it from its last checkpoint") from err
        check_finite(result, cfg)
        checkpoint, metrics = select_checkpoint(result, cfg.train.select_by)
        local = paths.home() / "checkpoints" / run_id
        download(checkpoint, local)
        tracker.log_artifacts(run_id, local, CHECKPOINT)
        epoch = int(metrics["epoch"])
        tracker.set_tags(run_id, {Tag.SELECTED_EPOCH: epoch, Tag.SELECTED_BY: cfg.train.select_by,
                                  Tag.CHECKPOINT: str(local)})
        tracker.log_metrics(run_id, {"selected_epoch": epoch, "selected_val_loss": metrics["val_loss"]})
    return TrainResult(run_id, local, epoch, dict(metrics))


def training_weights(cfg: Config, version: DatasetVersion, tracker: Tracker):
    """The per-sample weights ``train.weights`` names, checked against the dataset: (weights, meta),
    or (None, None) for uniform sampling."""
    if not cfg.train.weights:
        return None, None
    table, meta = read_weights(weights_file(tracker, cfg.train.weights))
    check_weights(table, meta, version.content_hash, version.manifest["splits"]["train"], cfg.train.weights)
    return table["weight"].to_numpy(), meta


class MLflowEpochs(TrainHooks):
    """Rank 0's records in the run the driver opened: per-epoch metrics, sample grids, a progress
    line on the console, and tags for a resume, an early stop or a non-finite loss."""

    def __init__(self, tracker: Tracker, run_id: str, lines: bool = True, dataset: str | None = None):
        self.tracker, self.run_id = tracker, run_id
        self.dataset = dataset  # the version trained on: the memorization curve's references
        self._refs = None  # built on rank 0 at the first curve point, then kept for the run
        self.lines = lines  # print a progress line per epoch (False: the driver draws a bar instead)
        self.logged = 0  # epochs up to this one are in the MLflow history already

    def resumed(self, epoch: int) -> None:
        if epoch > 0:
            self.tracker.set_tags(self.run_id, {Tag.RESUMED_FROM_EPOCH: epoch})
        # Also on a fresh start in a reopened run: an attempt stopped before its first checkpoint
        # logged epochs that are now run again.
        self.logged = self.tracker.last_step(self.run_id, "val_loss")

    def epoch_end(self, model, cfg, metrics: dict[str, float], samples: bool, stopped_early: bool) -> None:
        epoch = int(metrics["epoch"])
        # NOTE: an epoch re-run after a restart keeps the metrics its lost attempt logged: MLflow
        # cannot replace a point, and a second point at the same step would duplicate the epoch.
        if epoch <= self.logged:
            return
        if self.lines:  # the real stdout: Ray Train patches print() into its logger, which echoes it twice
            sys.__stdout__.write(progress_line(cfg, metrics) + "\n")
            sys.__stdout__.flush()
        self.tracker.log_metrics(self.run_id, {k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)
        if samples and SAMPLE in model.capabilities:
            images = model.sample(cfg.eval.n_samples, generator=torch.Generator().manual_seed(cfg.train.seed))
            self.tracker.log_image(self.run_id, image_grid(images, model.levels), epoch_samples(epoch))
        elif samples and TRANSLATE in model.capabilities and self.dataset:  # the first validation images, translated
            from genlib.data.dataset import DatasetVersion
            from genlib.evaluate.translate import gallery

            self.tracker.log_image(self.run_id, gallery(model, DatasetVersion(self.dataset), "val"), epoch_samples(epoch))
        if cfg.train.eval_every and self.dataset and (epoch % cfg.train.eval_every == 0 or epoch == 1):
            from genlib.data.dataset import DatasetVersion
            from genlib.evaluate.references import References
            from genlib.evaluate.suite import memorization_curve_point

            self._refs = self._refs or References.load(DatasetVersion(self.dataset), cfg.eval.extractor, model.device)
            self.tracker.log_metrics(self.run_id, memorization_curve_point(model, cfg, self._refs), step=epoch)
        if stopped_early:
            self.tracker.set_tags(self.run_id, {Tag.STOPPED_EARLY_AT_EPOCH: epoch})

    def nonfinite(self, step: int) -> None:
        self.tracker.set_tags(self.run_id, {Tag.NONFINITE_STEP: step})


class EpochBar:
    """A live bar on the driver's terminal for one training run: epoch, losses, images/s, ETA.

    Rank 0 runs in a Ray worker, whose output reaches the driver as prefixed log lines, so the
    bar is drawn here from what rank 0 records: the run's MLflow metrics, read every ``every``
    seconds on a thread. An epoch is the bar's unit; the ETA is tqdm's, from epochs per second."""

    def __init__(self, tracker: Tracker, run_id: str, cfg: Config, every: float = 1.0, stream=None):
        self.tracker, self.run_id, self.cfg, self.every = tracker, run_id, cfg, every
        self.stream = stream or sys.stdout
        self._stop = threading.Event()

    def __enter__(self) -> EpochBar:
        from tqdm import tqdm

        done = self.tracker.last_step(self.run_id, "val_loss")  # a resumed run starts where it was
        self.bar = tqdm(total=self.cfg.train.epochs, initial=done, unit="epoch", file=self.stream,
                        desc=f"[{self.cfg.model.label}]", dynamic_ncols=True, bar_format=BAR_FORMAT)
        self._thread = threading.Thread(target=self._poll, name="genlib-epoch-bar", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.refresh()
        self.bar.close()

    def _poll(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a missed refresh must never break training
                continue

    def refresh(self) -> None:
        """Move the bar to the last epoch recorded and show its numbers."""
        epoch = self.tracker.last_step(self.run_id, "val_loss")
        if epoch > self.bar.n:
            self.bar.set_postfix_str(bar_numbers(self.tracker.get_run(self.run_id).data.metrics), refresh=False)
            self.bar.update(epoch - self.bar.n)


BAR_FORMAT = "{desc} epoch {n_fmt}/{total_fmt} |{bar}| [{elapsed}<{remaining}]{postfix}"  # postfix: ", numbers"


def bar_numbers(metrics: dict[str, float]) -> str:
    """The numbers beside the bar: losses, bits/dim where the family has them, a growing family's
    level of detail (the epoch's mean), images/s."""
    keys = ["train_loss", "val_loss", *(k for k in metrics if k.startswith("val_") and k.endswith("bpd")),
            "train_growth"]
    shown = " ".join(f"{k} {metrics[k]:.4g}" for k in keys if k in metrics)
    speed = f"  {metrics['images_per_second']:.0f} img/s" if "images_per_second" in metrics else ""
    return shown + speed


def progress_line(cfg: Config, metrics: dict[str, float]) -> str:
    """One epoch's line in a log: ``[vae] epoch 3/12  train_loss … val_loss …  5210 img/s``."""
    return f"[{cfg.model.label}] epoch {int(metrics['epoch'])}/{cfg.train.epochs}  {bar_numbers(metrics)}"

"""The per-worker training loop. It never asks which family it is training.

Each Ray Train worker builds the model from the config, restores the latest checkpoint if Ray
hands one back (after a failure or a relaunch), wraps the model for DDP, and for every epoch:
trains on its shard of the train split, scores its shard of the validation split, combines both
across workers, reports to Ray Train (with a checkpoint every ``checkpoint_every`` epochs), and —
on rank 0 only — logs the epoch's metrics and, every ``sample_every`` epochs, a sample grid to
the MLflow run the driver created.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Subset

from genlib.config import Config, config_from_dict
from genlib.data.dataset import DatasetVersion
from genlib.data.sampling import WeightedDistributedSampler
from genlib.figures import image_grid
from genlib.models import GenerativeModel, build_model
from genlib.models.base import Batch
from genlib.models.io import load_optimizer_states, read_checkpoint, save_checkpoint
from genlib.tracking import Tracker
from genlib.train import chaos


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    _quiet_report_logs()
    cfg = config_from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    version = DatasetVersion(loop_config["dataset"])
    tracker = Tracker(loop_config["tracking_uri"]) if rank == 0 else None
    run_id = loop_config["run_id"]

    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_model(cfg.model, version.shape, version.levels, version.num_classes)
    state, optimizer_states = _restore(model)
    logged = -1  # epochs up to this one are in the MLflow history already (from an attempt that died)
    if state["epoch"] >= 0 and tracker:
        tracker.set_tags(run_id, {"genlib.resumed_from_epoch": state["epoch"]})
        logged = tracker.last_step(run_id, "val_loss")
    torch.manual_seed(cfg.train.seed + 1000 * rank + state["epoch"] + 1)  # own noise per rank and epoch
    # Moves to the device; DDP when world > 1 and there are gradients to synchronise.
    strategy = "ddp" if model.trainable else None
    model.bind_runner(ray.train.torch.prepare_model(model, parallel_strategy=strategy,
                                                    parallel_strategy_kwargs=model.ddp_options or None))
    optimizers = model.configure_optimizers(cfg.train)
    if optimizer_states is not None:
        load_optimizer_states(optimizers, optimizer_states)

    train_set = version.dataset("train")
    if loop_config.get("weights") is not None:  # one weighted draw per epoch, split across the ranks
        sampler = WeightedDistributedSampler(loop_config["weights"], world, rank, seed=cfg.train.seed,
                                             dataset_size=len(train_set))
    else:
        sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.train.seed)
    per_worker = max(1, cfg.train.batch_size // world)
    train_loader = DataLoader(train_set, batch_size=per_worker, sampler=sampler)
    val_set = version.dataset("val")
    val_loader = DataLoader(Subset(val_set, range(rank, len(val_set), world)), batch_size=per_worker)

    step, best_val, stale = state["step"], state["best_val_loss"], state["stale_epochs"]
    for epoch in range(state["epoch"] + 1, cfg.train.epochs):
        sampler.set_epoch(epoch)
        started = time.perf_counter()
        model.train()
        train_metrics, step, bad_step = _train_epoch(model, train_loader, optimizers, step, device,
                                                     loop_config.get("chaos"), cfg.train.precision)
        if bad_step is not None:  # every rank knows (all-reduced): stop together, no checkpoint of NaNs
            if tracker:
                tracker.set_tags(run_id, {"genlib.nonfinite_step": bad_step})
            return {"nonfinite_step": bad_step, "epoch": epoch, "train_metrics": train_metrics}  # to the driver
        model.on_epoch_end()
        seconds = time.perf_counter() - started
        model.eval()
        val_metrics = _validate(model, val_loader, device, seed=cfg.train.seed)
        metrics = {**_prefix(train_metrics, "train_"), **_prefix(val_metrics, "val_"),
                   "epoch": epoch, "epoch_seconds": seconds,
                   "images_per_second": len(train_set) / seconds}
        # Every rank sees the same all-reduced val_loss, so every rank takes the same decision.
        best_val, stale = (metrics["val_loss"], 0) if metrics["val_loss"] < best_val else (best_val, stale + 1)
        stop = cfg.train.patience is not None and stale >= cfg.train.patience
        last = stop or epoch == cfg.train.epochs - 1
        # NOTE: an epoch re-run after a restart keeps the metrics its lost attempt logged: MLflow
        # cannot replace a point, and a second point at the same step would duplicate the epoch.
        if tracker and epoch > logged:
            _log_epoch(tracker, run_id, model, cfg, metrics, samples=_due(epoch, cfg.train.sample_every, last))
            if stop:
                tracker.set_tags(run_id, {"genlib.stopped_early_at_epoch": epoch})
        progress = {"epoch": epoch, "step": step, "best_val_loss": best_val, "stale_epochs": stale}
        _report(model, optimizers, metrics, progress, _due(epoch, cfg.train.checkpoint_every, last), cfg, rank)
        chaos.maybe_kill(loop_config.get("chaos"), epoch, rank)
        if stop:
            break


def _restore(model: GenerativeModel) -> tuple[dict[str, Any], dict | None]:
    """Load the checkpoint Ray hands back after a failure or a relaunch, if any.

    Returns the progress to continue from (epoch −1 for a fresh start) and optimizer states."""
    fresh = {"epoch": -1, "step": 0, "best_val_loss": float("inf"), "stale_epochs": 0}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return fresh, None
    with checkpoint.as_directory() as ckpt_dir:
        state, weights, optimizer_states = read_checkpoint(ckpt_dir)
    model.load_state_dict(weights)
    return {key: state.get(key, default) for key, default in fresh.items()}, optimizer_states


def _log_epoch(tracker: Tracker, run_id: str, model: GenerativeModel, cfg: Config,
               metrics: dict[str, float], samples: bool) -> None:
    # The real stdout: Ray Train patches print() into its logger, which echoes it twice.
    sys.__stdout__.write(_progress_line(cfg, metrics) + "\n")
    sys.__stdout__.flush()
    tracker.log_metrics(run_id, {k: v for k, v in metrics.items() if k != "epoch"}, step=int(metrics["epoch"]))
    if samples:
        _log_samples(tracker, run_id, model, cfg, int(metrics["epoch"]))


def _quiet_report_logs() -> None:
    """Drop Ray Train's INFO line per report per worker (a full metrics dict each); warnings and
    errors still show, and rank 0 prints one progress line per epoch instead."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:  # NOTE: Ray 2.60 logs reports on a logger named by the module's file path, not its name.
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass


def _train_epoch(model: GenerativeModel, loader, optimizers, step: int, device, chaos_plan: dict | None = None,
                 precision: str = "fp32"):
    """One pass over this rank's shard: (metrics averaged over all ranks, next step, first step
    with a non-finite training metric on any rank or None).

    NOTE: a rank that meets a NaN keeps stepping to the end of the epoch rather than raising: the
    other ranks would otherwise wait forever in DDP's next all-reduce. The epoch is thrown away."""
    sums: dict[str, float] = defaultdict(float)
    count, bad_step = 0, None
    # bf16 keeps fp32's exponent range, so no loss scaling is needed (unlike fp16).
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    for item in loader:
        batch = Batch.from_loader(item).to(device)
        chaos.maybe_poison(chaos_plan, model, step)
        with autocast:
            out = model.training_step(batch, optimizers, step)
        if bad_step is None and not all(map(_finite, out.values())):
            bad_step = step
        for key, value in out.items():
            sums[key] += value * len(batch.x)
        count += len(batch.x)
        step += 1
    return _global_mean(sums, count, device), step, _first_bad_step(bad_step, device)


def _first_bad_step(bad_step: int | None, device) -> int | None:
    """The smallest non-finite step over all ranks."""
    if not (dist.is_available() and dist.is_initialized()):
        return bad_step
    none = torch.iinfo(torch.int64).max
    first = torch.tensor([none if bad_step is None else bad_step], dtype=torch.int64, device=device)
    dist.all_reduce(first, op=dist.ReduceOp.MIN)
    return None if first.item() == none else int(first.item())


@torch.no_grad()
def _validate(model: GenerativeModel, loader, device, seed: int) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    count = 0
    # Fixed randomness: stochastic bounds (one-sample ELBO) are comparable across epochs.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for item in loader:
            batch = Batch.from_loader(item).to(device)
            for key, value in model.validation_step(batch).items():
                sums[key] += value * len(batch.x)
            count += len(batch.x)
    return _global_mean(sums, count, device)


def _global_mean(sums: dict[str, float], count: int, device) -> dict[str, float]:
    """Mean over every worker's samples (each worker holds a disjoint shard)."""
    keys = sorted(sums)
    if dist.is_available() and dist.is_initialized():
        totals = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        values, count = totals[:-1].tolist(), totals[-1].item()
    else:
        values = [sums[k] for k in keys]
    return {k: v / max(count, 1) for k, v in zip(keys, values)}


def _report(model, optimizers, metrics, progress: dict[str, Any], with_checkpoint: bool, cfg: Config,
            rank: int) -> None:
    if not with_checkpoint:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            path = save_checkpoint(Path(tmp) / "checkpoint", model, optimizers, metrics=metrics,
                                   config=cfg.to_dict(), **progress)
            checkpoint = ray.train.Checkpoint.from_directory(str(path))
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch_{progress['epoch']:05d}")


def _log_samples(tracker: Tracker, run_id: str, model: GenerativeModel, cfg: Config, epoch: int) -> None:
    generator = torch.Generator().manual_seed(cfg.train.seed)
    images = model.sample(cfg.eval.n_samples, generator=generator)
    tracker.log_image(run_id, image_grid(images, model.levels), f"samples/epoch_{epoch:04d}.png")


def _progress_line(cfg: Config, metrics: dict[str, float]) -> str:
    keys = ["train_loss", "val_loss", *(k for k in metrics if k.startswith("val_") and k.endswith("bpd"))]
    shown = " ".join(f"{k} {metrics[k]:.4g}" for k in keys if k in metrics)
    return (f"[{cfg.model.label}] epoch {int(metrics['epoch']) + 1}/{cfg.train.epochs}  {shown}  "
            f"({metrics['images_per_second']:.0f} img/s)")


def _due(epoch: int, every: int, last: bool) -> bool:
    return (epoch + 1) % max(every, 1) == 0 or last


def _prefix(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {prefix + k: v for k, v in metrics.items()}


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")

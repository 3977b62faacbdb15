"""The per-worker training loop. It never asks which family it is training.

Each Ray Train worker builds the model from the config, restores the latest checkpoint if Ray
hands one back (after a failure or a relaunch), wraps the model for DDP, and for every epoch:
trains on its shard of the train split, scores its shard of the validation split, combines both
across workers, tells its hooks (rank 0: the train stage's, which record to MLflow; ``hooks.py``)
and reports to Ray Train, with a checkpoint every ``checkpoint_every`` epochs. Fault injection
for recovery tests (``chaos.py``) sits behind ``Faults``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Subset

from genlib.config import Config
from genlib.data.dataset import DatasetVersion
from genlib.data.sampling import WeightedDistributedSampler
from genlib.models import GenerativeModel, build_model_for
from genlib.models.base import Batch, TrainingContext
from genlib.models.io import load_optimizer_states, read_checkpoint, read_sampling_weights, save_checkpoint
from genlib.presets import config_from_dict
from genlib.train.adaptive import PREFIX as REWEIGHT_PREFIX
from genlib.train.adaptive import due as reweight_due
from genlib.train.adaptive import recompute_weights
from genlib.train.chaos import Faults
from genlib.train.hooks import TrainHooks


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint, so a resumed run continues exactly.

    Epochs are numbered from 1, as people count them (progress lines, MLflow steps, tags)."""
    epoch: int = 0  # the last finished epoch (0: none yet)
    step: int = 0  # optimizer steps taken
    images_seen: int = 0  # training images drawn so far, over all ranks together
    best_val_loss: float = float("inf")
    stale_epochs: int = 0  # epochs since val_loss last improved

    def end_epoch(self, epoch: int, val_loss: float, patience: int | None) -> bool:
        """Record finished epoch ``epoch``; True when early stopping says stop (the same on every rank:
        val_loss is all-reduced)."""
        self.epoch = epoch
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.stale_epochs = val_loss, 0
        else:
            self.stale_epochs += 1
        return patience is not None and self.stale_epochs >= patience


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    _quiet_report_logs()
    cfg = config_from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    check_node_sees(loop_config["dataset"], loop_config.get("storage_marker"))
    version = DatasetVersion(loop_config["dataset"])
    hooks: TrainHooks = loop_config["hooks"] if rank == 0 else TrainHooks()
    faults = Faults(loop_config.get("chaos"), rank)

    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_model_for(cfg.model, version)
    progress, optimizer_states, sampling_weights = _restore(model)
    hooks.resumed(progress.epoch)
    # Moves to the device; DDP when world > 1 and there are gradients to synchronise.
    strategy = "ddp" if model.trainable else None
    model.bind_runner(ray.train.torch.prepare_model(model, parallel_strategy=strategy,
                                                    parallel_strategy_kwargs=model.ddp_options or None))
    optimizers = model.configure_optimizers(cfg.train)
    if optimizer_states is not None:
        load_optimizer_states(optimizers, optimizer_states)
    every = cfg.train.reweight_every
    weights = loop_config.get("weights")
    if every is not None:  # adaptive: weighted from the start, from the weights in use when the checkpoint was taken
        n = version.manifest["splits"]["train"]
        weights = sampling_weights if sampling_weights is not None else (
            weights if weights is not None else np.full(n, 1.0 / n))
    train_loader, val_loader = _loaders(cfg, version, rank, world, weights, pin_memory=device.type == "cuda")

    for epoch in range(progress.epoch + 1, cfg.train.epochs + 1):
        reweighted = {}
        if reweight_due(epoch, every):  # from the model as it is now, on every rank alike
            weights, stats = recompute_weights(model, cfg, version, rank, world)
            train_loader.sampler.set_weights(weights)
            reweighted = _prefix(stats, REWEIGHT_PREFIX)
        train_loader.sampler.set_epoch(epoch - 1)
        seed_epoch(cfg.train.seed, rank, epoch)
        started = time.perf_counter()
        model.train()
        context = TrainingContext(progress.step, progress.images_seen, world, epoch)
        train_metrics, context, bad_step = _train_epoch(model, train_loader, optimizers, context, device, faults,
                                                        cfg.train.precision)
        progress.step, progress.images_seen = context.step, context.images_seen
        if bad_step is not None:  # every rank knows (all-reduced): stop together, no checkpoint of NaNs
            hooks.nonfinite(bad_step)
            return {"nonfinite_step": bad_step, "epoch": epoch, "train_metrics": train_metrics}  # to the driver
        model.on_epoch_end()
        seconds = time.perf_counter() - started
        model.eval()
        val_metrics = _validate(model, val_loader, device, seed=cfg.train.seed)
        metrics = {**_prefix(train_metrics, "train_"), **_prefix(val_metrics, "val_"), **reweighted,
                   "epoch": epoch, "epoch_seconds": seconds,
                   "images_per_second": len(train_loader.dataset) / seconds}
        stop = progress.end_epoch(epoch, metrics["val_loss"], cfg.train.patience)
        last = stop or epoch == cfg.train.epochs
        hooks.epoch_end(model, cfg, metrics, samples=_due(epoch, cfg.train.sample_every, last), stopped_early=stop)
        _report(model, optimizers, metrics, progress, _due(epoch, cfg.train.checkpoint_every, last), cfg, rank,
                train_loader.sampler.weights.numpy() if every is not None else None)
        faults.after_epoch(epoch)
        if stop:
            break


def seed_epoch(seed: int, rank: int, epoch: int) -> None:
    """Seed this rank's noise for ``epoch`` (a stream of its own per seed, rank and epoch), so that
    an epoch draws the same noise whether the run got there without a stop or resumed before it."""
    torch.manual_seed(int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1, np.uint64)[0] >> 1))


def check_node_sees(dataset: str, storage_marker: str | None) -> None:
    """Every worker, on whichever node it was placed (nodes an autoscaler adds included), must see
    the prepared dataset and the checkpoint storage: the driver's check (``launch.check_cluster_storage``)
    can only ask the nodes alive when a job starts."""
    missing = [path for path in (str(Path(dataset) / "manifest.json"), storage_marker)
               if path and not os.path.exists(path)]
    if missing:
        raise FileNotFoundError(
            f"Ray node {ray.util.get_node_ip_address()} cannot see {missing}: put GENLIB_HOME (the prepared "
            f"datasets) and train.storage_path on storage every node of the cluster mounts at the same path")


def _loaders(cfg: Config, version: DatasetVersion, rank: int, world: int, weights,
             pin_memory: bool = False) -> tuple[DataLoader, DataLoader]:
    """This rank's shard of the train split (weighted or shuffled, reseeded per epoch) and of the val split.
    ``pin_memory`` (on CUDA): batches in page-locked memory, so ``Batch.to`` copies them asynchronously."""
    train_set = version.dataset("train")
    if weights is not None:  # one weighted draw per epoch, split across the ranks
        sampler = WeightedDistributedSampler(weights, world, rank, seed=cfg.train.seed, dataset_size=len(train_set))
    else:
        sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.train.seed)
    per_worker = max(1, cfg.train.batch_size // world)
    val_set = version.dataset("val")
    return (DataLoader(train_set, batch_size=per_worker, sampler=sampler, pin_memory=pin_memory),
            DataLoader(Subset(val_set, range(rank, len(val_set), world)), batch_size=per_worker,
                       pin_memory=pin_memory))


LATEST = "genlib_latest_checkpoint.json"  # in the Ray run's folder: the last checkpoint rank 0 reported


def _restore(model: GenerativeModel) -> tuple[Progress, dict | None, np.ndarray | None]:
    """Load the latest checkpoint of this Ray run, if any: the one Ray hands back after a failure
    or a relaunch, or a later one rank 0 reported that Ray had not recorded yet.

    NOTE: Ray Train's controller records a reported checkpoint (its run snapshot) only when it
    next polls the workers, up to ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` later; a driver stopped in
    between (Ctrl-C right after an epoch) would resume from an older checkpoint or from scratch.
    Rank 0 therefore notes each checkpoint as soon as ``report`` returns (``_note_latest``).

    Returns the progress to continue from (epoch 0 for a fresh start), optimizer states and the
    sampling weights in use (adaptive reweighting; else None)."""
    checkpoint = _latest(ray.train.get_checkpoint(), _noted())
    if checkpoint is None:
        return Progress(), None, None
    with checkpoint.as_directory() as ckpt_dir:
        return resume_from(ckpt_dir, model)


def resume_from(ckpt_dir: str | Path, model: GenerativeModel) -> tuple[Progress, dict, np.ndarray | None]:
    """Load a checkpoint ``write_checkpoint`` wrote into ``model``: (progress, optimizer states,
    sampling weights or None)."""
    state, weights, optimizer_states = read_checkpoint(ckpt_dir)
    sampling_weights = read_sampling_weights(ckpt_dir)
    model.load_state_dict(weights)
    fresh = asdict(Progress())
    progress = Progress(**{key: state.get(key, default) for key, default in fresh.items()})
    if "epochs_from" not in state:  # NOTE: checkpoints written before epochs counted from 1
        progress.epoch += 1
    return progress, optimizer_states, sampling_weights


def write_checkpoint(path: Path, model: GenerativeModel, optimizers, progress: Progress, cfg: Config,
                     metrics: dict[str, Any], sampling_weights: np.ndarray | None = None) -> Path:
    """Everything ``resume_from`` needs to continue exactly after ``progress.epoch``."""
    return save_checkpoint(path, model, optimizers, sampling_weights, metrics=metrics, config=cfg.to_dict(),
                           epochs_from=1, **asdict(progress))


def _quiet_report_logs() -> None:
    """Drop Ray Train's INFO line per report per worker (a full metrics dict each); warnings and
    errors still show, and rank 0 prints one progress line per epoch instead."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:  # NOTE: Ray 2.60 logs reports on a logger named by the module's file path, not its name.
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass


def _train_epoch(model: GenerativeModel, loader, optimizers, context: TrainingContext, device,
                 faults: Faults | None = None, precision: str = "fp32"):
    """One pass over this rank's shard, starting from ``context``: (metrics averaged over all ranks,
    the context after the epoch, first step with a non-finite training metric on any rank or None).

    NOTE: a rank that meets a NaN keeps stepping to the end of the epoch rather than raising: the
    other ranks would otherwise wait forever in DDP's next all-reduce. The epoch is thrown away."""
    sums: dict[str, float] = defaultdict(float)
    count, bad_step = 0, None
    # bf16 keeps fp32's exponent range, so no loss scaling is needed (unlike fp16).
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    for item in loader:
        batch = Batch.from_loader(item).to(device)
        if faults:
            faults.before_step(model, context.step)
        with autocast:
            out = model.training_step(batch, optimizers, context)
        if bad_step is None and not all(map(_finite, out.values())):
            bad_step = context.step
        for key, value in out.items():
            sums[key] += value * len(batch.x)
        count += len(batch.x)
        context = context.after(len(batch.x))
    return _global_mean(sums, count, device), context, _first_bad_step(bad_step, device)


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
    # Fixed randomness: stochastic bounds (one-sample ELBO) are comparable across epochs. The device's
    # generator is forked too: manual_seed reseeds CUDA, which must not replay training noise each epoch.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
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


def _report(model, optimizers, metrics, progress: Progress, with_checkpoint: bool, cfg: Config, rank: int,
            sampling_weights: np.ndarray | None = None) -> None:
    """Report the epoch to Ray Train, with a checkpoint (written by rank 0) when one is due."""
    if not with_checkpoint:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            path = write_checkpoint(Path(tmp) / "checkpoint", model, optimizers, progress, cfg, metrics,
                                    sampling_weights)
            checkpoint = ray.train.Checkpoint.from_directory(str(path))
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch_{progress.epoch:05d}")
        if rank == 0:
            _note_latest(ray.train.get_checkpoint(), progress.epoch)


def _note_latest(checkpoint, epoch: int) -> None:
    """Record the checkpoint just reported (persisted by then) in the run's folder, atomically."""
    storage = ray.train.get_context().get_storage()
    fs, folder = storage.storage_filesystem, storage.experiment_fs_path
    tmp = f"{folder}/.{LATEST}.{os.getpid()}"
    with fs.open_output_stream(tmp) as out:
        out.write(json.dumps({"path": checkpoint.path, "epoch": epoch}).encode())
    fs.move(tmp, f"{folder}/{LATEST}")


def _noted():
    """(checkpoint, epoch) noted by ``_note_latest`` in this run's folder, if it still exists."""
    import pyarrow.fs

    storage = ray.train.get_context().get_storage()
    fs = storage.storage_filesystem
    try:
        with fs.open_input_stream(f"{storage.experiment_fs_path}/{LATEST}") as f:
            noted = json.loads(f.read())
    except (FileNotFoundError, OSError):
        return None
    if fs.get_file_info(noted["path"]).type != pyarrow.fs.FileType.Directory:
        return None  # Ray deleted it (checkpoint retention); Ray's own record is newer then
    return ray.train.Checkpoint(noted["path"], filesystem=fs), int(noted["epoch"])


def _latest(checkpoint, noted):
    """The later of Ray's checkpoint and the noted one (checkpoint folders are named epoch_NNNNN)."""
    if noted is None:
        return checkpoint
    if checkpoint is None:
        return noted[0]
    name = Path(checkpoint.path).name
    epoch = int(name.removeprefix("epoch_")) if name.startswith("epoch_") else -1
    return noted[0] if noted[1] > epoch else checkpoint


def _due(epoch: int, every: int, last: bool) -> bool:
    return epoch % every == 0 or last


def _prefix(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {prefix + k: v for k, v in metrics.items()}


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")

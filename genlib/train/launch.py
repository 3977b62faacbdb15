"""Driver side of training: start (or join) Ray, run the TorchTrainer, pick the checkpoint.

Scaling, failure handling and checkpoint retention are Ray Train's (``ScalingConfig``,
``FailureConfig``, ``CheckpointConfig``); this module only translates genlib's config into them,
names the logical job (``job_key``, ``job_lane``) so a relaunched driver resumes it, and picks the
checkpoint to evaluate (best validation loss, or the last one). The train stage
(``genlib/stages/train.py``) calls it and records the run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from genlib import paths
from genlib.config import Config
from genlib.data.dataset import DatasetVersion
from genlib.train import chaos
from genlib.train.hooks import TrainHooks

log = logging.getLogger(__name__)


def ensure_ray(address: str | None = None) -> None:
    """Join ``address`` / ``$RAY_ADDRESS`` if set, else start Ray on this machine."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address)
    else:
        ray.init(logging_level=logging.WARNING)


@contextlib.contextmanager
def job_lane(job: str):
    """Hold the lowest free lane of ``job`` (an exclusive lock file under GENLIB_HOME) while training.

    A driver that dies releases its lock with its process, so a relaunch takes the same lane and
    resumes; a second driver running the same job meanwhile finds lane 0 held and takes lane 1.
    NOTE: the locks are this machine's: drivers of one job on two machines are not told apart."""
    locks = paths.home() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    for lane in range(1000):
        handle = open(locks / f"{job}-{lane}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield lane
        finally:
            handle.close()  # releases the lock
        return
    raise RuntimeError(f"1000 drivers are running job {job} at once")


def job_key(cfg: Config, version: DatasetVersion) -> str:
    """What makes two trainings the same logical job: the dataset version and every config section
    except tracking (where results are recorded does not change them)."""
    config = {k: v for k, v in cfg.to_dict().items() if k != "tracking"}
    payload = json.dumps({"dataset": version.content_hash, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def fit(cfg: Config, dataset: Path, hooks: TrainHooks, name: str, weights=None):
    """Run the Ray TorchTrainer; returns Ray's ``Result``. ``hooks``: what rank 0 tells the outside
    world (``loop.TrainHooks``); ``name``: the Ray run name (a run of that name in storage is
    resumed from its last checkpoint); ``weights``: per-sample sampling weights of the train
    split, or None for uniform sampling."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from genlib.train.loop import train_loop_per_worker

    # Ray Train's controller collects each report on a health-check tick (2 s by default) and a
    # worker's next report waits for the previous one to be collected, so short epochs would each
    # stall for up to 2 s. A faster tick costs a few small actor calls; a user's setting wins.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    ensure_ray()
    storage = cfg.train.storage_path or str(paths.ray_results())
    use_gpu = cfg.train.gpus_per_worker > 0
    resources = {"CPU": cfg.train.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = cfg.train.gpus_per_worker
    score = {"checkpoint_score_attribute": "val_loss", "checkpoint_score_order": "min"} \
        if cfg.train.select_by == "val_loss" else {}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "dataset": str(Path(dataset).resolve()),
                           "hooks": hooks,
                           "weights": None if weights is None else [float(w) for w in weights],
                           "chaos": chaos.plan(Path(_local(storage)) / name)},
        scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=storage,
                             failure_config=FailureConfig(max_failures=cfg.train.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2, **score)),
    )
    return trainer.fit()


def check_finite(result, cfg: Config) -> None:
    """Raise if training stopped on a non-finite loss, naming the step and the last good checkpoint."""
    stopped = result.return_value or {}
    if "nonfinite_step" not in stopped:
        return
    good = result.checkpoint.path if result.checkpoint else "none (it diverged before the first checkpoint)"
    raise FloatingPointError(
        f"training {cfg.model.label} stopped: a non-finite training loss at optimizer step {stopped['nonfinite_step']} "
        f"(epoch {stopped['epoch']}; epoch means {stopped['train_metrics']}). Last good checkpoint: {good}. "
        f"Lower train.lr, or check the data and the model config.")


def check_cluster_storage(storage_path: str | None, dataset: Path) -> None:
    """On a Ray cluster of several nodes, every node must reach the checkpoints and the dataset.

    ``train.storage_path`` must then be set; a path (not a URI, which the storage library checks)
    and the dataset version are checked from a task on every node, which looks for a marker file
    the driver just wrote and for the dataset's manifest."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2:
        return
    if not storage_path:
        raise ValueError(f"this Ray cluster has {len(nodes)} nodes: set train.storage_path to storage every node "
                         f"can reach (a shared filesystem path or a URI such as s3://bucket/genlib)")
    wanted = [str(Path(dataset).resolve() / "manifest.json")]
    if "://" not in storage_path:
        marker = Path(storage_path) / f".genlib-visible-{os.getpid()}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        wanted.append(str(marker))
    try:
        visible = ray.remote(num_cpus=0)(lambda files: [os.path.exists(f) for f in files])
        seen = ray.get([visible.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                        .remote(wanted) for node in nodes])
    finally:
        if "://" not in storage_path:
            marker.unlink(missing_ok=True)
    missing = {node[:8]: [f for f, ok in zip(wanted, found) if not ok] for node, found in zip(nodes, seen)
               if not all(found)}
    if missing:
        raise ValueError(f"Ray nodes {sorted(missing)} cannot see {missing}; put train.storage_path and "
                         f"GENLIB_HOME (the prepared datasets) on storage shared by every node")


def select_checkpoint(result, select_by: str):
    """The checkpoint to evaluate, with the metrics it was reported with."""
    if select_by == "last" or not result.best_checkpoints:
        return result.checkpoint, result.metrics
    return min(result.best_checkpoints, key=lambda pair: pair[1]["val_loss"])


def download(checkpoint, dst: Path) -> None:
    """A local copy of a Ray checkpoint at ``dst`` (replacing what is there)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.to_directory(str(dst))


def _local(storage: str) -> str:
    # The chaos marker needs a plain path; URIs (s3://...) fall back to GENLIB_HOME.
    return storage if "://" not in storage else str(paths.home() / "chaos")

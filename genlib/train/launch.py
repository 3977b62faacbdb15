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
import signal
import socket
import sys
import threading
from pathlib import Path

from genlib import paths
from genlib.config import Config, TrainConfig
from genlib.data.dataset import DatasetVersion
from genlib.io import atomic_dir
from genlib.train import chaos
from genlib.train.hooks import TrainHooks

log = logging.getLogger(__name__)

DASHBOARD_ENV = "GENLIB_RAY_DASHBOARD"  # "1": genlib's own local Ray instance starts its dashboard too
START_ATTEMPTS = 5  # worker-group starts tried before a run fails (each waits RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S)


_STARTED: str | None = None  # the address of the local Ray instance this process started


def ensure_ray() -> None:
    """Join the Ray cluster ``$RAY_ADDRESS`` names (``--ray-address`` sets it), saying so; without
    one, start a Ray instance of this process's own — never join one it did not start.

    NOTE: a bare ``ray.init()`` joins the latest instance ``ray start`` made on this machine, and
    with several instances running, Ray's state API (which Ray Train's placement-group cleaner
    calls without an address) fails with "Found multiple active Ray instances". So the own
    instance gets a free GCS port chosen here and ``RAY_ADDRESS`` names it before it starts: every
    Ray process of it inherits the address it belongs to.

    NOTE: the own instance starts without Ray's dashboard unless ``GENLIB_RAY_DASHBOARD=1``: it
    lives only as long as the command, and on this project's 2-core machine the dashboard made
    ``ray.init`` 1.6–2.4 s slower and kept 1–2 % more of the machine busy while idle (4.2–4.8 % with
    it, 2.1–2.9 % without, 2026-12-03; ``bench/ray_idle.py``); the test suite ran ~10 % faster
    without it. A cluster's dashboard is the cluster's business."""
    global _STARTED
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address and address != _STARTED:
        print(f"genlib: joining the Ray cluster at {address} (RAY_ADDRESS / --ray-address)", file=sys.stderr,
              flush=True)
        ray.init(address=address, logging_level=logging.WARNING)
        return
    port = _free_port()
    dashboard = dashboard_wanted()
    _STARTED = os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    previous = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    try:
        ray.init(address="local", logging_level=logging.WARNING, include_dashboard=dashboard)
    finally:
        if previous is None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = previous
    print(f"genlib: started a local Ray instance at {_STARTED} (set RAY_ADDRESS or --ray-address to join a "
          f"cluster instead; its dashboard is {'on' if dashboard else f'off, {DASHBOARD_ENV}=1 turns it on'})",
          file=sys.stderr, flush=True)


def dashboard_wanted() -> bool:
    """Whether genlib's own local Ray instance starts its dashboard: ``GENLIB_RAY_DASHBOARD`` is "1"
    (yes), "0" or unset (no); anything else is refused before Ray starts."""
    value = os.environ.get(DASHBOARD_ENV, "0").strip()
    if value not in ("0", "1"):
        raise ValueError(f"{DASHBOARD_ENV}={value!r}: expected 1 (start Ray's dashboard with genlib's own "
                         f"local Ray instance) or 0 / unset (no dashboard)")
    return value == "1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_resources(train: TrainConfig) -> dict[str, float]:
    """What Ray reserves for each training worker."""
    return {"CPU": train.cpus_per_worker, **({"GPU": train.gpus_per_worker} if train.gpus_per_worker > 0 else {})}


def check_resources(train: TrainConfig) -> None:
    """Refuse a worker group the cluster can never place, before any run opens: Ray Train would
    otherwise retry its start forever ("No available node types can fulfill resource request")."""
    check_placement(train.num_workers, worker_resources(train), "train.num_workers",
                    "train.num_workers, train.cpus_per_worker or train.gpus_per_worker")


def check_placement(count: int, need: dict[str, float], key: str, knobs: str) -> None:
    """Refuse ``count`` workers of ``need`` each (``key``: the setting that asked for them; ``knobs``:
    the settings that lower the demand) that the cluster can never place.

    Checked against the totals of the Ray cluster this process is connected to, or, before Ray
    starts, of this machine (what genlib's own local instance will have). Not checked for a
    cluster with an autoscaler, whose nodes come later: there Ray's own check applies."""
    import ray

    if ray.is_initialized():
        if _autoscaling():
            return
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        where = f"this Ray cluster ({len(nodes)} node{'s' * (len(nodes) != 1)})"
    elif os.environ.get("RAY_ADDRESS") and os.environ.get("RAY_ADDRESS") != _STARTED:
        return  # checked once joined
    else:
        nodes = [_machine_resources()]
        where = "this machine (genlib's local Ray instance)"
    fits = sum(min(int(node.get(k, 0) // value) for k, value in need.items()) for node in nodes)
    if fits >= count:
        return
    have = ", ".join(f"{sum(node.get(k, 0) for node in nodes):g} {k}" for k in ("CPU", "GPU"))
    biggest = {k: max(node.get(k, 0) for node in nodes) for k in need}
    raise ValueError(
        f"{key}={count} workers of {_describe(need)} each cannot be placed on {where}: "
        f"it has {have} in all, at most {_describe(biggest)} on one node, room for {fits} such worker(s). "
        f"Lower {knobs}, or join a larger cluster (--ray-address).")


def _describe(resources: dict[str, float]) -> str:
    return " + ".join(f"{value:g} {key}" for key, value in resources.items())


def _machine_resources() -> dict[str, float]:
    import torch
    from ray._private.utils import get_num_cpus

    return {"CPU": float(get_num_cpus()), "GPU": float(torch.cuda.device_count())}


def _autoscaling() -> bool:
    """Whether the connected cluster has an autoscaler (Ray's own feasibility check then runs)."""
    try:
        from ray._private.state import state

        return state.get_cluster_config() is not None
    except Exception:  # noqa: BLE001 - a private API: assume a fixed cluster
        return False


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
    from ray.train import CheckpointConfig, ControllerError, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    from genlib.train.loop import train_loop_per_worker

    # Ray Train's controller collects each report on a health-check tick (2 s by default) and a
    # worker's next report waits for the previous one to be collected, so short epochs would each
    # stall for up to 2 s. A faster tick costs a few small actor calls; a user's setting wins.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    ensure_ray()
    storage = cfg.train.storage_path or str(paths.ray_results())
    use_gpu = cfg.train.gpus_per_worker > 0
    resources = worker_resources(cfg.train)
    score = {"checkpoint_score_attribute": "val_loss", "checkpoint_score_order": "min"} \
        if cfg.train.select_by == "val_loss" else {}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "dataset": str(Path(dataset).resolve()),
                           "storage_marker": _storage_marker(storage),
                           "hooks": hooks,
                           "weights": None if weights is None else [float(w) for w in weights],
                           "chaos": chaos.plan(Path(_local(storage)) / name)},
        scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=storage,
                             # A worker group that cannot start within RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S
                             # (60 s) is tried again — other jobs' workers may be finishing — up to
                             # START_ATTEMPTS times in all, then the run fails (Ray's default: forever).
                             failure_config=FailureConfig(max_failures=cfg.train.max_failures,
                                                          controller_failure_limit=START_ATTEMPTS - 1),
                             checkpoint_config=CheckpointConfig(num_to_keep=2, **score)),
    )
    interrupt = signal.getsignal(signal.SIGINT)
    try:
        return trainer.fit()
    except ControllerError as err:
        if isinstance(err.controller_failure, WorkerGroupStartupTimeoutError):
            raise RuntimeError(
                f"Ray could not start {cfg.train.num_workers} training worker(s) of {_describe(resources)} each in "
                f"{START_ATTEMPTS} attempts: the cluster is busy or lacks what they ask for "
                f"({err.controller_failure})") from err
        raise
    finally:
        # NOTE: Ray Train's fit() installs a SIGINT handler (abort the controller) and leaves it
        # installed, swallowing every later Ctrl-C of the process.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, interrupt)


def _storage_marker(storage: str) -> str | None:
    """A file in checkpoint storage that every worker must see (``loop.check_node_sees``); None
    for a URI (s3://…), which the storage library reaches from anywhere or fails on itself."""
    if "://" in storage:
        return None
    marker = Path(storage) / ".genlib-storage"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return str(marker.resolve())


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
    the driver just wrote and for the dataset's manifest. This sees the nodes alive now; nodes an
    autoscaler adds later are checked by each worker as it starts (``loop.check_node_sees``)."""
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
    """A local copy of a Ray checkpoint at ``dst`` (replacing what is there), written atomically:
    an interrupted copy leaves nothing at ``dst``."""
    with atomic_dir(dst, overwrite=True) as tmp:
        checkpoint.to_directory(str(tmp))


def _local(storage: str) -> str:
    # The chaos marker needs a plain path; URIs (s3://...) fall back to GENLIB_HOME.
    return storage if "://" not in storage else str(paths.home() / "chaos")

"""Everything genlib says to MLflow goes through here, and the schema of what it records.

Layout of what is recorded: one experiment per dataset source (``experiment_name``), one parent
run per pipeline, and a nested run per stage or family (train-vae, evaluate-vae, ...). Runs
carry the tags of ``Tag`` (git sha, genlib version, dataset hash, ...), and their artifacts sit
at the paths named here (``CHECKPOINT``, ``REPORT``, ``FIGURES``, ``TABLES``). ``HEADLINES`` is the
one table of headline metrics (name, direction, label, who has it) that the pipeline summary,
the HTML report, ``genlib runs`` and the registry's "best model" rule all read.

The default store is SQLite plus an artifact folder under ``GENLIB_HOME``; pointing
``MLFLOW_TRACKING_URI`` (or ``tracking.tracking_uri``) at a server changes nothing else. Only the
stages (``genlib/stages``) open, end or fail runs; everything else reads, or logs by run id.

Clients are explicit (``MlflowClient``) rather than MLflow's global "active run", so that the
driver, Prefect tasks and Ray workers can all log to a run by its id.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from genlib import __version__, paths

_PARAM_LIMIT = 6000  # MLflow rejects longer param values
_BATCH = 100


# -- the record schema ----------------------------------------------------------------------------


def experiment_name(cfg) -> str:
    """The experiment a config's runs go to: ``tracking.experiment``, else ``genlib-<source>``."""
    return cfg.tracking.experiment or f"genlib-{cfg.data.source}"


class Tag:
    """Tag keys of genlib's runs and model versions."""
    STAGE = "genlib.stage"  # one of Stage
    FAMILY = "genlib.family"
    MODEL = "genlib.model"  # the model's label (family, or its `name` in a pipeline)
    PRESET = "genlib.preset"
    DATASET = "genlib.dataset"  # <source>-<hash12>
    DATASET_HASH = "genlib.dataset_hash"
    VERSION = "genlib.version"
    GIT_SHA = "genlib.git_sha"
    PARENT = "mlflow.parentRunId"
    # training
    JOB_KEY = "genlib.job_key"  # dataset hash + config: one logical job
    JOB_LANE = "genlib.job_lane"  # which of the identical jobs running at once
    RAY_RUN_NAME = "genlib.ray_run_name"
    DRIVER_RELAUNCHED = "genlib.driver_relaunched"
    RESUMED_FROM_EPOCH = "genlib.resumed_from_epoch"
    STOPPED_EARLY_AT_EPOCH = "genlib.stopped_early_at_epoch"
    NONFINITE_STEP = "genlib.nonfinite_step"
    SELECTED_EPOCH = "genlib.selected_epoch"
    SELECTED_BY = "genlib.selected_by"
    CHECKPOINT = "genlib.checkpoint"  # local path of the selected checkpoint
    WEIGHTS_KEY = "genlib.weights_key"  # the sampling weights it trained with
    VAE_RUN = "genlib.vae_run_id"  # the VAE run the weights came from
    # evaluation
    TRAIN_RUN = "genlib.train_run_id"  # the training run an evaluation scored
    EXTRACTOR = "genlib.extractor_sha256"  # the feature network's weights: equal digests, comparable numbers
    EXTRACTOR_LOGGED = "genlib.extractor_logged"  # "true" on the run whose extractor/ artifacts hold that network
    # pipeline
    PREFECT_FLOW_RUN = "genlib.prefect_flow_run_id"
    # registered model versions
    METRIC = "genlib.metric"
    METRIC_VALUE = "genlib.metric_value"
    CONFIG = "genlib.config"


class Stage:
    """Values of ``Tag.STAGE``."""
    PIPELINE = "pipeline"
    TRAIN = "train"
    EVALUATE = "evaluate"
    REWEIGHT = "reweight"
    AUDIT = "audit"  # samples from any generator scored like an evaluation (genlib audit)


# Artifact paths. Writers and readers (the report, `genlib sample`, the registry) use these names.
CHECKPOINT = "checkpoint"  # a training run's selected checkpoint directory
REPORT = "report.html"
SUMMARY_JSON, SUMMARY_MD = "summary.json", "summary.md"  # a pipeline run's summary
SAMPLES = "samples/final.png"
INTERPOLATION = "samples/interpolation.png"
TRAVERSALS = "samples/traversals.png"
STYLE_MIXING = "samples/style_mixing.png"
TRUNCATION = "samples/truncation.png"
TRANSLATIONS = "samples/translations.png"  # a translator's test images: input | translation | truth, per direction
CLOSEST_PAIRS = "memorization/closest_pairs.png"
DURING_TRAINING = "memorization/during_training.png"  # the curve train.eval_every logs, drawn by the evaluation
WEIGHT_HISTOGRAM = "reweight/weight_histogram.png"
MOST_WEIGHTED = "reweight/most_weighted.png"
LEAST_WEIGHTED = "reweight/least_weighted.png"
PER_CLASS = "memorization/per_class.json"
PER_LABEL = "reweight/per_label.json"
TRUNCATION_CURVE = "samples/truncation_curve.json"


def directed_path(path: str, direction: str) -> str:
    """A translator's artifact for one direction: ``memorization/closest_pairs_a2b.png``."""
    stem, dot, suffix = path.rpartition(".")
    return f"{stem}_{direction}{dot}{suffix}"


# Figures and tables the report shows, in its order, with their captions.
FIGURES = {
    SAMPLES: "samples",
    INTERPOLATION: "latent interpolations (rows)",
    TRAVERSALS: "latent traversals (one dimension per row)",
    STYLE_MIXING: "style mixing: coarse styles (4×4 to 8×8) of the top row's latents, fine styles of the left "
                  "column's",
    TRUNCATION: "the truncation trick: the same latents (columns) at ψ = 1, 0.7, 0.5, 0.3 and 0 (rows; ψ = 0 is the "
                "mean style's image)",
    CLOSEST_PAIRS: "closest generated → train pairs in pixel space (generated left, train right; ordered by the "
                   "transform-robust score where it ran: a moved or mirrored copy sits beside its original)",
    TRANSLATIONS: "translations of test images, per direction: source (top), translation, and the true target where "
                  "it is known (bottom)",
    **{directed_path(CLOSEST_PAIRS, d): f"closest translation → target-domain train pairs ({d}), in pixel space"
       for d in ("a2b", "b2a")},
    DURING_TRAINING: "memorization during training (train.eval_every): copy rates and data-copying z per epoch",
    WEIGHT_HISTOGRAM: "sampling weights × N (1 = uniform)",
    MOST_WEIGHTED: "the most weighted training images (rarest latent regions)",
    LEAST_WEIGHTED: "the least weighted training images",
}
TABLES = {PER_CLASS: "per class (a sample's class: its nearest training image's, in feature space)",
          **{directed_path(PER_CLASS, d): f"per class of the translations ({d}; a translation's class: its nearest "
                                          f"target-domain training image's)" for d in ("a2b", "b2a")},
          TRUNCATION_CURVE: "the truncation curve: sample quality (FID, precision) against diversity (recall) as ψ "
                            "falls (ψ = 1: no truncation)",
          PER_LABEL: "weights per label (labels are reported here only; the weights never see them)"}


def epoch_samples(epoch: int) -> str:
    """Artifact path of the sample grid logged at ``epoch`` of a training run."""
    return f"samples/epoch_{epoch:04d}.png"


@dataclass(frozen=True)
class Headline:
    """One headline metric: how runs are compared at a glance."""
    column: str  # its column in `genlib runs` (and the name `--sort` takes)
    label: str  # what a person reads
    direction: str | None  # "min": lower is better; "max": higher is better; None: neither
    metrics: str  # regex of the run metrics it groups (one report column each)
    has: str  # which runs have it
    lead: str | None = None  # regex of the metrics the leaderboard and summary show; None: all of `metrics`
    bounds: bool = False  # the metrics bound one quantity: the leaderboard shows the tightest
    summary: bool = False  # a column of the pipeline summary
    ranks: bool = False  # the registry's best model: the first ranking headline a run has decides
    leaderboard: bool = True  # a column of `genlib runs`
    prefer: tuple[str, ...] = ()  # metrics the leaderboard shows first when a run has them, in this order

    def matching(self, keys: Iterable[str], lead: bool = False) -> list[str]:
        """The metric names among ``keys`` it groups (``lead``: those the leaderboard shows), sorted."""
        pattern = re.compile((self.lead or self.metrics) if lead else self.metrics)
        return sorted(k for k in keys if pattern.fullmatch(k))

    def pick(self, metrics: Mapping[str, float]) -> tuple[str, float] | None:
        """The one (metric, value) a leaderboard shows: the first ``prefer`` metric the run has, else the
        tightest bound, else the first by name."""
        preferred = [key for key in self.prefer if key in metrics]
        if preferred:
            return preferred[0], metrics[preferred[0]]
        found = self.matching(metrics, lead=True)
        if not found:
            return None
        key = min(found, key=metrics.__getitem__) if self.bounds else found[0]
        return key, metrics[key]


HEADLINES = (
    # Reconstruction bits/dim is not a likelihood: it has a column of its own and never ranks.
    Headline("bpd", "bits/dim", "min", r"(?!(.*_)?recon_bpd$).+_bpd",
             "families with a likelihood: exact, or the ELBO/IWAE bounds", bounds=True, summary=True, ranks=True),
    Headline("recon", "recon. bits/dim", "min", r"(.+_)?recon_bpd", "families with an encoder and decoder (VAE, AAE)",
             summary=True),
    Headline("fid", "FID", "min", r"fid_.+", "every family (its samples)", summary=True, ranks=True),
    Headline("kid", "KID", "min", r"kid_(?!.*_std$).+", "every family"),
    Headline("precision", "precision", "max", r"precision_.+", "every family"),
    # exp E KL(p(y|x) ‖ p(y)) with the domain network's classes (labelled data); the test split's own: the ceiling
    Headline("is", "IS analogue", "max", r"is_(?!.*_std$).+", "every family, with a classifier extractor",
             leaderboard=False),
    Headline("recall", "recall", "max", r"recall_.+", "every family"),
    Headline("latent_mmd", "latent MMD²", "min", r".+_latent_mmd", "latent-variable families: q(z) against the prior"),
    # about 1 for samples from the data's distribution: neither higher nor lower is "better"
    Headline("density", "density", None, r"density_.+", "every family", leaderboard=False),
    Headline("coverage", "coverage", "max", r"coverage_.+", "every family"),
    # The transform-robust rate (genlib/evaluate/copies.py) where a run has it, else the plain one.
    Headline("copy_rate_pixel", "copy rate", "min", r"copy_rate_.+", "every family", lead=r"copy_rate_pixel(_robust)?",
             summary=True, prefer=("copy_rate_pixel_robust",)),
    Headline("authenticity", "authenticity", "max", r"authenticity_.+", "every family", leaderboard=False),
    # Translators (genlib/evaluate/translate.py): against true targets, per direction; cycle error per domain;
    # the share of translations the target domain's classifier gives the source's class
    Headline("l1", "L1", "min", r"l1_(a2b|b2a)", "translators, where true targets exist", summary=True),
    Headline("psnr", "PSNR (dB)", "max", r"psnr_(a2b|b2a)", "translators, where true targets exist"),
    Headline("ssim", "SSIM", "max", r"ssim_(a2b|b2a)", "translators, where true targets exist"),
    Headline("cycle", "cycle L1", "min", r"cycle_l1_(a|b)", "translators both ways (CycleGAN)"),
    Headline("content", "content kept", "max", r"content_accuracy_.+", "translators on labelled data",
             summary=True),
    # ≪ 0 flags copying; > 0 is not "better"
    Headline("data_copying_z", "data-copying z", None, r"data_copying_z_.+", "every family", leaderboard=False),
)


def headline(column: str) -> Headline:
    for entry in HEADLINES:
        if entry.column == column:
            return entry
    raise ValueError(f"no headline metric {column!r}; known: {[h.column for h in HEADLINES]}")


def headline_metrics(keys: Iterable[str], summary: bool = False) -> list[tuple[str, str | None]]:
    """(metric, direction) of every headline metric among ``keys``, in column order; ``summary``:
    only the pipeline summary's."""
    keys = set(keys)
    return [(key, entry.direction) for entry in HEADLINES if entry.summary or not summary
            for key in entry.matching(keys, lead=summary)]


def headline_row(metrics: Mapping[str, float]) -> dict[str, float]:
    """The leaderboard's value of each headline column a run has."""
    picked = {entry.column: entry.pick(metrics) for entry in HEADLINES if entry.leaderboard}
    return {column: found[1] for column, found in picked.items() if found}


def ranking_metric(metrics: Mapping[str, float]) -> tuple[str, float] | None:
    """(metric, value) that ranks a run against others of its family: lowest bits/dim, else lowest FID."""
    return next((found for entry in HEADLINES if entry.ranks and (found := entry.pick(metrics))), None)


def param_text(value: Any) -> str:
    """A param value as MLflow stores it."""
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return text[:_PARAM_LIMIT]


# -- the store ------------------------------------------------------------------------------------


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.mlflow_db()}"


BUILD_INFO = Path(__file__).resolve().parent / "_build.json"  # written by image builds: {"git_sha": ...}


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    """The commit genlib's code came from: git's, else the one an image build recorded in
    ``genlib/_build.json`` (images and rsynced cluster nodes carry no ``.git``), else "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=BUILD_INFO.parent)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return str(json.loads(BUILD_INFO.read_text())["git_sha"]) or "unknown"
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


@functools.lru_cache(maxsize=8)
def code_digest(*packages: Path) -> str:
    """A digest of the Python source installed in ``packages`` (folders): it changes whenever the
    code does, with or without git — what cache keys hold, so results of other code are never reused."""
    digest = hashlib.sha256()
    for package in packages:
        for file in sorted(Path(package).rglob("*.py")):
            digest.update(str(file.relative_to(package.parent)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


class Tracker:
    """A handle on one MLflow tracking store. Cheap to build; pickles as its URI."""

    def __init__(self, uri: str | None = None):
        self.uri = uri or default_tracking_uri()

    def __getstate__(self):
        return {"uri": self.uri}

    def __setstate__(self, state):
        self.uri = state["uri"]

    @cached_property
    def client(self):
        from mlflow.tracking import MlflowClient

        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # One bar per downloaded file (the report reads a dozen small PNGs) buries genlib's own bars.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        return MlflowClient(tracking_uri=self.uri)

    @property
    def is_local(self) -> bool:
        return self.uri.startswith(("sqlite:", "file:")) or "://" not in self.uri

    # -- runs -------------------------------------------------------------------------------

    def experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (paths.mlflow_artifacts() / name).as_uri() if self.is_local else None
        try:
            # "custom_model_development": the MLflow UI opens the experiment on its runs table
            # (model training), not on the GenAI traces dashboard.
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={"mlflow.experimentKind": "custom_model_development"})
        except Exception:  # noqa: BLE001 - another process may have created it meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def start_run(self, experiment: str, name: str, parent_id: str | None = None,
                  tags: Mapping[str, str] | None = None) -> str:
        sha = git_sha()
        all_tags = {Tag.VERSION: __version__, Tag.GIT_SHA: sha, "mlflow.source.git.commit": sha, **(tags or {})}
        if parent_id:
            all_tags[Tag.PARENT] = parent_id
        run = self.client.create_run(self.experiment_id(experiment), run_name=name, tags=all_tags)
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """End a run as FINISHED, FAILED or KILLED (MLflow's status for a run stopped from outside)."""
        self.client.set_terminated(run_id, status=status)

    @contextlib.contextmanager
    def run(self, experiment: str, name: str, parent_id: str | None = None,
            tags: Mapping[str, str] | None = None, reopen: str | None = None) -> Iterator[str]:
        """A run that ends FINISHED if the block completes, KILLED if it is interrupted (Ctrl-C,
        SIGTERM: KeyboardInterrupt or SystemExit) and FAILED if it raises anything else. ``reopen``:
        the id of an unfinished run to continue instead of starting a new one (marked RUNNING again)."""
        if reopen:
            self.client.update_run(reopen, status="RUNNING")
            run_id = reopen
        else:
            run_id = self.start_run(experiment, name, parent_id, tags)
        try:
            yield run_id
        except (KeyboardInterrupt, SystemExit):
            self.end_run(run_id, "KILLED")
            raise
        except BaseException:
            self.end_run(run_id, "FAILED")
            raise
        self.end_run(run_id)

    def get_run(self, run_id: str):
        return self.client.get_run(run_id)

    def find_runs(self, experiment: str, tags: Mapping[str, str]) -> list:
        """Runs of ``experiment`` carrying all of ``tags``, newest first."""
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            return []
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        return self.client.search_runs([found.experiment_id], filter_string=where,
                                       order_by=["attributes.start_time DESC"])

    def search_runs(self, experiment_ids: list[str], where: str = "", order_by: list[str] | None = None,
                    max_results: int = 1000) -> list:
        return self.client.search_runs(experiment_ids, filter_string=where, order_by=order_by,
                                       max_results=max_results)

    def experiment_ids(self, name: str | None = None, prefix: str = "genlib-") -> list[str]:
        """Ids of the experiment ``name``, or of every experiment whose name starts with ``prefix``."""
        return [e.experiment_id for e in self.client.search_experiments()
                if (e.name == name if name else e.name.startswith(prefix))]

    def last_step(self, run_id: str, key: str) -> int:
        """The highest step logged for metric ``key`` (0 if none; a training run's steps are its
        epochs, counted from 1)."""
        return max((m.step for m in self.client.get_metric_history(run_id, key)), default=0)

    def child_runs(self, parent_id: str) -> list:
        parent = self.client.get_run(parent_id)
        return self.client.search_runs([parent.info.experiment_id],
                                       filter_string=f"tags.`{Tag.PARENT}` = '{parent_id}'")

    # -- data -------------------------------------------------------------------------------

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, param_text(v)) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(run_id, params=items[i:i + _BATCH])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(run_id, metrics=items[i:i + _BATCH])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_image(self, run_id: str, image, artifact_file: str) -> None:
        """Log a PIL image, or PNG bytes already encoded, at ``artifact_file`` (e.g. ``samples/epoch_010.png``)."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(artifact_file).name
            if isinstance(image, bytes):
                local.write_bytes(image)
            else:
                image.save(local)
            self.log_artifact(run_id, local, str(Path(artifact_file).parent))

    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None:
        artifact_path = None if artifact_path in (None, "", ".") else artifact_path
        self.client.log_artifact(run_id, str(local_path), artifact_path)

    def log_artifacts(self, run_id: str, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def log_dict(self, run_id: str, data: Any, artifact_file: str) -> None:
        self.client.log_dict(run_id, data, artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_dataset(self, run_id: str, manifest: Mapping[str, Any], path: str | Path,
                    context: str = "train") -> None:
        """Record a dataset version as an MLflow dataset input, identified by its content hash."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=f"{manifest['source']}-{manifest['content_hash'][:12]}",
            digest=manifest["content_hash"][:32],
            source_type="local",
            source=json.dumps({"uri": str(Path(path).resolve())}),
            schema=json.dumps({"kind": manifest.get("kind", "images"), "shape": manifest["shape"],
                               "levels": manifest["levels"],
                               **({"domains": {d: {k: v[k] for k in ("shape", "levels", "splits")}
                                               for d, v in manifest["domains"].items()}} if "domains" in manifest
                                  else {})}),
            profile=json.dumps({"splits": manifest["splits"], "labelled": manifest["labelled"]}),
        )
        tag = InputTag(key="mlflow.data.context", value=context)
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset=dataset, tags=[tag])])

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        """Paths of every artifact file of a run (under ``path``), depth first."""
        files = []
        for info in self.client.list_artifacts(run_id, path):
            files.extend(self.list_artifacts(run_id, info.path) if info.is_dir else [info.path])
        return files

    # -- model registry -----------------------------------------------------------------------

    def register_version(self, name: str, run_id: str, artifact_path: str, tags: Mapping[str, str]) -> str:
        """A new version of registered model ``name`` (created if new) for a run's artifact."""
        try:
            self.client.get_registered_model(name)
        except Exception:  # noqa: BLE001 - MLflow raises RestException for a missing model
            self.client.create_registered_model(name, description="genlib: best model of this family per pipeline")
        run = self.client.get_run(run_id)
        version = self.client.create_model_version(name, f"{run.info.artifact_uri}/{artifact_path}", run_id,
                                                   tags=dict(tags))
        return version.version

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def version_by_alias(self, name: str, alias: str):
        try:
            return self.client.get_model_version_by_alias(name, alias)
        except Exception:  # noqa: BLE001 - no such alias yet
            return None

    def model_version(self, name: str, alias: str | None = None, version: str | None = None):
        """A registered model's version, by alias or number; MLflow's error if there is none."""
        return self.client.get_model_version_by_alias(name, alias) if alias else self.client.get_model_version(name, version)

    def registered_model_names(self) -> list[str]:
        return [m.name for m in self.client.search_registered_models()]

    @staticmethod
    def local_artifact(run, path: str) -> Path | None:
        """The file of a run's artifact on this machine, when the store keeps artifacts in a local
        folder (the embedded store); None otherwise (a server proxying them, object storage)."""
        root = run.info.artifact_uri
        if not root.startswith("file:"):
            return None
        from urllib.parse import unquote, urlparse

        file = Path(unquote(urlparse(root).path)) / path
        return file if file.exists() else None

    def download_artifacts(self, run_id: str, path: str, dst: str | Path) -> Path:
        return Path(self.client.download_artifacts(run_id, path, str(dst)))

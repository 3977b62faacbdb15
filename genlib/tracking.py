"""Everything genlib says to MLflow goes through here.

Layout of what is recorded: one experiment per dataset source (``genlib-<source>`` unless
configured), one parent run per pipeline, and a nested run per stage or family (train-vae,
evaluate-vae, ...). Runs carry tags for the git sha, the genlib version and the dataset hash.
The default store is SQLite plus an artifact folder under ``GENLIB_HOME``; pointing
``MLFLOW_TRACKING_URI`` (or ``tracking.tracking_uri``) at a server changes nothing else.

Clients are explicit (``MlflowClient``) rather than MLflow's global "active run", so that the
driver, Prefect tasks and Ray workers can all log to a run by its id.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from genlib import __version__, paths

_PARAM_LIMIT = 6000  # MLflow rejects longer param values
_BATCH = 100


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.mlflow_db()}"


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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
        all_tags = {"genlib.version": __version__, "genlib.git_sha": sha, "mlflow.source.git.commit": sha,
                    **(tags or {})}
        if parent_id:
            all_tags["mlflow.parentRunId"] = parent_id
        run = self.client.create_run(self.experiment_id(experiment), run_name=name, tags=all_tags)
        return run.info.run_id

    def end_run(self, run_id: str, failed: bool = False) -> None:
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    @contextlib.contextmanager
    def run(self, experiment: str, name: str, parent_id: str | None = None,
            tags: Mapping[str, str] | None = None, reopen: str | None = None) -> Iterator[str]:
        """A run that ends FINISHED if the block completes and FAILED if it raises. ``reopen``: the id
        of an unfinished run to continue instead of starting a new one (it is marked RUNNING again)."""
        if reopen:
            self.client.update_run(reopen, status="RUNNING")
            run_id = reopen
        else:
            run_id = self.start_run(experiment, name, parent_id, tags)
        try:
            yield run_id
        except BaseException:
            self.end_run(run_id, failed=True)
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

    def last_step(self, run_id: str, key: str) -> int:
        """The highest step logged for metric ``key`` (-1 if none)."""
        return max((m.step for m in self.client.get_metric_history(run_id, key)), default=-1)

    def child_runs(self, parent_id: str) -> list:
        parent = self.client.get_run(parent_id)
        return self.client.search_runs([parent.info.experiment_id],
                                       filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")

    # -- data -------------------------------------------------------------------------------

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
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
        """Log a PIL image as a PNG artifact at ``artifact_file`` (e.g. ``samples/epoch_010.png``)."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(artifact_file).name
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
            schema=json.dumps({"shape": manifest["shape"], "levels": manifest["levels"]}),
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

    def download_artifacts(self, run_id: str, path: str, dst: str | Path) -> Path:
        return Path(self.client.download_artifacts(run_id, path, str(dst)))


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return text[:_PARAM_LIMIT]

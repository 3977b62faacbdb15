"""Where people open what the stages record: MLflow UI pages and report files.

Printed by the CLI (``genlib ui``, ``evaluate``, ``pipeline``) and written into summaries, so a
user goes from a finished command to its results in one click.
"""

from __future__ import annotations

from genlib.tracking import REPORT, Tracker

LOCAL_UI = "http://127.0.0.1:5000"  # where `genlib ui` serves a local tracking store


def ui_base(tracking_uri: str) -> str | None:
    """Where the MLflow UI of a store is: the tracking server itself for an http(s) URI, the
    address `genlib ui` serves for a local store, None for anything else (e.g. ``databricks``)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return LOCAL_UI if Tracker(tracking_uri).is_local else None


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str, base: str | None = None) -> str | None:
    """A run's page in the MLflow UI (``base``: the UI's address, default ``ui_base``)."""
    base = base or ui_base(tracking_uri)
    return base and f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def runs_page_url(base: str, experiment_id: str) -> str:
    """An experiment's runs table. NOTE: MLflow 3.17's UI opens an experiment on its GenAI
    overview unless the URL says ``workflowType=machine_learning`` (the "Model training" switch);
    neither a server setting nor the ``mlflow.experimentKind`` tag changes that."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def report_location(tracker: Tracker, run_id: str, base: str | None = None) -> str:
    """Where to open a run's report.html: its page in the MLflow UI and, for a local store, the file."""
    run = tracker.get_run(run_id)
    url = mlflow_run_url(tracker.uri, run.info.experiment_id, run_id, base)
    file = tracker.local_artifact(run, REPORT)
    where = [f"{url}/artifacts/{REPORT}"] if url else []
    if file:
        where.append(f"file://{file}")
    return "  or  ".join(where) or f"the artifact {REPORT} of run {run_id} in {tracker.uri}"

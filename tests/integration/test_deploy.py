"""Deployments, retries and caching against a real Prefect API (test harness server), real local Ray
and MLflow on SQLite: prefect.yaml, `genlib deploy` serving a run, a task retry, a flow retry that
reuses finished stages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from genlib.tracking import Tracker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# The cheapest real pipeline: one exact family, one epoch, one worker, no sample-quality metrics.
CHEAP = ["train.epochs=1", "train.num_workers=1", "models=[{family: categorical}]", "reweight.retrain=[]",
         "eval.n_generated=0"]
EXPECTED = {"genlib-pipeline/nightly": "pipeline", "genlib-evaluate/on-demand": "evaluate_flow",
            "genlib-reweight/on-demand": "reweight_flow", "genlib-audit/on-demand": "audit_flow"}


def _client():
    from prefect import get_client

    return get_client(sync_client=True)


def _wait_for(what, check, timeout: float = 30.0, every: float = 0.5):
    """Poll ``check()`` until it returns something truthy; Prefect records task states asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            assert found, f"timed out after {timeout:.0f}s waiting for {what}"
            return found
        time.sleep(every)


# -- prefect.yaml ----------------------------------------------------------------------------------


def test_prefect_yaml_parses_and_every_entrypoint_is_a_flow():
    from prefect.flows import Flow, load_flow_from_entrypoint

    from flows.deploy import load_flow, read_deployments

    raw = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    try:  # the model `prefect deploy` validates prefect.yaml with (a private module: skip if it moves)
        from prefect.cli.deploy._models import PrefectYamlModel
    except ImportError:
        PrefectYamlModel = None
    if PrefectYamlModel is not None:
        assert len(PrefectYamlModel.model_validate(raw).deployments) == len(EXPECTED)

    found = {}
    for entry in read_deployments(ROOT / "prefect.yaml"):
        flow = load_flow_from_entrypoint(str(ROOT / entry["entrypoint"]))  # as `prefect deploy` resolves it
        assert isinstance(flow, Flow) and load_flow(entry["entrypoint"]).name == flow.name
        found[f"{flow.name}/{entry['name']}"] = entry["entrypoint"].rsplit(":", 1)[1]
        accepted = set(flow.parameters.properties)
        assert set(entry["parameters"]) <= accepted, f"{entry['name']}: unknown parameters"
        assert entry["parameters"].get("overrides") == []
        limit = entry["concurrency_limit"]
        assert (limit["limit"] if isinstance(limit, dict) else limit) >= 1
    assert found == EXPECTED

    nightly = next(e for e in raw["deployments"] if e["entrypoint"] == "flows/pipeline.py:pipeline")
    assert nightly["parameters"] == {"preset": "digits-quick", "overrides": []}
    assert nightly["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC", "active": False}]
    assert nightly["concurrency_limit"]["limit"] == 1


def test_cache_keys_are_scoped_to_the_inputs_and_the_state_directory(tmp_path, monkeypatch):
    from flows import pipeline, reweight
    from genlib.data.prepare import prepare
    from genlib.presets import load_config

    cfg = load_config("digits-quick", CHEAP)
    dataset = str(prepare(cfg.data).path)
    ctx = SimpleNamespace(task_run=SimpleNamespace(flow_run_id="run-a"))
    params = {"config": cfg.to_dict(), "dataset": dataset, "tracking_uri": "sqlite:///x.db", "parent_run_id": "p1"}
    key = pipeline._train_key(ctx, params)
    assert key == pipeline._train_key(ctx, {**params, "parent_run_id": "p2"})  # the parent run does not matter
    assert key != pipeline._train_key(ctx, {**params, "tracking_uri": "sqlite:///y.db"})
    other = load_config("digits-quick", [*CHEAP, "train.epochs=2"]).to_dict()
    assert key != pipeline._train_key(ctx, {**params, "config": other})
    evaluate = {**params, "checkpoint": "c", "train_run_id": "t1"}
    assert pipeline._evaluate_key(ctx, evaluate) != pipeline._evaluate_key(ctx, {**evaluate, "train_run_id": "t2"})
    rw = {"vae_run_id": "v1", "dataset": dataset, "tracking_uri": None, "parent_run_id": "p1", "overrides": []}
    assert reweight._reweight_key(ctx, rw) == reweight._reweight_key(ctx, {**rw, "parent_run_id": "p2"})
    prepare_key = pipeline._prepare_key(ctx, params)
    assert prepare_key != pipeline._prepare_key(SimpleNamespace(task_run=SimpleNamespace(flow_run_id="b")), params)

    monkeypatch.setenv("GENLIB_HOME", str(tmp_path / "another-home"))  # another state directory, same inputs
    assert pipeline._train_key(ctx, params) != key
    assert pipeline._prepare_key(ctx, params) != prepare_key


# -- deployments against the API ---------------------------------------------------------------------


def test_deployments_are_created_with_schedule_and_concurrency_limit(prefect_api):
    from flows.deploy import runner_deployments

    for deployment in runner_deployments(ROOT / "prefect.yaml"):
        deployment.apply()
    with _client() as client:
        nightly = client.read_deployment_by_name("genlib-pipeline/nightly")
        (schedule,) = nightly.schedules
        assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "UTC"
        assert schedule.active is False  # present, off until someone turns it on
        assert nightly.parameters == {"preset": "digits-quick", "overrides": []}
        assert nightly.global_concurrency_limit.limit == 1
        assert nightly.concurrency_options.collision_strategy.value == "ENQUEUE"
        evaluate = client.read_deployment_by_name("genlib-evaluate/on-demand")
        assert evaluate.schedules == [] and evaluate.global_concurrency_limit.limit == 2
        assert evaluate.parameter_openapi_schema["required"] == ["train_run_id"]
        reweight = client.read_deployment_by_name("genlib-reweight/on-demand")
        assert reweight.parameter_openapi_schema["required"] == ["vae_run_id"]

    # --schedule turns the nightly schedule on; the file's other settings stay.
    (nightly_on,) = [d for d in runner_deployments(ROOT / "prefect.yaml", active=True) if d.name == "nightly"]
    nightly_on.apply()
    with _client() as client:
        (schedule,) = client.read_deployment_by_name("genlib-pipeline/nightly").schedules
        assert schedule.active is True and schedule.schedule.cron == "0 2 * * *"


def test_genlib_deploy_serves_a_run_to_completion(prefect_api, ray_local, genlib_home, tmp_path):
    """`genlib deploy` in its own process; a run of the nightly deployment, triggered through the API,
    completes in a subprocess of it (joining this session's Ray) and records its MLflow runs."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(tmp_path / "prefect"),
           "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address, "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "deploy.log"
    with open(log, "w") as out:
        served = subprocess.Popen([sys.executable, "-m", "genlib.cli", "deploy", "--schedule"], cwd=ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for("genlib deploy to start serving", lambda: f"Serving {len(EXPECTED)} genlib deployment(s)" in log.read_text()
                  or served.poll() is not None, timeout=90)
        assert served.poll() is None, log.read_text()
        text = log.read_text()
        assert "prefect deployment run 'genlib-pipeline/nightly'" in text and "concurrency limit: 1" in text

        run = run_deployment("genlib-pipeline/nightly", parameters={"overrides": CHEAP}, timeout=240)
        assert run.state.is_completed(), f"{run.state}\n{log.read_text()[-4000:]}"

        with _client() as client:
            deployment = client.read_deployment_by_name("genlib-pipeline/nightly")
            assert deployment.schedules[0].active is True  # --schedule
            assert deployment.global_concurrency_limit.limit == 1
        tracker = Tracker()
        (parent,) = tracker.find_runs("genlib-digits", {"genlib.prefect_flow_run_id": str(run.id)})
        assert parent.info.status == "FINISHED"
        children = {r.info.run_name: r.info.status for r in tracker.child_runs(parent.info.run_id)}
        assert children == {"train-categorical": "FINISHED", "evaluate-categorical": "FINISHED"}
        assert (genlib_home / "prefect-results").is_dir()  # the served process stored its results there
    finally:
        served.send_signal(signal.SIGINT)
        try:
            served.wait(timeout=30)
        except subprocess.TimeoutExpired:
            served.kill()
            served.wait()


# -- retries and caching ------------------------------------------------------------------------------


def test_task_retry_and_flow_retry_reuse_finished_stages(prefect_api, ray_local, genlib_home, monkeypatch):
    """evaluate fails once (transient) and succeeds on its retry; the summary fails for good in the first
    attempt, so the flow run is retried: prepare, train and evaluate come back "Cached" and training
    happens once. A new flow run with the same inputs reuses them too, in a new parent run."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter

    import flows.pipeline as pipeline_module
    from flows.pipeline import pipeline

    calls = {"train": 0, "evaluate": 0, "report": 0}

    def counted(name, real, fail_on=None):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            if fail_on and calls[name] in fail_on:
                raise fail_on[calls[name]]
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(pipeline_module, "train", counted("train", pipeline_module.train))
    monkeypatch.setattr(pipeline_module, "evaluate", counted(
        "evaluate", pipeline_module.evaluate, {1: ConnectionResetError("injected: peer reset")}))
    monkeypatch.setattr(pipeline_module, "summarise", counted(
        "report", pipeline_module.summarise, {1: ValueError("injected: the summary fails for good")}))

    state = pipeline.with_options(retries=1, retry_delay_seconds=0)("digits-quick", CHEAP, return_state=True)
    assert state.is_completed(), state
    summary = state.result()
    assert calls == {"train": 1, "evaluate": 2, "report": 2}  # trained once; evaluated twice (the retry)
    flow_run_id = state.state_details.flow_run_id

    def task_states():
        with _client() as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
        # (task, state, attempts): a cache hit never runs, so its attempt count says nothing
        return sorted((r.name.rsplit("-", 1)[0], r.state_name, None if r.state_name == "Cached" else r.run_count)
                      for r in runs)

    expected = [("evaluate-categorical", "Cached", None), ("evaluate-categorical", "Completed", 2),
                ("prepare", "Cached", None), ("prepare", "Completed", 1), ("summary", "Completed", 1),
                ("summary", "Failed", 1), ("train-categorical", "Cached", None), ("train-categorical", "Completed", 1)]
    def settled():
        found = task_states()
        final = len(found) == len(expected) and all(s in ("Cached", "Completed", "Failed") for _, s, _ in found)
        return found if final else None

    assert _wait_for("the task runs to settle", settled) == expected
    with _client() as client:
        assert client.read_flow_run(flow_run_id).run_count == 2

    tracker = Tracker()
    (train_run,) = tracker.find_runs("genlib-digits", {"genlib.stage": "train"})
    assert summary["rows"][0]["train_run_id"] == train_run.info.run_id
    (parent,) = tracker.find_runs("genlib-digits", {"genlib.stage": "pipeline"})  # the retry reopened it
    assert parent.info.run_id == summary["parent_run_id"] and parent.info.status == "FINISHED"
    assert parent.data.tags["genlib.prefect_flow_run_id"] == str(flow_run_id)
    assert any(p.name.startswith("genlib-train-") for p in (genlib_home / "prefect-results").iterdir())

    url = f"http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
    assert summary["mlflow_url"] == url
    with _client() as client:
        (markdown,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["genlib-summary"]), flow_run_id={"any_": [flow_run_id]}))
        (link,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["genlib-mlflow-run"]), flow_run_id={"any_": [flow_run_id]}))
    assert url in markdown.data and "test_bpd" in markdown.data and train_run.info.run_id in markdown.data
    assert url in link.data

    # A new flow run, same inputs: training and evaluation are cache hits; a new parent run sums up.
    again = pipeline("digits-quick", CHEAP)
    assert calls["train"] == 1 and calls["evaluate"] == 2
    assert again["rows"][0]["train_run_id"] == train_run.info.run_id
    assert again["parent_run_id"] != summary["parent_run_id"]
    assert len(tracker.find_runs("genlib-digits", {"genlib.stage": "train"})) == 1

"""The whole pipeline as a real Prefect flow (test harness server), on real Ray and MLflow."""

import json

import pytest

from genlib.tracking import Tracker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_pipeline_flow_records_parent_and_nested_runs(ray_local, prefect_server, tmp_path, capsys):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    from flows.pipeline import pipeline

    overrides = ["train.epochs=2", "train.num_workers=2", "eval.iwae_k=8", "eval.n_samples=16",
                 "eval.n_generated=100", "eval.copying_cells=2",
                 "train.sample_every=1", "models=[{family: vae, hidden: 8}, {family: categorical}]",
                 "reweight.retrain=[vae]"]
    state = pipeline("digits-quick", overrides, return_state=True)
    assert state.is_completed()
    summary = state.result()

    tracker = Tracker(summary["tracking_uri"])
    parent = tracker.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["train.epochs"] == "2"
    children = {r.info.run_name: r for r in tracker.child_runs(parent.info.run_id)}
    assert set(children) == {"train-vae", "evaluate-vae", "train-categorical", "evaluate-categorical",
                             "reweight-max", "train-vae-reweighted", "evaluate-vae-reweighted"}
    assert all(r.info.status == "FINISHED" for r in children.values())

    train_run = children["train-vae"]
    history = tracker.client.get_metric_history(train_run.info.run_id, "val_loss")
    assert [m.step for m in history] == [0, 1]
    train_artifacts = {a.path for a in tracker.client.list_artifacts(train_run.info.run_id, "samples")}
    assert train_artifacts == {"samples/epoch_0000.png", "samples/epoch_0001.png"}
    assert any(a.path == "checkpoint" for a in tracker.client.list_artifacts(train_run.info.run_id))

    scores = children["evaluate-vae"].data.metrics
    quality = {"fid_domain", "kid_domain", "kid_domain_std", "precision_domain", "recall_domain",
               "domain_extractor_test_accuracy", "copy_rate_pixel", "copy_rate_domain", "authenticity_pixel"}
    assert set(scores) >= {"test_elbo_bpd", "test_iwae8_bpd"} | quality
    assert scores["domain_extractor_test_accuracy"] > 0.9  # the digits feature network works
    assert 0.0 <= scores["copy_rate_pixel"] <= 1.0 and scores["fid_domain"] > 0
    protocol = children["evaluate-vae"].data.params
    assert protocol["quality.n_generated"] == "100" and protocol["quality.reference_split"] == "test"
    assert protocol["quality.extractor"].startswith("domain-classifier-")
    eval_artifacts = set(tracker.list_artifacts(children["evaluate-vae"].info.run_id))
    assert eval_artifacts >= {"memorization/closest_pairs.png", "memorization/per_class.json", "report.html",
                              "samples/final.png", "samples/interpolation.png", "samples/traversals.png"}
    per_class = json.loads(tracker.download_artifacts(children["evaluate-vae"].info.run_id,
                                                      "memorization/per_class.json", tmp_path).read_text())
    assert [row["class"] for row in per_class] == list(range(10))
    assert sum(row["samples"] for row in per_class) == 100
    assert scores["test_iwae8_bpd"] <= scores["test_elbo_bpd"] + 0.01
    assert 0.5 < scores["test_elbo_bpd"] < 4.09 + 0.5  # sane bits/dim for 17 levels (uniform: 4.09)
    assert children["evaluate-vae"].data.params["eval.split"] == "test"

    exact = children["evaluate-categorical"].data.metrics
    assert "test_elbo_bpd" not in exact and 2.0 < exact["test_bpd"] < 3.0  # independent pixels: ~2.43

    local = tracker.download_artifacts(parent.info.run_id, "summary.json", tmp_path)
    summary_json = json.loads(local.read_text())
    assert [row["model"] for row in summary_json["rows"]] == ["vae", "categorical", "vae-reweighted"]
    reweight_run = children["reweight-max"]
    assert summary_json["reweight"]["run_id"] == reweight_run.info.run_id
    assert reweight_run.data.tags["genlib.vae_run_id"] == train_run.info.run_id
    assert children["train-vae-reweighted"].data.params["train.weights"] == reweight_run.info.run_id
    assert parent.data.metrics["vae.test_elbo_bpd"] == pytest.approx(scores["test_elbo_bpd"])
    assert parent.data.metrics["categorical.test_bpd"] == pytest.approx(exact["test_bpd"])

    # The best model of each family is registered, and can be sampled without the training data.
    assert summary["registered"] == {"vae": "models:/genlib-digits-vae/1",
                                     "categorical": "models:/genlib-digits-categorical/1"}
    version = tracker.client.get_model_version_by_alias("genlib-digits-vae", "best")
    assert version.tags["genlib.dataset_hash"] == train_run.data.tags["genlib.dataset_hash"]
    assert version.run_id in {children["train-vae"].info.run_id, children["train-vae-reweighted"].info.run_id}
    from genlib.cli import main

    assert main(["sample", "--model", "models:/genlib-digits-vae@best", "-n", "16", "-o", str(tmp_path / "g.png")]) == 0
    assert main(["sample", "--run", train_run.info.run_id, "-n", "5", "-o", str(tmp_path / "s.npz")]) == 0
    import numpy as np
    from PIL import Image

    assert Image.open(tmp_path / "g.png").size[0] > 100
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["images"].shape == (5, 1, 8, 8) and arrays["images"].max() < 17
    assert main(["sample", "--model", "models:/nope@best", "-o", str(tmp_path / "x.png")]) == 2
    assert main(["runs", "--dataset", "digits", "--sort", "fid"]) == 0

    out = capsys.readouterr()
    assert "no model version models:/nope@best" in out.err
    assert all(row["eval_run_id"] in out.out for row in summary["rows"])
    from genlib.runs import leaderboard

    board = leaderboard(tracker, dataset="digits", sort="fid")
    assert {r["eval_run_id"] for r in board} == {row["eval_run_id"] for row in summary["rows"]}
    assert [r["fid"] for r in board] == sorted(r["fid"] for r in board)
    assert leaderboard(tracker, dataset="mnist") == []
    report = tracker.download_artifacts(parent.info.run_id, "report.html", tmp_path).read_text()
    for needle in ("vae-reweighted", "categorical", "fid_domain", "test_bpd", "data:image/png;base64,",
                   "quality.extractor", "Reweighting (DB-VAE)", "ess_fraction", "most weighted"):
        assert needle in report
    assert report.count("<img") >= 2 * 2  # samples and closest pairs of each model, at least

    import asyncio

    async def task_names():
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [state.state_details.flow_run_id]}))
            return sorted(r.name.rsplit("-", 1)[0] for r in runs)

    assert asyncio.run(task_names()) == ["evaluate-categorical", "evaluate-vae", "evaluate-vae-reweighted", "prepare",
                                         "reweight", "summary", "train-categorical", "train-vae",
                                         "train-vae-reweighted"]


def test_pipeline_bad_override_fails_before_anything_runs(prefect_server):
    from flows.pipeline import pipeline

    state = pipeline("digits-quick", ["train.epoch=2"], return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="unknown config key"):
        state.result()


def test_evaluate_a_training_run_by_id(ray_local, tmp_path, capsys):
    """`genlib evaluate --run ID` finds the run's checkpoint, config and dataset by itself."""
    from genlib.cli import main
    from genlib.presets import load_config
    from genlib.data.prepare import prepare
    from genlib.stages.train import train

    cfg = load_config("digits-quick", ["train.epochs=1", "train.num_workers=1", "models=[]",
                                       "model={family: categorical}"])
    trained = train(cfg, prepare(cfg.data).path)
    assert main(["evaluate", "--run", trained.run_id, "--eval.n_generated=60", "--eval.copying_cells=1",
                 "--eval.knn=ivf"]) == 0
    out = capsys.readouterr().out
    assert "test_bpd" in out and "report.html" in out
    tracker = Tracker()
    runs = tracker.client.search_runs([tracker.get_run(trained.run_id).info.experiment_id],
                                      filter_string=f"tags.`genlib.train_run_id` = '{trained.run_id}'")
    assert len(runs) == 1 and runs[0].data.params["quality.n_generated"] == "60"
    assert 0.5 <= runs[0].data.metrics["knn_recall_pixel"] <= 1.0  # the approximate index, its recall logged
    assert runs[0].info.status == "FINISHED" and "report.html" in tracker.list_artifacts(runs[0].info.run_id)

    assert main(["evaluate", "--run", runs[0].info.run_id]) == 2  # an evaluate run is not a training run
    assert "is a 'evaluate' run; pass the id of a genlib training run" in capsys.readouterr().err
    assert main(["evaluate", "digits-quick"]) == 2
    assert "--run RUN_ID" in capsys.readouterr().err

"""The whole pipeline as a real Prefect flow (test harness server), on real Ray and MLflow."""

import json

import pytest

pytestmark = pytest.mark.integration


STAGES = {"train-vae", "evaluate-vae", "train-categorical", "evaluate-categorical", "reweight-knn",
          "train-vae-reweighted", "evaluate-vae-reweighted"}


def _children(store) -> dict:
    parent = store.summary["parent_run_id"]
    return {r.info.run_name: r for r in store.tracker.child_runs(parent)}


def test_pipeline_records_a_finished_parent_run_with_a_nested_run_per_stage(pipeline_store):
    tracker = pipeline_store.tracker
    parent = tracker.get_run(pipeline_store.summary["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["train.epochs"] == "2"
    children = _children(pipeline_store)
    assert set(children) == STAGES
    assert all(r.info.status == "FINISHED" for r in children.values())


def test_pipeline_prefect_task_runs_are_named_after_their_stage_and_model(pipeline_store):
    assert pipeline_store.task_names == ["evaluate-categorical", "evaluate-vae", "evaluate-vae-reweighted",
                                         "prepare", "reweight", "summary", "train-categorical", "train-vae",
                                         "train-vae-reweighted"]


def test_pipeline_training_run_logs_every_epoch_its_sample_grids_and_checkpoint(pipeline_store):
    tracker, train_run = pipeline_store.tracker, _children(pipeline_store)["train-vae"]
    history = tracker.client.get_metric_history(train_run.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]  # epochs counted from 1, as the progress lines count them
    train_artifacts = {a.path for a in tracker.client.list_artifacts(train_run.info.run_id, "samples")}
    assert train_artifacts == {"samples/epoch_0001.png", "samples/epoch_0002.png"}
    assert any(a.path == "checkpoint" for a in tracker.client.list_artifacts(train_run.info.run_id))
    assert train_run.data.params["train.num_workers"] == "2"


def test_epochs_count_from_one_in_the_summary_the_mlflow_history_and_the_progress_lines(pipeline_store):
    tracker, children = pipeline_store.tracker, _children(pipeline_store)
    for row in pipeline_store.summary["rows"]:
        run = children[f"train-{row['model']}"]
        val = {m.step: m.value for m in tracker.client.get_metric_history(run.info.run_id, "val_loss")}
        assert sorted(val) == [1, 2] and row["selected_epoch"] == min(val, key=val.get)
        assert run.data.tags["genlib.selected_epoch"] == str(row["selected_epoch"])
    assert "[vae] epoch 1/2 " in pipeline_store.stdout and "[vae] epoch 2/2 " in pipeline_store.stdout
    assert "epoch 0/" not in pipeline_store.stdout and "epoch 3/" not in pipeline_store.stdout


def test_pipeline_evaluation_logs_scores_protocol_and_figures(pipeline_store, tmp_path):
    tracker, scored = pipeline_store.tracker, _children(pipeline_store)["evaluate-vae"]
    scores = scored.data.metrics
    quality = {"fid_domain", "kid_domain", "kid_domain_std", "precision_domain", "recall_domain",
               "density_domain", "coverage_domain", "copy_rate_pixel_robust", "copy_rate_domain_robust",
               "copy_threshold_pixel_robust", "copy_false_alarm_pixel_robust",
               "domain_extractor_test_accuracy", "copy_rate_pixel", "copy_rate_domain", "authenticity_pixel",
               "is_domain", "is_domain_std"}
    assert set(scores) >= {"test_elbo_bpd", "test_iwae8_bpd"} | quality
    # the digits feature network works, on a test split half of which is drawn in the style only 5 % of train has
    assert scores["domain_extractor_test_accuracy"] > 0.85
    # The IS analogue of the samples, with the domain network's classes, below that of the real test images.
    ceiling = float(scored.data.params["quality.is_test_split"])
    assert 1 <= scores["is_domain"] < ceiling <= 10
    assert 0.0 <= scores["copy_rate_pixel"] <= 1.0 and scores["fid_domain"] > 0
    assert scores["test_iwae8_bpd"] <= scores["test_elbo_bpd"] + 0.01
    assert 0.5 < scores["test_elbo_bpd"] < 4.09 + 0.5  # sane bits/dim for 17 levels (uniform: 4.09)
    protocol = scored.data.params
    assert protocol["quality.n_generated"] == "100" and protocol["quality.reference_split"] == "test"
    assert protocol["quality.extractor"].startswith("domain-classifier-") and protocol["eval.split"] == "test"
    assert scores["copy_false_alarm_pixel_robust"] <= 0.01 and "shifts up to ±2 px" in protocol[
        "memorization.robust_invariances_pixel"] and "held-out test images" in protocol["memorization.robust_calibration"]
    digest = protocol["quality.extractor_weights_sha256"]
    assert len(digest) == 64 and protocol["memorization.extractor_weights_sha256"] == digest
    eval_artifacts = set(tracker.list_artifacts(scored.info.run_id))
    assert eval_artifacts >= {"memorization/closest_pairs.png", "memorization/per_class.json", "report.html",
                              "samples/final.png", "samples/interpolation.png", "samples/traversals.png"}
    per_class = json.loads(tracker.download_artifacts(scored.info.run_id, "memorization/per_class.json",
                                                      tmp_path).read_text())
    assert [row["class"] for row in per_class] == list(range(10))
    assert sum(row["samples"] for row in per_class) == 100
    report = tracker.download_artifacts(scored.info.run_id, "report.html", tmp_path).read_text()
    assert "fid_domain" in report and report.count("data:image/png;base64,") == 4  # samples, interp., trav., pairs

    exact = _children(pipeline_store)["evaluate-categorical"].data.metrics
    assert "test_elbo_bpd" not in exact and 2.0 < exact["test_bpd"] < 3.0  # independent pixels: ~2.43


def test_pipeline_reweight_stage_weights_the_vae_and_feeds_the_retraining(pipeline_store, tmp_path):
    from genlib.data.weights import read_weights

    children, summary = _children(pipeline_store), pipeline_store.summary
    reweight_run = children["reweight-knn"]
    assert summary["reweight"]["run_id"] == reweight_run.info.run_id
    assert reweight_run.data.tags["genlib.vae_run_id"] == children["train-vae"].info.run_id
    retrained = children["train-vae-reweighted"]
    assert retrained.data.params["train.weights"] == reweight_run.info.run_id
    # The retraining drew its batches with exactly those weights, on two DDP ranks.
    _, meta = read_weights(pipeline_store.tracker.download_artifacts(reweight_run.info.run_id, "weights.parquet",
                                                                     tmp_path))
    assert retrained.data.tags["genlib.weights_key"] == meta["key"] and retrained.data.params["train.num_workers"] == "2"
    assert retrained.info.status == "FINISHED" and retrained.data.metrics["val_loss"] > 0


def test_pipeline_report_shows_the_rare_subgroup_without_and_with_the_weights(pipeline_store, tmp_path):
    from genlib.data.dataset import DatasetVersion

    tracker, children = pipeline_store.tracker, _children(pipeline_store)
    (version,) = [DatasetVersion(p) for p in (pipeline_store.home / "datasets").iterdir()]
    assert version.manifest["rare"]["test"] > 0.4 * version.manifest["splits"]["test"]  # half of each class
    for name in ("evaluate-vae", "evaluate-vae-reweighted", "evaluate-categorical"):
        metrics = children[name].data.metrics
        assert 0 <= metrics["rare_share_generated"] <= 1 and metrics["rare_share_train"] == pytest.approx(0.05, abs=0.01)
        assert {"rare_precision_domain", "rare_recall_domain", "rare_classifier_balanced_accuracy"} <= set(metrics)
        assert children[name].data.params["rare.n_test"] == str(version.manifest["rare"]["test"])
    check = children["reweight-knn"].data.metrics
    assert {"classifier_rare_accuracy_uniform", "classifier_rare_accuracy_weighted"} <= set(check)
    report = tracker.download_artifacts(pipeline_store.summary["parent_run_id"], "report.html", tmp_path).read_text()
    section = report.split("Debiasing: without and with the weights")[1].split("Reweighting (DB-VAE)")[0]
    assert "<th>measure</th><th>vae</th><th>vae-reweighted</th>" in section
    assert "<td>rare_share_generated</td>" in section and "on the rare test images" in section


def test_pipeline_summary_compares_the_models_in_the_parent_run_and_on_the_terminal(pipeline_store, tmp_path):
    tracker, summary, children = pipeline_store.tracker, pipeline_store.summary, _children(pipeline_store)
    assert [row["model"] for row in summary["rows"]] == ["vae", "categorical", "vae-reweighted"]
    parent = tracker.get_run(summary["parent_run_id"])
    vae, exact = children["evaluate-vae"].data.metrics, children["evaluate-categorical"].data.metrics
    assert parent.data.metrics["vae.test_elbo_bpd"] == pytest.approx(vae["test_elbo_bpd"])
    assert parent.data.metrics["categorical.test_bpd"] == pytest.approx(exact["test_bpd"])
    report = tracker.download_artifacts(parent.info.run_id, "report.html", tmp_path).read_text()
    for needle in ("vae-reweighted", "categorical", "fid_domain", "test_bpd", "data:image/png;base64,",
                   "quality.extractor", "Reweighting (DB-VAE)", "ess_fraction", "most weighted"):
        assert needle in report
    assert report.count("<img") >= 2 * 2  # samples and closest pairs of each model, at least
    # The terminal table: a header with the headline columns, then one line per model.
    lines = pipeline_store.stdout.splitlines()
    header = next(line for line in lines if line.split()[:3] == ["model", "family", "epoch"])
    assert header.split()[3:] == ["test_bpd", "test_elbo_bpd", "test_iwae8_bpd", "test_recon_bpd", "fid_domain",
                                  "copy_rate_pixel", "copy_rate_pixel_robust"]
    body = lines[lines.index(header) + 2:lines.index(header) + 5]
    assert [line.split()[0] for line in body] == ["vae", "categorical", "vae-reweighted"]


def test_pipeline_registers_the_best_model_of_each_family_and_samples_from_it(pipeline_store, monkeypatch, tmp_path,
                                                                               capsys):
    import numpy as np
    from PIL import Image

    from genlib.cli import main

    monkeypatch.setenv("GENLIB_HOME", str(pipeline_store.home))
    tracker, summary, children = pipeline_store.tracker, pipeline_store.summary, _children(pipeline_store)
    assert summary["registered"] == {"vae": "models:/genlib-digits-vae/1",
                                     "categorical": "models:/genlib-digits-categorical/1"}
    version = tracker.client.get_model_version_by_alias("genlib-digits-vae", "best")
    train_run = children["train-vae"]
    assert version.tags["genlib.dataset_hash"] == train_run.data.tags["genlib.dataset_hash"]
    assert version.run_id in {train_run.info.run_id, children["train-vae-reweighted"].info.run_id}
    assert main(["sample", "--model", "models:/genlib-digits-vae@best", "-n", "16", "-o", str(tmp_path / "g.png")]) == 0
    assert main(["sample", "--run", train_run.info.run_id, "-n", "5", "-o", str(tmp_path / "s.npz")]) == 0
    assert Image.open(tmp_path / "g.png").size[0] > 100
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["images"].shape == (5, 1, 8, 8) and arrays["images"].max() < 17
    assert main(["sample", "--model", "models:/nope@best", "-o", str(tmp_path / "x.png")]) == 2
    assert "no model version models:/nope@best" in capsys.readouterr().err
    assert main(["sample", "--run", train_run.info.run_id, "--label", "3", "-o", str(tmp_path / "l.png")]) == 2
    assert "--label needs a class-conditional model; this one is unconditional" in capsys.readouterr().err
    assert not (tmp_path / "l.png").exists()


def test_leaderboard_lists_every_evaluation_sorted_and_filtered(pipeline_store, monkeypatch, capsys):
    from genlib.cli import main
    from genlib.runs import leaderboard

    monkeypatch.setenv("GENLIB_HOME", str(pipeline_store.home))
    rows = pipeline_store.summary["rows"]
    assert main(["runs", "--dataset", "digits", "--sort", "fid"]) == 0
    out = capsys.readouterr().out
    assert all(row["eval_run_id"] in out for row in rows)
    board = leaderboard(pipeline_store.tracker, dataset="digits", sort="fid")
    assert {r["eval_run_id"] for r in board} == {row["eval_run_id"] for row in rows}
    assert [r["fid"] for r in board] == sorted(r["fid"] for r in board)
    by_precision = leaderboard(pipeline_store.tracker, sort="precision")
    assert [r["precision"] for r in by_precision] == sorted((r["precision"] for r in board), reverse=True)
    assert leaderboard(pipeline_store.tracker, dataset="mnist") == []
    assert all(row["train_run_id"] in out for row in rows)  # each evaluation names its training run


def test_runs_stage_train_lists_the_training_runs(pipeline_store, monkeypatch, capsys):
    from genlib.cli import main

    monkeypatch.setenv("GENLIB_HOME", str(pipeline_store.home))
    assert main(["runs", "--stage", "train"]) == 0
    out = capsys.readouterr().out
    trainings = [r for r in _children(pipeline_store).values() if r.data.tags["genlib.stage"] == "train"]
    assert len(trainings) == 3 and all(r.info.run_id in out for r in trainings)
    header = out.splitlines()[0].split()
    assert header == ["model", "family", "dataset", "status", "epochs", "selected_epoch", "val_loss", "train_run_id"]
    assert not any(row["eval_run_id"] in out for row in pipeline_store.summary["rows"])
    assert main(["runs", "--stage", "all"]) == 0
    both = capsys.readouterr().out
    assert all(r.info.run_id in both for r in trainings)
    assert all(row["eval_run_id"] in both for row in pipeline_store.summary["rows"])


def test_pipeline_bad_override_fails_before_anything_runs(prefect_api):
    from flows.pipeline import pipeline

    state = pipeline("digits-quick", ["train.epoch=2"], return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="unknown config key"):
        state.result()


def test_pipeline_refuses_a_model_the_data_does_not_fit_before_training_any(prefect_api):
    from flows.pipeline import pipeline
    from genlib.tracking import Tracker

    state = pipeline("digits-quick", ["models=[{family: categorical}, {family: progan}]", "data.image_size=12",
                                      "reweight.retrain=[]"], return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="progan grows from 4×4 by doubling"):
        state.result()
    tracker = Tracker()
    assert tracker.find_runs("genlib-digits", {"genlib.stage": "train"}) == []  # not even the categorical model
    (parent,) = tracker.find_runs("genlib-digits", {"genlib.stage": "pipeline"})
    assert parent.info.status == "FAILED"

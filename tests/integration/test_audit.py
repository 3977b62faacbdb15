"""`genlib audit`: samples genlib did not make, scored against a prepared dataset like an evaluation —
from a folder of PNGs and from an .npz, through the command, the Prefect flow and the leaderboard."""

import numpy as np
import pytest
import torch
from PIL import Image

from genlib.cli import main
from genlib.config import DataConfig
from genlib.data.dataset import DatasetVersion
from genlib.data.prepare import prepare
from genlib.evaluate.copies import _shift
from genlib.tracking import Stage, Tag, Tracker

pytestmark = pytest.mark.integration


@pytest.fixture
def digits(digits_domain_network):
    version = DatasetVersion(prepare(DataConfig(source="digits")).path)
    as_array = lambda split: np.array(version.images(split))[..., 0]  # noqa: E731 - (N, 8, 8) levels 0..16
    return version, as_array("train"), as_array("test")


def test_audit_of_a_png_folder_finds_the_planted_copies_and_records_an_evaluation(digits, tmp_path, capsys):
    version, train, test = digits
    # 150 samples: 100 held-out test images and 50 training images moved by one pixel (copies the
    # plain test misses), saved as 0..255 PNGs as another generator would.
    moved = _shift(torch.from_numpy(train[:50]).float()[:, None], 1, 0, 1)[:, 0].round().numpy().astype(np.uint8)
    folder = tmp_path / "samples"
    folder.mkdir()
    for i, image in enumerate(np.concatenate([test[:100], moved])):
        Image.fromarray(np.rint(image * 255.0 / 16).astype(np.uint8)).save(folder / f"{i:03d}.png")

    assert main(["audit", "--samples", str(folder), "--dataset", version.content_hash[:12], "--name", "planted",
                 "--eval.n_samples=16"]) == 2  # 0..255 values for a 17-level dataset, and no --quantise
    assert "pass --quantise" in capsys.readouterr().err
    tracker = Tracker()
    assert not tracker.experiment_ids() or not tracker.find_runs("genlib-digits", {Tag.STAGE: Stage.AUDIT})

    assert main(["audit", "--samples", str(folder), "--dataset", version.content_hash[:12], "--name", "planted",
                 "--quantise", "--eval.n_samples=16"]) == 0
    out = capsys.readouterr().out
    run_id = out.split("MLflow run ")[1].split(";")[0]
    run = tracker.get_run(run_id)
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    assert run.info.status == "FINISHED" and tags[Tag.STAGE] == Stage.AUDIT and tags[Tag.FAMILY] == "external"
    assert params["audit.n"] == "150" and params["audit.quantise"].startswith("round(v·16/255)")
    assert {"fid_domain", "density_domain", "coverage_domain", "copy_rate_pixel", "authenticity_pixel"} <= set(metrics)
    assert metrics["copy_rate_pixel"] == 0.0  # the plain test sees no copy among the moved images
    assert 0.3 <= metrics["copy_rate_pixel_robust"] <= 0.36  # 50 of 150 are copies (a held-out image may be flagged)
    assert {"report.html", "samples/final.png", "memorization/closest_pairs.png"} <= set(tracker.list_artifacts(run_id))

    assert main(["runs", "--dataset", "digits"]) == 0
    board = capsys.readouterr().out
    assert "planted" in board and "external" in board and run_id in board

    # The feature network: logged once per store, with its digest; another dataset version can use it.
    digest = params["quality.extractor_weights_sha256"]
    assert tags[Tag.EXTRACTOR] == digest and tags[Tag.EXTRACTOR_LOGGED] == "true"
    assert {"extractor/weights.safetensors", "extractor/meta.json"} <= set(tracker.list_artifacts(run_id))
    assert main(["audit", "--samples", str(folder), "--dataset", str(version.path), "--name", "again", "--quantise",
                 "--eval.robust_copies=none"]) == 0
    again = tracker.get_run(capsys.readouterr().out.split("MLflow run ")[1].split(";")[0])
    assert again.data.tags[Tag.EXTRACTOR] == digest and Tag.EXTRACTOR_LOGGED not in again.data.tags  # once
    other = prepare(DataConfig(source="digits", seed=7)).path  # another split: its own network would differ
    assert main(["audit", "--samples", str(folder), "--dataset", str(other), "--name", "shared", "--quantise",
                 "--eval.robust_copies=none", f"--eval.extractor_from={again.info.run_id}"]) == 0
    shared = tracker.get_run(capsys.readouterr().out.split("MLflow run ")[1].split(";")[0]).data.params
    assert shared["quality.extractor_weights_sha256"] == digest and "-imported-" in shared["quality.extractor"]


def test_audit_of_an_npz_through_the_prefect_flow_is_cached(digits, prefect_api, tmp_path, monkeypatch):
    from flows.audit import audit_flow

    version, train, test = digits
    npz = tmp_path / "samples.npz"
    np.savez(npz, images=test[:60, None], levels=17)  # the layout `genlib sample -o x.npz` writes
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    first = audit_flow(str(npz), "digits", name="held-out", overrides=["eval.robust_copies=pixel"])
    again = audit_flow(str(npz), "digits", name="held-out", overrides=["eval.robust_copies=pixel"])
    assert again["run_id"] == first["run_id"]  # a finished audit is not run twice
    params = Tracker().get_run(first["run_id"]).data.params
    assert "memorization.robust_invariances_pixel" in params and "memorization.robust_invariances_domain" not in params
    assert "copy_rate_pixel_robust" in first["metrics"] and "copy_rate_domain_robust" not in first["metrics"]
    assert first["metrics"]["copy_rate_pixel_robust"] <= 0.05  # held-out images are not copies

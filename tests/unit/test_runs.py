"""Model registration rules and run look-ups, on a real MLflow store (SQLite)."""

import pytest

from genlib.runs import model_checkpoint, run_checkpoint
from genlib.stages.summary import register_best
from genlib.tracking import Tracker


def _train_run(tracker, name):
    run_id = tracker.start_run("genlib-digits", name, tags={"genlib.stage": "train"})
    tracker.end_run(run_id)
    return run_id


def test_best_alias_moves_only_to_a_better_model_and_latest_always_moves():
    tracker = Tracker()
    first, worse, better = (_train_run(tracker, n) for n in ("a", "b", "c"))

    def register(run_id, bpd, fid):
        rows = [{"model": "vae", "family": "vae", "train_run_id": run_id, "test_iwae8_bpd": bpd},
                {"model": "gan", "family": "gan", "train_run_id": run_id, "fid_domain": fid}]
        return register_best(tracker, rows, "digits", "hash", {"name": "x"})

    assert register(first, 2.0, 40.0) == {"vae": "models:/genlib-digits-vae/1", "gan": "models:/genlib-digits-gan/1"}
    register(worse, 2.5, 50.0)
    assert tracker.version_by_alias("genlib-digits-vae", "best").run_id == first
    assert tracker.version_by_alias("genlib-digits-vae", "last").run_id == worse
    register(better, 1.5, 30.0)
    assert tracker.version_by_alias("genlib-digits-vae", "best").run_id == better
    assert tracker.version_by_alias("genlib-digits-gan", "best").tags["genlib.metric"] == "fid_domain"


def test_lookups_say_what_was_wrong():
    tracker = Tracker()
    run_id = tracker.start_run("genlib-digits", "x", tags={"genlib.stage": "reweight"})
    with pytest.raises(ValueError, match="is a 'reweight' run; pass the id of a genlib training run"):
        run_checkpoint(tracker, run_id)
    with pytest.raises(ValueError, match="not a registered-model URI"):
        model_checkpoint(tracker, "genlib-digits-vae")
    with pytest.raises(ValueError, match=r"no model version models:/missing@best .* registered models: \[\]"):
        model_checkpoint(tracker, "models:/missing@best")

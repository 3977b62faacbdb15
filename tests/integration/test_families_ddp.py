"""Every registered family (and conditional variant) trains through the one real trainer:
two Ray Train workers over gloo, DDP for gradient models, all-reduced EM statistics for the rest."""

import math

import pytest

from genlib.data.prepare import prepare
from genlib.models.base import LOG_PROB
from genlib.models.io import load_model
from genlib.presets import config_from_dict, load_config
from genlib.stages.evaluate import evaluate
from genlib.stages.train import train
from genlib.tracking import Tracker
from tests.families import ALL

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("variant", sorted(ALL))
def test_two_worker_training_and_evaluation(ray_local, variant):
    family, params = ALL[variant]
    base = load_config("digits-quick", ["train.epochs=3", "train.num_workers=2", "train.batch_size=128",
                                         "eval.n_samples=8", "eval.iwae_k=4",
                                         "eval.n_generated=0"])  # sample quality: test_pipeline
    raw = base.to_dict()
    raw["model"] = {"family": family, **params}
    cfg = config_from_dict(raw)
    dataset = prepare(cfg.data).path
    tracker = Tracker()
    trained = train(cfg, dataset, tracker)

    run = tracker.get_run(trained.run_id)
    assert run.info.status == "FINISHED" and run.data.params["model.family"] == family
    history = tracker.client.get_metric_history(trained.run_id, "val_loss")
    assert [m.step for m in history] == [0, 1, 2]
    uniform = 64 * math.log(17)  # nats per 8×8 image of 17 levels
    # Learning on held-out data across two workers. (EM's exact independent model is done after
    # one epoch, so later epochs may only stay put.)
    assert history[-1].value < min(uniform, history[0].value + 0.05)
    model = load_model(trained.checkpoint)
    assert model.config == cfg.model
    scores = evaluate(cfg, trained.checkpoint, dataset, tracker).metrics
    if LOG_PROB in model.capabilities:
        assert scores and all(0.0 < v < 5.0 for v in scores.values())  # bits/dim of 17-level digits
    else:
        assert scores == {}  # no likelihood to report (sample-quality metrics are their own stage)

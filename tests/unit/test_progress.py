"""What a person watching a training sees: a live bar on a terminal, one line per epoch in a log."""

from __future__ import annotations

import io
import time

from genlib.presets import load_config
from genlib.stages.train import EpochBar, MLflowEpochs, progress_line
from genlib.tracking import Tracker


def test_the_bar_follows_the_epochs_rank_zero_records_with_losses_speed_and_time_left(genlib_home):
    tracker, cfg = Tracker(), load_config("digits-quick", ["train.epochs=4"])
    out = io.StringIO()
    with tracker.run("genlib-digits", "train-vae") as run_id:
        tracker.log_metrics(run_id, {"val_loss": 3.0}, step=1)  # an earlier attempt got this far
        with EpochBar(tracker, run_id, cfg, every=0.05, stream=out) as bar:
            assert bar.bar.n == 1  # a resumed run's bar starts where the run is
            for epoch in (2, 3):
                tracker.log_metrics(run_id, {"train_loss": 2.0 / epoch, "val_loss": 2.5 / epoch, "val_elbo_bpd": 1.9,
                                             "images_per_second": 4321.0}, step=epoch)
                deadline = time.monotonic() + 10
                while bar.bar.n < epoch and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert bar.bar.n == epoch
    drawn = out.getvalue().split("\r")[-1]
    assert drawn.startswith("[vae] epoch 3/4 |")
    assert "train_loss 0.6667 val_loss 0.8333 val_elbo_bpd 1.9  4321 img/s" in drawn
    assert "<" in drawn  # elapsed<remaining: the time left


def test_a_log_gets_one_line_per_epoch_counted_from_one():
    cfg = load_config("digits-quick", ["train.epochs=12"])
    line = progress_line(cfg, {"epoch": 1, "train_loss": 3.25, "val_loss": 3.5, "images_per_second": 5210.4})
    assert line == "[vae] epoch 1/12  train_loss 3.25 val_loss 3.5  5210 img/s"


def test_epochs_an_interrupted_attempt_logged_are_not_logged_again(genlib_home, capfd):
    tracker, cfg = Tracker(), load_config("digits-quick", ["train.epochs=3"])
    with tracker.run("genlib-digits", "train-vae") as run_id:
        tracker.log_metrics(run_id, {"val_loss": 3.0, "train_loss": 3.1}, step=1)  # before a Ctrl-C, no checkpoint
        hooks = MLflowEpochs(tracker, run_id, lines=False)
        hooks.resumed(0)  # the relaunch starts again from scratch
        for epoch in (1, 2):
            hooks.epoch_end(None, cfg, {"epoch": epoch, "val_loss": 2.0, "train_loss": 2.1,
                                        "images_per_second": 1.0}, samples=False, stopped_early=False)
        history = tracker.client.get_metric_history(run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(1, 3.0), (2, 2.0)]
    assert "resumed_from_epoch" not in str(tracker.get_run(run_id).data.tags)
    assert "epoch" not in capfd.readouterr().out  # lines=False: the driver's bar shows progress instead

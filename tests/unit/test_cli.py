import pytest

from genlib import cli
from genlib.config import command_line_overrides
from genlib.stages.summary import format_summary


def test_overrides_accept_both_forms():
    assert command_line_overrides(["--train.epochs=3", "--model.beta", "2"]) == ["--train.epochs=3", "--model.beta=2"]
    with pytest.raises(ValueError, match="unexpected argument 'oops'"):
        command_line_overrides(["oops"])
    with pytest.raises(ValueError, match="has no value"):
        command_line_overrides(["--train.epochs"])


def test_prepare_command_and_cache_hit(capsys):
    assert cli.main(["prepare", "digits-quick"]) == 0
    assert "written" in capsys.readouterr().out
    assert cli.main(["prepare", "digits-quick"]) == 0
    assert "cache hit" in capsys.readouterr().out


def test_errors_are_one_clear_line(capsys):
    assert cli.main(["prepare", "no-such-preset"]) == 2
    assert "genlib: error: unknown preset 'no-such-preset'; known: [" in capsys.readouterr().err
    assert cli.main(["prepare", "digits-quick", "--data.sorce=x"]) == 2
    assert "unknown config key(s) ['data.sorce']" in capsys.readouterr().err


def test_presets_lists_every_preset(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "digits-quick" in out and "cifar10" in out


def test_summary_table_lists_metrics():
    summary = {"preset": "p", "experiment": "e", "parent_run_id": "r", "tracking_uri": "sqlite:///x",
               "rows": [{"model": "vae", "family": "vae", "dataset": "digits-abc", "selected_epoch": 3,
                         "test_elbo_bpd": 2.1, "test_iwae5_bpd": 2.0},
                        {"model": "pixelcnn", "family": "pixelcnn", "dataset": "digits-abc",
                         "selected_epoch": 5, "test_bpd": 1.8},
                        {"model": "gan", "family": "gan", "dataset": "digits-abc", "selected_epoch": 7}]}
    text = format_summary(summary)
    lines = text.splitlines()
    header = next(line for line in lines if "test_bpd" in line)
    assert header.split() == ["model", "family", "epoch", "test_bpd", "test_elbo_bpd", "test_iwae5_bpd"]
    assert any(line.split() == ["vae", "vae", "3", "-", "2.1000", "2.0000"] for line in lines)
    assert any(line.split() == ["pixelcnn", "pixelcnn", "5", "1.8000", "-", "-"] for line in lines)
    assert any(line.split() == ["gan", "gan", "7", "-", "-", "-"] for line in lines)
    assert "(no likelihood: gan;" in text
    assert "genlib ui" in text


def test_prefect_retries_only_transient_failures():
    from prefect.states import Failed

    from flows.pipeline import _transient

    assert _transient(None, None, Failed(data=ConnectionResetError("peer reset")))
    assert _transient(None, None, Failed(data=OSError("disk hiccup")))
    assert not _transient(None, None, Failed(data=ValueError("corrupt archive")))
    assert not _transient(None, None, Failed(data=TypeError("wrong type")))

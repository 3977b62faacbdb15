"""Every config value is checked before any engine starts: a rule per field, numbers as people
type them, and the CLI refusing bad input with the key named and nothing created."""

from __future__ import annotations

import dataclasses

import pytest

from genlib import cli
from genlib.config import (
    ANY,
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    ReweightConfig,
    TrackingConfig,
    TrainConfig,
    field_rule,
)
from genlib.models.base import MODELS
from genlib.presets import config_from_dict, load_config

SECTIONS = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig, "reweight": ReweightConfig,
            "tracking": TrackingConfig}
FAMILIES = {family: MODELS.get(family).config_class for family in MODELS.names()}


def _every_field():
    """(dotted key, field, the class it belongs to, how to build a raw config with it set)."""
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            yield f"{section}.{f.name}", f, cls, (lambda v, s=section, n=f.name: {s: {n: v}})
    for family, cls in FAMILIES.items():
        for f in dataclasses.fields(cls):
            yield (f"model.{f.name}", f, cls,
                   lambda v, fam=family, n=f.name: {"model": {"family": fam, **({n: v} if n != "family" else {})}})


def test_every_field_of_every_section_and_family_declares_a_rule():
    classes = [Config, ModelConfig, *SECTIONS.values(), *FAMILIES.values()]
    missing = [f"{cls.__name__}.{f.name}" for cls in classes for f in dataclasses.fields(cls) if field_rule(f) is None]
    assert not missing, f"fields without a declared check (use checked(default, rule), or ANY): {missing}"


def test_every_defaults_pass_their_own_rules():
    for cls in [Config, *SECTIONS.values(), *FAMILIES.values()]:
        cls()  # the rules run on construction


@pytest.mark.parametrize("key,f,cls,raw", [case for case in _every_field()
                                           if field_rule(case[1]) is not ANY and case[1].name != "family"],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_each_ruled_field_refuses_its_counterexample_naming_the_key(key, f, cls, raw):
    rule = field_rule(f)
    assert rule.bad is not None and not rule.test(rule.bad)
    with pytest.raises(ValueError) as err:
        config_from_dict(raw(rule.bad))
    message = str(err.value)  # the value as parsed: 0 typed for a float field reads 0.0
    assert message.startswith(f"{key}=") and message.endswith(f" is not allowed; expected {rule.allowed}"), message


@pytest.mark.parametrize("typed", ["1e-3", "1E-3", ".001", "0.001", "1.e-3"])
def test_floats_parse_as_people_type_them(typed):
    assert load_config("digits-quick", [f"train.lr={typed}"]).train.lr == pytest.approx(1e-3)
    assert config_from_dict({"train": {"lr": typed}}).train.lr == pytest.approx(1e-3)


def test_other_ways_to_write_numbers():
    assert load_config("digits-quick", ["train.lr=5."]).train.lr == 5.0
    assert load_config("digits-quick", ["reweight.bandwidth=2e-1"]).reweight.bandwidth == pytest.approx(0.2)
    assert load_config("digits-quick", ["reweight.bandwidth=scott"]).reweight.bandwidth == "scott"
    with pytest.raises(TypeError, match=r"train.epochs: expected int, got '1e3'"):
        load_config("digits-quick", ["train.epochs=1e3"])


def test_consistency_rules_name_the_key_to_change():
    with pytest.raises(ValueError, match=r"train.batch_size=2 is not allowed; expected at least one image per "
                                         r"worker: ≥ num_workers \(4\)"):
        load_config("digits-quick", ["train.batch_size=2", "train.num_workers=4"])
    with pytest.raises(ValueError, match=r"data.test_fraction=0.5 is not allowed; expected val_fraction \+ "
                                         r"test_fraction < 1 \(val_fraction is 0.6\)"):
        load_config("digits-quick", ["data.val_fraction=0.6", "data.test_fraction=0.5"])


def test_changing_the_family_drops_the_preset_model_keys_it_does_not_have():
    cfg = load_config("digits", ["model.family=pixelcnn"])  # the preset's model is a VAE with latent_dim
    assert cfg.model.family == "pixelcnn" and cfg.model.hidden == 32  # a shared key keeps the preset's value
    assert load_config("digits", ["model.family=gan"]).model.latent_dim == 16
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['model.latent_dim'\]"):
        load_config("digits", ["model.family=pixelcnn", "model.latent_dim=8"])  # typed by the user: kept, refused


# ------------------------------------------------------------------ the CLI: refused, nothing created

BAD_COMMANDS = [
    (["train", "digits-quick", "--train.batch_size=0"], "train.batch_size=0 is not allowed; expected a number ≥ 1"),
    (["train", "digits-quick", "--train.batch_size=-5"], "train.batch_size=-5 is not allowed"),
    (["train", "digits-quick", "--train.lr=0"], "train.lr=0.0 is not allowed; expected a finite number > 0"),
    (["train", "digits-quick", "--train.lr=-0.001"], "train.lr=-0.001 is not allowed"),
    (["train", "digits-quick", "--model.latent_dim=0"], "model.latent_dim=0 is not allowed; expected a number ≥ 1"),
    (["train", "digits-quick", "--eval.n_generated=-1"], "eval.n_generated=-1 is not allowed; expected a number ≥ 0"),
    (["train", "digits-quick", "--train.checkpoint_every=0"], "train.checkpoint_every=0 is not allowed"),
    (["train", "digits-quick", "--train.epochs=0"], "train.epochs=0 is not allowed; expected a number ≥ 1"),
    (["train", "digits-quick", "--train.epochs=-1"], "train.epochs=-1 is not allowed"),
    (["train", "digits-quick", "--train.num_workers=0"], "train.num_workers=0 is not allowed; expected a number ≥ 1"),
    (["pipeline", "digits-quick", "--eval.iwae_k=0"], "eval.iwae_k=0 is not allowed; expected a number ≥ 1"),
    (["pipeline", "digits-quick", "--eval.extractor=inceptoin"],
     "eval.extractor='inceptoin' is not a known feature extractor; known: ['domain', 'inception-v3-fid']"),
    (["pipeline", "digits-quick", "--eval.device=cuda"],
     "eval.device=cuda is not allowed on this machine: torch sees no CUDA GPU"),
    (["pipeline", "digits-quick", "--eval.workers=64"], "eval.workers=64 workers of 1 CPU each cannot be placed on "),
    (["pipeline", "digits-quick", "--eval.gpus_per_worker=1"],
     "eval.gpus_per_worker=1.0 is not allowed; expected 0 with eval.workers=1 (one process uses eval.device)"),
    (["pipeline", "digits-quick", "--eval.workers=2", "--eval.knn=ivf"],
     "eval.knn='ivf' is not allowed; expected 'exact' with eval.workers ≥ 2"),
    (["sample", "--run", "0123abcd", "-n", "0", "-o", "x.png"], "-n is the number of samples to draw: at least 1, got 0"),
    (["sample", "--run", "0123abcd", "-n", "-1", "-o", "x.png"], "at least 1, got -1"),
]


@pytest.mark.parametrize("argv,message", BAD_COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_input_is_refused_before_anything_starts(argv, message, genlib_home, capsys, monkeypatch, tmp_path):
    import ray
    import torch

    def no_ray(*args, **kwargs):
        raise AssertionError("ray.init was called for a command that should have been refused")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU, like CI's
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("genlib: error: ") and message in err, err
    assert not genlib_home.exists() or not any(genlib_home.iterdir()), list(genlib_home.rglob("*"))
    assert not (tmp_path / "x.png").exists()


def test_resources_are_checked_against_this_machine_before_ray_starts(monkeypatch):
    import ray

    from genlib.train import launch

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(launch, "_machine_resources", lambda: {"CPU": 4.0, "GPU": 0.0})
    launch.check_resources(TrainConfig(num_workers=4))
    with pytest.raises(ValueError, match=r"train.num_workers=1 workers of 1 CPU \+ 1 GPU each cannot be placed on "
                                         r"this machine \(genlib's local Ray instance\): it has 4 CPU, 0 GPU in all"):
        launch.check_resources(TrainConfig(gpus_per_worker=1))
    with pytest.raises(ValueError, match=r"room for 2 such worker\(s\)"):
        launch.check_resources(TrainConfig(num_workers=3, cpus_per_worker=2, batch_size=8))
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a cluster to join: checked once joined
    launch.check_resources(TrainConfig(gpus_per_worker=1))


def test_a_dashboard_setting_other_than_0_or_1_is_refused_before_ray_starts(monkeypatch):
    import os

    import ray

    from genlib.train import launch

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray was started"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv(launch.DASHBOARD_ENV, "yes")
    with pytest.raises(ValueError, match=r"GENLIB_RAY_DASHBOARD='yes': expected 1 \(start Ray's dashboard"):
        launch.ensure_ray()
    assert "RAY_ADDRESS" not in os.environ  # nothing set up for an instance that never started
    for value, wanted in (("1", True), ("0", False), (" 1 ", True)):
        monkeypatch.setenv(launch.DASHBOARD_ENV, value)
        assert launch.dashboard_wanted() is wanted
    monkeypatch.delenv(launch.DASHBOARD_ENV)
    assert launch.dashboard_wanted() is False


def test_eval_device_auto_follows_torch_and_cuda_without_a_gpu_is_refused(monkeypatch):
    import torch

    from genlib.evaluate.extractor import eval_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert eval_device("auto") == torch.device("cpu") == eval_device("cpu")
    with pytest.raises(ValueError, match="eval.device=cuda is not allowed on this machine: torch sees no CUDA GPU"):
        eval_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert eval_device("auto") == torch.device("cuda") == eval_device("cuda")


@pytest.mark.parametrize("overrides,message", [
    (["--model={family: progan}", "--data.image_size=12"],
     "progan grows from 4×4 by doubling: it needs square images with a side of 4·2^k (4, 8, 16, 32, …), got 12×12"),
    (["--model={family: biggan, attention_resolution: 16}"],
     "model.attention_resolution=16: at 8×8 the generator passes [8] and the discriminator [4]"),
])
def test_a_model_that_cannot_take_the_data_is_refused_before_ray_or_any_run(overrides, message, genlib_home, capsys,
                                                                           monkeypatch):
    import ray

    from genlib.tracking import Tracker

    def no_ray(*args, **kwargs):
        raise AssertionError("ray.init was called for a model the data does not fit")

    monkeypatch.setattr(ray, "init", no_ray)
    assert cli.main(["train", "digits-quick", "--models=[]", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("genlib: error: ") and message in err, err
    experiment = Tracker().client.get_experiment_by_name("genlib-digits")
    assert experiment is None or not Tracker().client.search_runs([experiment.experiment_id])  # no run opened

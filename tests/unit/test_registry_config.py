import pytest

from genlib.config import Config, apply_override, preset_names
from genlib.models.vae import VAEConfig
from genlib.presets import config_from_dict, load_config
from genlib.registry import Registry


def test_registry_rejects_unknown_and_duplicates():
    reg: Registry[int] = Registry("widget")
    reg.register("a")(1)
    assert reg.get("a") == 1 and "a" in reg
    with pytest.raises(ValueError, match=r"unknown widget 'b'; known: \['a'\]"):
        reg.get("b")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(2)
    with pytest.raises(ValueError, match="lower-case"):
        reg.register("Bad Name")


def test_registry_check_runs_on_entry():
    def positive(x):
        if x <= 0:
            raise TypeError("must be positive")

    reg: Registry[int] = Registry("number", check=positive)
    with pytest.raises(TypeError, match="positive"):
        reg.register("neg")(-1)
    assert reg.names() == []


def test_every_preset_loads():
    assert {"digits-quick", "digits", "mnist", "cifar10"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(name)
        assert cfg.name == name and cfg.pipeline_models()


def test_pipeline_models_list():
    cfg = load_config("digits")
    assert isinstance(cfg.model, VAEConfig)
    labels = [m.label for m in cfg.pipeline_models()]
    assert {"vae", "pixelcnn", "gated-pixelcnn", "gated-pixelcnn-cond", "mixture", "categorical"} <= set(labels)
    one = load_config("digits", ["models=[{family: categorical}]"])
    assert [m.family for m in one.pipeline_models()] == ["categorical"]
    assert load_config("digits", ["models=[]"]).pipeline_models() == (cfg.model,)
    with pytest.raises(ValueError, match="labels must be unique"):
        load_config("digits", ["models=[{family: vae}, {family: vae}]"])
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['models\[0\].hidden'\]"):
        load_config("digits", ["models=[{family: categorical, hidden: 3}]"])


def test_overrides_are_typed_and_nested():
    cfg = load_config("digits-quick", ["--train.epochs=3", "train.lr=0.01", "model.beta=4", "data.path="])
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01
    assert cfg.model.beta == 4.0 and isinstance(cfg.model.beta, float)
    assert cfg.data.path is None


def test_unknown_keys_list_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['train.epoch'\].*'epochs'"):
        load_config("digits-quick", ["train.epoch=3"])
    with pytest.raises(ValueError, match=r"\['model.latent'\].*'latent_dim'"):
        config_from_dict({"model": {"family": "vae", "latent": 3}})
    with pytest.raises(ValueError, match=r"unknown model family 'gpt'; known: \["):
        config_from_dict({"model": {"family": "gpt"}})


def test_wrong_types_are_errors():
    with pytest.raises(TypeError, match=r"train.epochs: expected int, got 'many'"):
        load_config("digits-quick", ["train.epochs=many"])
    with pytest.raises(TypeError, match=r"train.epochs: expected int, got True"):
        config_from_dict({"train": {"epochs": True}})
    with pytest.raises(TypeError, match="expected a mapping"):
        config_from_dict({"train": 3})


def test_bad_override_syntax_and_presets():
    with pytest.raises(ValueError, match="section.key=value"):
        apply_override({}, "train.epochs")
    with pytest.raises(ValueError, match=r"unknown preset 'nope'; known: \["):
        load_config("nope")


def test_flat_params_round_trip():
    cfg = load_config("digits")
    flat = cfg.flat()
    assert flat["train.epochs"] == cfg.train.epochs
    assert flat["model.family"] == "vae" and flat["model.latent_dim"] == cfg.model.latent_dim
    assert config_from_dict(cfg.to_dict()) == cfg
    assert Config().model.family == "vae"

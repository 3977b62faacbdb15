"""Typed, frozen run configuration: YAML presets, dotted overrides, strict validation.

A run's config has six sections — data, model, train, eval, reweight, tracking. Each is a frozen
dataclass with one comment per field. The model section is the chosen family's own config class
(``VAEConfig`` lives next to the VAE): this module knows no family, so ``parse_config`` takes the
lookup from the layer that builds models (``genlib.presets.load_config`` and
``genlib.presets.config_from_dict`` pass the model registry's). Unknown keys and wrong types are
errors that list what would be right.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR_ENV = "GENLIB_CONFIGS"


@dataclass(frozen=True)
class DataConfig:
    source: str = "digits"  # registered dataset source (genlib.data.sources.SOURCES)
    path: str | None = None  # local file/folder for sources that read one; downloads are cached here
    val_fraction: float = 0.1  # share of all images held out for checkpoint selection
    test_fraction: float = 0.2  # share held out for scoring; ignored when the source ships a test split
    seed: int = 0  # seed of the stratified split
    image_size: int | None = None  # resize folder images to this square size; None keeps sizes (mixed sizes are errors)
    channels: int | None = None  # folder images: 1 (grey) or 3 (RGB); None infers from the files
    levels: int | None = None  # npz arrays: discrete values per channel; None means 256
    rare_class: int | None = None  # labelled data: thin this class in the train split only (an induced imbalance)
    rare_keep: float = 1.0  # share of rare_class's train images kept (seeded; val and test stay whole)


@dataclass(frozen=True)
class ModelConfig:
    family: str = "vae"  # registered model family (genlib.models.MODELS); its config class adds fields
    name: str | None = None  # label in run names and tables; default the family name

    @property
    def label(self) -> str:
        return self.name or self.family


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100  # passes over the train split
    batch_size: int = 128  # global batch; each of num_workers workers takes batch_size / num_workers
    lr: float = 1e-3  # Adam learning rate
    seed: int = 0  # seeds model init, sampling order and sample grids
    num_workers: int = 1  # Ray Train workers (DDP processes)
    cpus_per_worker: int = 1  # CPUs Ray reserves for each worker
    gpus_per_worker: float = 0.0  # GPUs per worker; > 0 trains on CUDA with NCCL
    max_failures: int = 2  # worker-group restarts from the last checkpoint before the run fails
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always checkpoints)
    sample_every: int = 10  # epochs between sample-grid images logged to MLflow
    select_by: str = "val_loss"  # metric that picks the checkpoint to evaluate ("val_loss" or "last")
    patience: int | None = None  # stop after this many epochs without a lower val_loss; null: run every epoch
    storage_path: str | None = None  # Ray Train storage (path or URI); default GENLIB_HOME/ray_results
    precision: str = "fp32"  # "fp32", or "bf16": training steps autocast to bfloat16 (for GPUs; CPUs run it slowly)
    weights: str | None = None  # per-sample sampling weights: a weights .parquet or the MLflow run id of a reweight run


@dataclass(frozen=True)
class EvalConfig:
    iwae_k: int = 100  # importance samples of the IWAE bound for models with a likelihood bound
    batch_size: int = 128  # test images scored at once
    n_samples: int = 64  # images in the final sample grid
    n_generated: int = 1000  # samples scored for quality and memorization; 0 skips those metrics
    extractor: str = "domain"  # registered feature extractor (genlib.evaluate.features.EXTRACTORS)
    copying_cells: int = 5  # k-means cells of the data-copying test (each needs 20 test samples)
    knn: str = "exact"  # generated → train neighbour search: "exact", or "ivf" (approximate) for very large train sets
    knn_probes: int = 8  # "ivf": k-means cells searched per query (of about √N); recall is logged


# DB-VAE reweighting (genlib.evaluate.reweight): per-dimension histograms combined as in the MIT 6.S191
# lab ("max") or the paper ("product"), or a joint density ("gmm", "kde").
METHODS = ("max", "product", "gmm", "kde")
DEFAULT_ALPHA = {"max": 1e-3, "product": 1e-3, "gmm": 0.0, "kde": 0.0}


@dataclass(frozen=True)
class ReweightConfig:
    method: str = "max"  # "max" (the lab's combination), "product" (the paper's), "gmm" or "kde" (joint densities)
    bins: int = 10  # histogram bins per latent dimension (10 in the lab)
    alpha: float | None = None  # smoothing added to the density; None: DEFAULT_ALPHA[method] (1e-3 as in the lab)
    n_components: int = 10  # "gmm": mixture components (full covariances); no published default
    bandwidth: float | str = "scott"  # "kde": Gaussian kernel width, a number or "scott"/"silverman"
    seed: int = 0  # "gmm": k-means initialisation seed
    encoder: str = "vae"  # pipeline: label of the trained model whose latent means are weighted
    retrain: tuple[str, ...] = ()  # pipeline: labels of models retrained with the weights; empty: no reweight stage

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown reweighting method {self.method!r}; known: {list(METHODS)}")
        if self.bins < 1 or self.n_components < 1:
            raise ValueError(f"bins and n_components must be ≥ 1, got {self.bins} and {self.n_components}")
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite number ≥ 0 (or None for the method's default), "
                             f"got {self.alpha}")
        if isinstance(self.bandwidth, str) and self.bandwidth not in ("scott", "silverman"):
            raise ValueError(f"bandwidth must be a positive number, 'scott' or 'silverman', got {self.bandwidth!r}")
        if not isinstance(self.bandwidth, str) and not self.bandwidth > 0:
            raise ValueError(f"bandwidth must be positive, got {self.bandwidth}")

    @property
    def smoothing(self) -> float:
        """The α actually used."""
        return DEFAULT_ALPHA[self.method] if self.alpha is None else self.alpha

    def params(self) -> dict[str, Any]:
        """The fields with α resolved: what to log and to store with the weights."""
        density = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("encoder", "retrain")}
        return {**density, "alpha": self.smoothing}


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str | None = None  # MLflow experiment; default "genlib-<dataset source>"
    tracking_uri: str | None = None  # default $MLFLOW_TRACKING_URI, else SQLite under GENLIB_HOME
    run_name: str | None = None  # parent run name; default the preset name


@dataclass(frozen=True)
class Config:
    name: str = "custom"  # preset name, used for run names
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    models: tuple[ModelConfig, ...] = ()  # models the pipeline trains and compares; empty: just `model`
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    reweight: ReweightConfig = field(default_factory=ReweightConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"train.epochs": 100, ...}``: the form logged as MLflow params."""
        return _flatten(self.to_dict())

    def replace(self, **sections: Any) -> Config:
        return dataclasses.replace(self, **sections)

    def pipeline_models(self) -> tuple[ModelConfig, ...]:
        return self.models or (self.model,)


# --------------------------------------------------------------------------- parsing


ModelSections = Callable[[str], type[ModelConfig]]  # family name → its config class


def parse_config(raw: dict[str, Any], model_class: ModelSections) -> Config:
    """Build a validated Config from plain data (a parsed YAML preset, say); ``model_class`` gives
    the config class of a family named in a model section."""
    raw = dict(raw)
    model = parse_model(raw.pop("model", None) or {}, model_class, "model")
    models_raw = raw.pop("models", None) or []
    if not isinstance(models_raw, (list, tuple)):
        raise TypeError(f"models: expected a list of model sections, got {models_raw!r}")
    models = tuple(parse_model(m, model_class, f"models[{i}]") for i, m in enumerate(models_raw))
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"models: labels must be unique (set `name` to tell variants apart), got {labels}")
    return dataclasses.replace(_build(Config, raw, ""), model=model, models=models)


def parse_model(raw: Any, model_class: ModelSections, where: str = "model") -> ModelConfig:
    """One model section, as the config class of the family it names."""
    if not isinstance(raw, dict):
        raise TypeError(f"{where}: expected a mapping with a `family`, got {raw!r}")
    return _build(model_class(raw.get("family", ModelConfig.family)), raw, where)


def read_preset(preset: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """The raw data of a preset, by name (``configs/<name>.yaml``) or path, with ``key.sub=value``
    overrides applied; ``parse_config`` validates it."""
    path = preset_path(preset)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a preset is a mapping of sections, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    for item in overrides or []:
        apply_override(raw, item)
    return raw


def command_line_overrides(args: list[str]) -> list[str]:
    """``--train.epochs=3`` and ``--train.epochs 3`` from a command line, as ``--train.epochs=3`` items."""
    out, i = [], 0
    while i < len(args):
        item = args[i]
        if not item.startswith("--"):
            raise ValueError(f"unexpected argument {item!r}; overrides look like --train.epochs=3")
        if "=" not in item:
            if i + 1 >= len(args):
                raise ValueError(f"override {item!r} has no value")
            item, i = f"{item}={args[i + 1]}", i + 1
        out.append(item)
        i += 1
    return out


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply ``train.epochs=3`` (a leading ``--`` is allowed) to raw config data in place."""
    key, sep, value = item.removeprefix("--").partition("=")
    if not sep or not key:
        raise ValueError(f"override {item!r} is not of the form section.key=value (e.g. train.epochs=3)")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[leaf] = yaml.safe_load(value) if value.strip() else None


def preset_dir() -> Path:
    env = os.environ.get(CONFIG_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parent.parent / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def preset_path(preset: str | os.PathLike) -> Path:
    path = Path(preset)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        return path
    path = preset_dir() / f"{preset}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {str(preset)!r}; known: {preset_names()} (in {preset_dir()})")
    return path


def _build(cls: type, raw: Any, where: str) -> Any:
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise TypeError(f"{where or 'config'}: expected a mapping for {cls.__name__}, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(
            f"unknown config key(s) {[prefix + k for k in unknown]}; "
            f"known keys of {where or 'the config'}: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in raw.items():
        path = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, path)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, path)
            except TypeError:
                continue
        raise TypeError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{path}: expected a list, got {value!r}")
        (item_type, *_rest) = typing.get_args(tp) or (Any,)
        return tuple(_coerce(item_type, v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise TypeError(f"{path}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return value


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat

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
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR_ENV = "GENLIB_CONFIGS"


# --------------------------------------------------------------------------- field rules
#
# Every field of every section (and of every family's model section) declares what values it
# takes, next to its default: ``epochs: int = checked(100, at_least(1))``. The rules run when a
# section is built — by ``parse_config`` before any engine starts, and by any direct
# construction — and an error names the key, the value and what is allowed.
# ``tests/unit/test_config_checks.py`` walks every field and fails on one without a rule.

CHECK = "genlib.check"  # dataclass field metadata key holding the field's Rule


class ConfigValueError(ValueError):
    """A value outside what its field allows. ``key`` is the field's name, or dotted path once
    ``parse_config`` knows the section."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed; expected {allowed}")

    def at(self, where: str) -> ConfigValueError:
        return ConfigValueError(f"{where}.{self.key}" if where else self.key, self.value, self.allowed)


@dataclass(frozen=True)
class Rule:
    """A predicate over one field's value and the words that say what it allows. None passes
    every rule: whether a field may be None is its type's business."""
    test: Callable[[Any], bool]
    allowed: str
    bad: Any = None  # a value the rule refuses (None: it refuses nothing); the tests try it on every field

    def check(self, key: str, value: Any) -> None:
        if value is None:
            return
        try:
            ok = bool(self.test(value))
        except TypeError:
            ok = False
        if not ok:
            raise ConfigValueError(key, value, self.allowed)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def at_least(low: float) -> Rule:
    return Rule(lambda v: _number(v) and v >= low, f"a number ≥ {low}", low - 1)


def positive() -> Rule:
    return Rule(lambda v: _number(v) and v > 0, "a finite number > 0", 0)


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Rule:
    def test(v):
        return _number(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    return Rule(test, f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}", high + 1)


def one_of(*choices: Any) -> Rule:
    numeric = all(_number(c) for c in choices)
    return Rule(lambda v: v in choices, f"one of {list(choices)}", max(choices) + 1 if numeric else "none-of-these")


def odd_at_least(low: int) -> Rule:
    return Rule(lambda v: _number(v) and v >= low and v % 2 == 1, f"an odd number ≥ {low}", low + 1)


def name() -> Rule:
    """A registered name (source, family, extractor): checked against its registry by the layer
    that owns it; here only that it is a plain lower-case word."""
    return Rule(lambda v: isinstance(v, str) and v != "" and v == v.strip().lower(),
                "a registered name (lower-case, no spaces)", "Not A Name")


ANY = Rule(lambda v: True, "any value")  # the explicit "no constraint" marker


def checked(default: Any, rule: Rule) -> Any:
    """A dataclass field with its default and its rule."""
    return field(default=default, metadata={CHECK: rule})


def section(cls: type) -> Any:
    """A field holding a config section, which checks its own fields."""
    return field(default_factory=cls, metadata={CHECK: ANY})


def field_rule(f: dataclasses.Field) -> Rule | None:
    return f.metadata.get(CHECK)


class Checked:
    """Mixin of every config section: applies each field's rule, then the section's ``check``
    (rules across fields), whenever a section is built."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            rule = field_rule(f)
            if rule is not None:
                rule.check(f.name, getattr(self, f.name))
        self.check()

    def check(self) -> None:
        """Rules that relate several fields; raise ``ConfigValueError`` naming the field to change."""


STYLE_NAMES = ("thick", "slant")  # genlib.data.styles.STYLES; a test keeps them equal


@dataclass(frozen=True)
class DataConfig(Checked):
    source: str = checked("digits", name())  # registered dataset source (genlib.data.sources.SOURCES)
    path: str | None = checked(None, ANY)  # local file/folder for sources that read one; downloads are cached here
    # share of all images held out for checkpoint selection
    val_fraction: float = checked(0.1, between(0, 1, low_open=True, high_open=True))
    # share held out for scoring; ignored when the source ships a test split
    test_fraction: float = checked(0.2, between(0, 1, low_open=True, high_open=True))
    seed: int = checked(0, at_least(0))  # seed of the stratified split
    # resize folder images (or upsample digits) to this square size; None keeps sizes (mixed sizes are errors)
    image_size: int | None = checked(None, at_least(2))
    channels: int | None = checked(None, one_of(1, 3))  # folder images: 1 (grey) or 3 (RGB); None infers from the files
    # discrete values per channel: of npz arrays (None means 256), or digits requantised (None: its 17)
    levels: int | None = checked(None, between(2, 256))
    # labelled data: thin this class in the train split only (an induced imbalance)
    rare_class: int | None = checked(None, at_least(0))
    # share of rare_class's train images kept (seeded; val and test stay whole)
    rare_keep: float = checked(1.0, between(0, 1, low_open=True))
    # a style (genlib.data.styles: "thick" strokes, "slant"ed) drawn on part of every class's images;
    # with style_class, a rare combination of one class and the style
    style: str | None = checked(None, one_of(None, *STYLE_NAMES))
    style_share: float = checked(0.02, between(0, 1))  # share of each class's train images in the style
    # this class's train images take the style at style_class_share instead: with style_share high and
    # style_class_share low, that class in the style is a rare combination
    style_class: int | None = checked(None, at_least(0))
    style_class_share: float = checked(0.15, between(0, 1))
    # share of each class's val and test images in the style (both kinds must be there to measure the rare subgroup)
    style_eval_share: float = checked(0.5, between(0, 1, low_open=True, high_open=True))
    # two-domain sources: exchange domains A and B (a model translates A → B; the pix2pix facades set has the
    # photo on the left, A, and its labels on the right)
    swap_domains: bool = checked(False, ANY)

    def check(self) -> None:
        if self.rare_class is not None and self.style is not None:
            raise ConfigValueError("style", self.style,
                                   f"no style together with rare_class={self.rare_class} (one rarity per dataset); "
                                   f"for a rare combination of a class and a style set style_class instead")
        if self.style_class is not None and self.style is None:
            raise ConfigValueError("style_class", self.style_class, "a style to combine with; set data.style too")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigValueError("test_fraction", self.test_fraction,
                                   f"val_fraction + test_fraction < 1 (val_fraction is {self.val_fraction}), "
                                   f"so that images are left to train on")


@dataclass(frozen=True)
class ModelConfig(Checked):
    family: str = checked("vae", name())  # registered model family (genlib.models.MODELS); its config class adds fields
    name: str | None = checked(None, ANY)  # label in run names and tables; default the family name

    @property
    def label(self) -> str:
        return self.name or self.family


SELECT_BY = ("val_loss", "last")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig(Checked):
    epochs: int = checked(100, at_least(1))  # passes over the train split
    # global batch; each of num_workers workers takes batch_size / num_workers
    batch_size: int = checked(128, at_least(1))
    lr: float = checked(1e-3, positive())  # Adam learning rate
    seed: int = checked(0, at_least(0))  # seeds model init, sampling order and sample grids
    num_workers: int = checked(1, at_least(1))  # Ray Train workers (DDP processes)
    cpus_per_worker: int = checked(1, at_least(1))  # CPUs Ray reserves for each worker
    gpus_per_worker: float = checked(0.0, at_least(0))  # GPUs per worker; > 0 trains on CUDA with NCCL
    max_failures: int = checked(2, at_least(0))  # worker-group restarts from the last checkpoint before the run fails
    checkpoint_every: int = checked(1, at_least(1))  # epochs between checkpoints (the last epoch always checkpoints)
    sample_every: int = checked(10, at_least(1))  # epochs between sample-grid images logged to MLflow
    # epochs between memorization checks of eval_samples samples (copy rates, data-copying z) logged as
    # curves over training, to see when memorization starts; null: off
    eval_every: int | None = checked(None, at_least(1))
    eval_samples: int = checked(200, at_least(20))  # samples per check (the data-copying test needs ≥ 20 per cell)
    select_by: str = checked("val_loss", one_of(*SELECT_BY))  # metric that picks the checkpoint to evaluate
    # stop after this many epochs without a lower val_loss; null: run every epoch
    patience: int | None = checked(None, at_least(1))
    storage_path: str | None = checked(None, ANY)  # Ray Train storage (path or URI); default GENLIB_HOME/ray_results
    # "bf16": training steps autocast to bfloat16 (for GPUs; CPUs run it slowly)
    precision: str = checked("fp32", one_of(*PRECISIONS))
    # per-sample sampling weights: a weights .parquet or the MLflow run id of a reweight run
    weights: str | None = checked(None, ANY)
    # adaptive reweighting (DB-VAE): every this many epochs, recompute the sampling weights from the model being
    # trained (its latent means, weighted as reweight.* says; a family that declares encode); null: off
    reweight_every: int | None = checked(None, at_least(1))

    def check(self) -> None:
        if self.batch_size < self.num_workers:
            raise ConfigValueError("batch_size", self.batch_size,
                                   f"at least one image per worker: ≥ num_workers ({self.num_workers})")


@dataclass(frozen=True)
class EvalConfig(Checked):
    iwae_k: int = checked(100, at_least(1))  # importance samples of the IWAE bound for models with a likelihood bound
    batch_size: int = checked(128, at_least(1))  # test images scored at once; images per feature-extraction batch
    n_samples: int = checked(64, at_least(1))  # images in the final sample grid
    n_generated: int = checked(1000, at_least(0))  # samples scored for quality and memorization; 0 skips those metrics
    extractor: str = checked("domain", name())  # registered feature extractor (genlib.evaluate.features.EXTRACTORS)
    # the domain network of another evaluation, so that two stores compare like with like: the MLflow run id of
    # an evaluation or audit in this store, or a folder (or its weights.safetensors) exported from one; null:
    # this dataset's own network
    extractor_from: str | None = checked(None, ANY)
    copying_cells: int = checked(5, at_least(1))  # k-means cells of the data-copying test (each needs 20 test samples)
    # generated → train neighbour search; "ivf" (approximate) for very large train sets
    knn: str = checked("exact", one_of("exact", "ivf"))
    knn_probes: int = checked(8, at_least(1))  # "ivf": k-means cells searched per query (of about √N); recall is logged
    # copies found through shifts, flips, zooms and intensity changes (genlib.evaluate.copies), in pixel
    # space only or in the extractor's feature space too (each query's versions pass through it);
    # "none": the plain copy rate only ("none", not "off": YAML reads off as false)
    robust_copies: str = checked("pixel+features", one_of("none", "pixel", "pixel+features"))
    # where sampling, features and neighbour search run: "auto" (a CUDA GPU when there is one), "cpu" or "cuda"
    device: str = checked("auto", one_of("auto", "cpu", "cuda"))
    # the truncation curve of models that offer the trick: FID, precision and recall of eval.n_generated
    # samples at each ψ (ψ = 1, no truncation, is the evaluation itself); empty: no curve
    truncation: tuple[float, ...] = checked((0.7, 0.5, 0.3), Rule(
        lambda v: all(_number(p) and 0 <= p < 1 for p in v), "a list of ψ in [0, 1)", (1.5,)))
    # Ray workers that sample, extract features (a Ray Data actor pool) and search neighbours (Ray tasks
    # over shards), on local Ray or the cluster RAY_ADDRESS names (genlib.evaluate.workers); 1: all in
    # this process. The numbers do not depend on it.
    workers: int = checked(1, at_least(1))
    gpus_per_worker: float = checked(0.0, at_least(0))  # GPUs each of the eval.workers Ray workers takes

    def check(self) -> None:
        if self.gpus_per_worker > 0 and self.workers == 1:
            raise ConfigValueError("gpus_per_worker", self.gpus_per_worker,
                                   "0 with eval.workers=1 (one process uses eval.device); or set eval.workers ≥ 2")
        if self.knn == "ivf" and self.workers > 1:
            raise ConfigValueError("knn", self.knn, "'exact' with eval.workers ≥ 2: the IVF index searches in one "
                                   "process, the exact search is what is spread over the workers")


# DB-VAE reweighting (genlib.evaluate.reweight). Rarity signals: per-dimension latent histograms combined
# as in the MIT 6.S191 lab ("max") or the paper ("product"); joint latent densities ("gmm", "kde", "knn":
# the distance to the k-th nearest neighbour); the per-sample negative ELBO of the images ("elbo"). A method
# is one signal or several joined by "+" ("knn+elbo"), each standardised before they are summed.
SIGNALS = ("max", "product", "gmm", "kde", "knn", "elbo")
METHODS = SIGNALS  # the single-signal methods; any "+"-combination of them is a method too
DEFAULT_ALPHA = {"max": 1e-3, "product": 1e-3, "gmm": 0.0, "kde": 0.0, "knn": 0.0, "elbo": 0.0}
LATENT_SCALINGS = ("raw", "standardise", "whiten")
_BANDWIDTH = Rule(lambda v: v in ("scott", "silverman") or (_number(v) and v > 0),
                  "a number > 0, 'scott' or 'silverman'", "wide")


def _is_method(v: Any) -> bool:
    parts = v.split("+") if isinstance(v, str) else []
    return bool(parts) and all(p in SIGNALS for p in parts) and len(set(parts)) == len(parts)


_METHOD = Rule(_is_method, f"one of {list(SIGNALS)} or several of them joined by '+' (e.g. 'knn+elbo')", "median")


@dataclass(frozen=True)
class ReweightConfig(Checked):
    # the rarity signal(s), see SIGNALS above; the default was chosen by bench/reweight_rarity.py (README)
    method: str = checked("knn", _METHOD)
    bins: int = checked(10, at_least(1))  # histogram bins per latent dimension (10 in the lab)
    # smoothing added to each density before inverting it; None: DEFAULT_ALPHA per signal
    alpha: float | None = checked(None, at_least(0))
    k: int = checked(10, at_least(1))  # "knn": the neighbour whose distance measures the density
    # latents before a joint density: as encoded, each dimension scaled to unit variance, or PCA-whitened
    latents: str = checked("raw", one_of(*LATENT_SCALINGS))
    # temper the weights (w ∝ exp(τ·log w), largest τ ≤ 1) so the effective sample size stays at least this
    # share of N; null: never temper
    min_ess: float | None = checked(0.2, between(0, 1, low_open=True))
    n_components: int = checked(10, at_least(1))  # "gmm": mixture components (full covariances); no published default
    # "kde": Gaussian kernel width, a number or "scott"/"silverman"
    bandwidth: float | str = checked("scott", _BANDWIDTH)
    seed: int = checked(0, at_least(0))  # "gmm": k-means initialisation seed; "elbo": the ELBO's draw of z
    # datasets that flag a rare subgroup: a small classifier of the labels trained with uniform and with the
    # weights, this many seeds each, its accuracy on the rare test images logged by the reweight run; 0: off
    classifier_seeds: int = checked(3, at_least(0))
    classifier_epochs: int = checked(15, at_least(1))
    encoder: str = checked("vae", ANY)  # pipeline: label of the trained model whose latent means are weighted
    # pipeline: labels of models retrained with the weights; empty: no reweight stage
    retrain: tuple[str, ...] = checked((), ANY)

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(self.method.split("+"))

    def smoothing_of(self, signal: str) -> float:
        """The α a signal actually uses."""
        return DEFAULT_ALPHA[signal] if self.alpha is None else self.alpha

    @property
    def smoothing(self) -> float:
        """The α actually used (of the first signal, for a combination)."""
        return self.smoothing_of(self.signals[0])

    def params(self) -> dict[str, Any]:
        """The fields with α resolved: what to log and to store with the weights."""
        density = {k: v for k, v in dataclasses.asdict(self).items()
                   if k not in ("encoder", "retrain", "classifier_seeds", "classifier_epochs")}
        return {**density, "alpha": self.smoothing if len(self.signals) == 1 else self.alpha}


@dataclass(frozen=True)
class TrackingConfig(Checked):
    experiment: str | None = checked(None, ANY)  # MLflow experiment; default "genlib-<dataset source>"
    tracking_uri: str | None = checked(None, ANY)  # default $MLFLOW_TRACKING_URI, else SQLite under GENLIB_HOME
    run_name: str | None = checked(None, ANY)  # parent run name; default the preset name


@dataclass(frozen=True)
class Config(Checked):
    name: str = checked("custom", ANY)  # preset name, used for run names
    data: DataConfig = section(DataConfig)
    model: ModelConfig = section(ModelConfig)
    models: tuple[ModelConfig, ...] = checked((), ANY)  # models the pipeline trains and compares; empty: just `model`
    train: TrainConfig = section(TrainConfig)
    eval: EvalConfig = section(EvalConfig)
    reweight: ReweightConfig = section(ReweightConfig)
    tracking: TrackingConfig = section(TrackingConfig)

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
    key, sep, value = _split_override(item)
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


def override_key(item: str) -> str:
    """The dotted key an override sets: ``--train.epochs=3`` → ``train.epochs``."""
    return _split_override(item)[0]


def _split_override(item: str) -> tuple[str, str, str]:
    return item.removeprefix("--").partition("=")


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
    try:
        return cls(**kwargs)
    except ConfigValueError as err:
        raise err.at(where) from None


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
    if tp is float and isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        hint = ("; YAML reads unquoted on/off/yes/no as true/false: quote the word you meant"
                if tp is str and isinstance(value, bool) else "")
        raise TypeError(f"{path}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__}){hint}")
    return value


_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


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

"""Names in a config that only their registries can check, checked before any stage starts.

``genlib.config`` checks every value's type and range but knows no registry; the registries live
in the layers that own them (dataset sources in ``genlib.data``, extractors in
``genlib.evaluate``). The CLI and the pipeline flow call ``check_names`` right after loading a
config, so an unknown extractor fails before training, not after it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from genlib.config import Config
from genlib.data.sources import SOURCES
from genlib.evaluate.extractor import eval_device
from genlib.evaluate.features import EXTRACTORS
from genlib.evaluate.workers import Workers

DEFAULT_PRESET = "digits"  # the evaluation settings of an audit whose --dataset names no preset


def check_names(cfg: Config) -> None:
    """Raise ValueError naming the key if a registered name in ``cfg`` is unknown, if it asks for
    a device this machine does not have, or for adaptive reweighting of a model that cannot encode."""
    for key, registry, value in (("data.source", SOURCES, cfg.data.source),
                                 ("eval.extractor", EXTRACTORS, cfg.eval.extractor)):
        if value not in registry:
            raise ValueError(f"{key}={value!r} is not a known {registry.kind}; known: {registry.names()}")
    eval_device(cfg.eval.device)  # eval.device=cuda without a CUDA GPU
    if cfg.eval.workers > 1:  # evaluation workers the cluster (or this machine) cannot place
        Workers.from_config(cfg.eval).check_placement()
    if cfg.train.reweight_every is not None:  # every model trained must be able to weight its own training set
        from genlib.models import MODELS
        from genlib.train.adaptive import check_adaptive

        for model in cfg.pipeline_models():
            check_adaptive(cfg.replace(model=model), MODELS.get(model.family).capabilities)


def resolve_dataset(dataset: str, overrides: list[str] | None = None) -> tuple[Config, Path]:
    """A prepared dataset version from what a person types, and the config its evaluation uses:
    a directory holding a manifest, a content-hash prefix (8+ characters) of a version under
    ``GENLIB_HOME/datasets``, or a preset name or YAML file (its data is prepared). The config is that
    preset's, else the defaults, with ``overrides``; names in it are checked."""
    from genlib import paths
    from genlib.config import preset_names
    from genlib.data.prepare import prepare
    from genlib.presets import load_config

    path = Path(dataset)
    if (path / "manifest.json").is_file():
        cfg = load_config(DEFAULT_PRESET, overrides)
        found = path
    elif dataset in preset_names() or dataset.endswith((".yaml", ".yml")):
        cfg = load_config(dataset, overrides)
        check_names(cfg)
        return cfg, prepare(cfg.data).path
    elif re.fullmatch(r"[0-9a-f]{8,64}", dataset):
        versions = sorted(p for p in paths.datasets_dir().glob("*") if (p / "manifest.json").is_file()
                          and json.loads((p / "manifest.json").read_text())["content_hash"].startswith(dataset))
        if len(versions) != 1:
            raise ValueError(f"--dataset {dataset}: {len(versions)} prepared versions under {paths.datasets_dir()} "
                             f"have a hash starting so{': ' + str([p.name for p in versions]) if versions else ''}; "
                             f"give a longer prefix, the version's directory, or a preset")
        cfg, found = load_config(DEFAULT_PRESET, overrides), versions[0]
    else:
        raise ValueError(f"--dataset {dataset!r} is not a prepared dataset directory, a dataset hash or a preset; "
                         f"presets: {preset_names()}")
    check_names(cfg)
    return cfg, found

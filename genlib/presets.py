"""Configs with their model sections resolved: the entry points that read a preset or plain data.

``genlib.config`` knows no model family; here each model section becomes its family's own config
class, looked up in the model registry. Everything above the models layer (train, evaluate,
stages, flows, the CLI) loads configs through these two functions.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from genlib.config import Config, ModelConfig, apply_override, override_key, parse_config, read_preset
from genlib.models import model_config_class


def config_from_dict(raw: dict[str, Any]) -> Config:
    """A validated Config from plain data (a parsed preset, a checkpoint's stored config)."""
    return parse_config(raw, model_config_class)


def load_config(preset: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Load a preset by name (``configs/<name>.yaml``) or path and apply ``key.sub=value`` overrides.

    An override of ``model.family`` drops the preset's model keys the new family does not have
    (``--model.family=pixelcnn`` on a VAE preset leaves ``latent_dim`` behind); keys the overrides
    set themselves are always kept, so a wrong one is still an error."""
    raw = read_preset(preset)
    preset_model = dict(raw.get("model") or {})
    for item in overrides or []:
        apply_override(raw, item)
    model = raw.get("model")
    family = model.get("family", ModelConfig.family) if isinstance(model, dict) else None
    if family is not None and family != preset_model.get("family", ModelConfig.family):
        known = {f.name for f in dataclasses.fields(model_config_class(family))}
        typed = {override_key(item).removeprefix("model.") for item in overrides or []}
        known.discard("name")  # the preset's label named the preset's model
        for key in [k for k in model if k not in known and k not in typed]:
            del model[key]
    return config_from_dict(raw)

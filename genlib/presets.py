"""Configs with their model sections resolved: the entry points that read a preset or plain data.

``genlib.config`` knows no model family; here each model section becomes its family's own config
class, looked up in the model registry. Everything above the models layer (train, evaluate,
stages, flows, the CLI) loads configs through these two functions.
"""

from __future__ import annotations

import os
from typing import Any

from genlib.config import Config, parse_config, read_preset
from genlib.models import model_config_class


def config_from_dict(raw: dict[str, Any]) -> Config:
    """A validated Config from plain data (a parsed preset, a checkpoint's stored config)."""
    return parse_config(raw, model_config_class)


def load_config(preset: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Load a preset by name (``configs/<name>.yaml``) or path and apply ``key.sub=value`` overrides."""
    return config_from_dict(read_preset(preset, overrides))

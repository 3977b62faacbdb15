"""Save and load checkpoints: weights (safetensors), optimizer state, progress, and the config.

A checkpoint directory holds
  ``model.safetensors``   the weights,
  ``optimizers.pt``       optimizer state dicts (loaded with ``weights_only=True``),
  ``state.json``          family, model config, image shape, levels, classes (and a translator's source
                          domain's shape and levels), epoch, step, metrics,
  ``sampling_weights.npy`` the train split's sampling weights in use, when training reweights adaptively.
Everything needed to rebuild the model is in ``state.json``; nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from genlib.config import parse_model
from genlib.io import atomic_dir
from genlib.models import GenerativeModel, build_model, model_config_class

WEIGHTS = "model.safetensors"
OPTIMIZERS = "optimizers.pt"
STATE = "state.json"
SAMPLING_WEIGHTS = "sampling_weights.npy"


def save_checkpoint(path: str | Path, model: GenerativeModel,
                    optimizers: dict[str, torch.optim.Optimizer] | None = None,
                    sampling_weights: np.ndarray | None = None, **progress: Any) -> Path:
    """Write a checkpoint directory atomically (temp dir + rename). ``progress``: epoch, step, metrics...
    ``sampling_weights``: the train split's weights in use (adaptive reweighting), restored on resume."""
    with atomic_dir(path, overwrite=True) as tmp:
        if sampling_weights is not None:
            np.save(tmp / SAMPLING_WEIGHTS, np.asarray(sampling_weights, dtype=np.float64))
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(weights, tmp / WEIGHTS)
        if optimizers:
            torch.save({name: opt.state_dict() for name, opt in optimizers.items()}, tmp / OPTIMIZERS)
        state = {"model_config": dataclasses.asdict(model.config), "shape": list(model.shape),
                 "levels": model.levels, "num_classes": model.num_classes, **progress}
        if model.source_shape is not None:
            state["source"] = [list(model.source_shape), model.source_levels]
        (tmp / STATE).write_text(json.dumps(state, indent=2, default=float))
    return path


def read_state(path: str | Path) -> dict[str, Any]:
    state_path = Path(path) / STATE
    if not state_path.is_file():
        raise FileNotFoundError(f"{path} is not a genlib checkpoint (no {STATE})")
    return json.loads(state_path.read_text())


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> GenerativeModel:
    """Rebuild the model a checkpoint describes and load its weights."""
    state = read_state(path)
    model_cfg = parse_model(state["model_config"], model_config_class)
    source = state.get("source")
    model = build_model(model_cfg, tuple(state["shape"]), state["levels"], state["num_classes"],
                        None if source is None else (tuple(source[0]), source[1]))
    model.load_state_dict(load_file(Path(path) / WEIGHTS, device=str(map_location)))
    return model.to(map_location)


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """Everything a resumed run needs, in memory: (state, weights, optimizer states)."""
    path = Path(path)
    state = read_state(path)
    weights = load_file(path / WEIGHTS)
    optimizer_states = (torch.load(path / OPTIMIZERS, map_location="cpu", weights_only=True)
                        if (path / OPTIMIZERS).exists() else {})
    return state, weights, optimizer_states


def read_sampling_weights(path: str | Path) -> np.ndarray | None:
    """The sampling weights a checkpoint was saved with, or None."""
    file = Path(path) / SAMPLING_WEIGHTS
    return np.load(file) if file.exists() else None


def load_optimizer_states(optimizers: dict[str, torch.optim.Optimizer], saved: dict[str, Any]) -> None:
    if set(saved) != set(optimizers):
        raise ValueError(f"checkpoint has optimizers {sorted(saved)}, the model has {sorted(optimizers)}")
    for name, opt in optimizers.items():
        opt.load_state_dict(saved[name])

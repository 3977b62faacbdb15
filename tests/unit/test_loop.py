"""The per-worker training loop's own logic, outside Ray: precision, non-finite detection."""

import math

import pytest
import torch
from torch.utils.data import DataLoader

from genlib.config import DataConfig
from genlib.data.dataset import DatasetVersion
from genlib.data.prepare import prepare
from genlib.models import build_model
from genlib.presets import load_config
from genlib.train.chaos import Faults
from genlib.train.loop import _train_epoch


def _setup():
    cfg = load_config("digits-quick", ["models=[]", "model={family: vae, hidden: 8, latent_dim: 4}"])
    version = DatasetVersion(prepare(DataConfig(source="digits")).path)
    torch.manual_seed(0)
    model = build_model(cfg.model, version.shape, version.levels, version.num_classes)
    model.bind_runner(model)
    loader = DataLoader(version.dataset("train"), batch_size=128)
    return cfg, model, loader


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_epoch_trains_in_either_precision(precision):
    cfg, model, loader = _setup()
    optimizers = model.configure_optimizers(cfg.train)
    first, step, bad = _train_epoch(model, loader, optimizers, 0, torch.device("cpu"), None, precision)
    second, step, bad = _train_epoch(model, loader, optimizers, step, torch.device("cpu"), None, precision)
    assert bad is None and step == 2 * len(loader)
    assert math.isfinite(second["loss"]) and second["loss"] < first["loss"]


def test_a_non_finite_step_is_reported_with_its_number():
    cfg, model, loader = _setup()
    optimizers = model.configure_optimizers(cfg.train)
    _, _, bad = _train_epoch(model, loader, optimizers, 0, torch.device("cpu"), Faults({"nan_at_step": 3}, rank=0))
    assert bad == 3


def test_unknown_precision_is_refused_before_anything_starts():
    with pytest.raises(ValueError, match=r"train.precision='fp16' is not allowed; expected one of \['fp32', 'bf16'\]"):
        load_config("digits-quick", ["models=[]", "train.precision=fp16"])

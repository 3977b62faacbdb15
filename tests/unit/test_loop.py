"""The per-worker training loop's own logic, outside Ray: precision, non-finite detection."""

import math

import pytest
import torch
from torch.utils.data import DataLoader

from genlib.config import DataConfig
from genlib.data.dataset import DatasetVersion
from genlib.data.prepare import prepare
from genlib.models import build_model
from genlib.models.base import TrainingContext
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
    first, context, bad = _train_epoch(model, loader, optimizers, TrainingContext(), torch.device("cpu"), None,
                                       precision)
    second, context, bad = _train_epoch(model, loader, optimizers, context, torch.device("cpu"), None, precision)
    assert bad is None and context.step == 2 * len(loader)
    assert math.isfinite(second["loss"]) and second["loss"] < first["loss"]


def test_each_step_gets_the_context_of_all_ranks_images():
    cfg, model, _ = _setup()
    version = DatasetVersion(prepare(DataConfig(source="digits")).path)
    loader = DataLoader(torch.utils.data.Subset(version.dataset("train"), range(10)), batch_size=4)  # 4, 4, 2
    seen = []
    step = model.training_step
    model.training_step = lambda batch, optimizers, context: seen.append(context) or step(batch, optimizers, context)
    start = TrainingContext(step=5, images_seen=100, world_size=2, epoch=3)
    _, after, _ = _train_epoch(model, loader, model.configure_optimizers(cfg.train), start, torch.device("cpu"))
    assert [(c.step, c.images_seen, c.world_size, c.epoch) for c in seen] == [(5, 100, 2, 3), (6, 108, 2, 3),
                                                                              (7, 116, 2, 3)]
    assert (after.step, after.images_seen) == (8, 120)  # two ranks drew 4 + 4 + 2 images each


def test_a_non_finite_step_is_reported_with_its_number():
    cfg, model, loader = _setup()
    optimizers = model.configure_optimizers(cfg.train)
    _, _, bad = _train_epoch(model, loader, optimizers, TrainingContext(), torch.device("cpu"),
                             Faults({"nan_at_step": 3}, rank=0))
    assert bad == 3


def test_unknown_precision_is_refused_before_anything_starts():
    with pytest.raises(ValueError, match=r"train.precision='fp16' is not allowed; expected one of \['fp32', 'bf16'\]"):
        load_config("digits-quick", ["models=[]", "train.precision=fp16"])

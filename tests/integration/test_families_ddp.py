"""Every registered family (and conditional variant) trains data-parallel on two processes, each on the
data kind it takes (tests.families.kind_of: the translators on 8×8 paired or unpaired digits).

* All of them run the worker loop's own epoch and validation code (``_train_epoch``, ``_validate``)
  in a real two-process gloo group, wrapped in DistributedDataParallel with the family's own DDP
  options (EM families all-reduce their statistics instead): both replicas' parameters must end
  identical, and validation must improve. One process group serves every family, so this costs one start-up.
* Each kind of update also trains through the real trainer end to end elsewhere — Ray Train's two
  workers, checkpoints, the MLflow run and the evaluate stage: a single optimizer (the VAE:
  test_train_ray.py, test_pipeline.py), EM without gradients (categorical: test_pipeline.py) and
  alternating optimizers, each forward one DDP pass with unused parameters (CycleGAN's two generators
  and two discriminators: test_translation.py).
"""

import json
import math
import os
import socket

import pytest
import torch

from genlib.config import DataConfig
from genlib.data.kinds import IMAGES
from genlib.data.prepare import prepare
from genlib.presets import config_from_dict, load_config
from tests.families import ALL, KIND_SOURCES, kind_of

pytestmark = pytest.mark.integration

EPOCHS = 2
UNIFORM = 64 * math.log(17)  # nats per 8×8 image of 17 levels


def _config(variant: str):
    family, params = ALL[variant]
    raw = load_config("digits-quick", [f"train.epochs={EPOCHS}", "train.num_workers=2", "train.batch_size=128",
                                       "eval.n_samples=8", "eval.iwae_k=4",
                                       "eval.n_generated=0"]).to_dict()  # sample quality: test_pipeline
    raw["model"] = {"family": family, **params}
    return config_from_dict(raw)


def _learned(val_losses: list[float], variant: str = "") -> bool:
    # Learning on held-out data across two workers. (EM's exact independent model is done after one
    # epoch, so later epochs may only stay put.) A translator's loss (an L1, an MMD²) is far below the
    # uniform model's bits: it must fall.
    if variant and kind_of(variant) != IMAGES:
        return val_losses[-1] < val_losses[0]
    return val_losses[-1] < min(UNIFORM, val_losses[0] + 0.05)


def _ddp_worker(rank: int, world: int, port: int, datasets: dict[str, str], out: str) -> None:
    """One rank: train every variant for EPOCHS epochs with the loop's code; write what it ended with."""
    from torch import distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler, Subset

    from genlib.data.dataset import DatasetVersion
    from genlib.models import build_model_for
    from genlib.models.base import TrainingContext
    from genlib.train.loop import _train_epoch, _validate

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    device, results = torch.device("cpu"), {}
    for variant in sorted(ALL):
        cfg = _config(variant)
        version = DatasetVersion(datasets[kind_of(variant)])
        train_set, val_set = version.dataset("train"), version.dataset("val")
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank, as the trainer does
        model = build_model_for(cfg.model, version)
        if model.trainable:
            model.bind_runner(DistributedDataParallel(model, **model.ddp_options))
        optimizers = model.configure_optimizers(cfg.train)
        torch.manual_seed(cfg.train.seed + 1000 * rank)  # own noise per rank
        sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.train.seed)
        train_loader = DataLoader(train_set, batch_size=cfg.train.batch_size // world, sampler=sampler)
        val_loader = DataLoader(Subset(val_set, range(rank, len(val_set), world)), batch_size=64)
        context, losses = TrainingContext(world_size=world), []
        for epoch in range(EPOCHS):
            sampler.set_epoch(epoch)
            model.train()
            metrics, context, bad = _train_epoch(model, train_loader, optimizers, context, device)
            assert bad is None, f"{variant}: non-finite loss at step {bad}"
            model.on_epoch_end()
            model.eval()
            losses.append(_validate(model, val_loader, device, seed=cfg.train.seed)["loss"])
        # What DDP keeps equal: the parameters (batch-norm running statistics are each rank's own
        # until DDP broadcasts rank 0's at the next forward); EM families: their all-reduced state.
        tensors = model.parameters() if model.trainable else model.state_dict().values()
        state = torch.cat([t.detach().flatten().double() for t in tensors if t.is_floating_point()])
        results[variant] = {"val_loss": losses, "train": metrics, "state_sum": float(state.sum()),
                            "state_abs": float(state.abs().sum()), "context": [context.step, context.images_seen],
                            "drawn": EPOCHS * len(sampler) * world}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """Both ranks' results for every variant, from one two-process gloo group."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GENLIB_HOME", str(out / "genlib-home"))
        datasets = {kind: str(prepare(DataConfig(source=source, image_size=8)).path)
                    for kind, source in KIND_SOURCES.items()}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, datasets, str(out)), nprocs=2, join=True)
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]


@pytest.mark.parametrize("variant", sorted(ALL))
def test_two_process_ddp_keeps_replicas_identical_and_learns(ddp_results, variant):
    first, second = (ranks[variant] for ranks in ddp_results)
    # Gradients (or EM statistics) are summed over both ranks: the two replicas stay the same model.
    assert first["state_abs"] > 0 and first["state_sum"] == pytest.approx(second["state_sum"], rel=1e-9, abs=1e-9)
    assert first["state_abs"] == pytest.approx(second["state_abs"], rel=1e-9)
    assert first["val_loss"] == second["val_loss"]  # all-reduced: every rank sees the same numbers
    # The training context is the same on both ranks and counts the images of both.
    assert first["context"] == second["context"] and first["context"][1] == first["drawn"]
    assert all(math.isfinite(v) for v in (*first["val_loss"], *first["train"].values()))
    assert _learned(first["val_loss"], variant), first["val_loss"]

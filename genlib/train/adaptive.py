"""Adaptive reweighting while a model trains (DB-VAE [1], as in the MIT 6.S191 lab [2]).

With ``train.reweight_every = N`` the training loop recomputes the sampling weights of the train
split from the model being trained, before every epoch 1 + N, 1 + 2N, ...: each rank encodes its
share of the split (positions rank, rank + R, ...), the latents are gathered, rank 0 weights them
as ``reweight.*`` says (``genlib.evaluate.reweight``), and broadcasts the weights, so that every
rank's ``WeightedDistributedSampler`` draws from the same weights from the same epoch on. The
weights in use are saved with every checkpoint, so a resumed run draws as the uninterrupted one.

[1] Amini et al., "Uncovering and Mitigating Algorithmic Bias through Learned Latent Structure",
    AIES 2019 (the weights recomputed every epoch from the VAE being trained).
[2] MIT 6.S191 Lab 2 (``get_training_sample_probabilities`` called at the start of every epoch).

NOTE: [1] and [2] train the VAE jointly with a classifier and recompute every epoch; here the model
is any family that declares ``encode`` and N is a config value. The first epoch draws from
``train.weights`` when given, else uniformly (with replacement, as every weighted epoch).
NOTE: the "elbo" signal draws its z per rank, from ``reweight.seed``: the weights then depend on
the number of ranks (the latent means, and every other signal, do not).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from genlib.config import Config
from genlib.data.dataset import DatasetVersion
from genlib.models.base import ENCODE, LOG_PROB

PREFIX = "reweight_"  # the update's diagnostics, in that epoch's metrics


def due(epoch: int, every: int | None) -> bool:
    """Are the weights recomputed before ``epoch`` (1-based)?"""
    return every is not None and epoch > 1 and (epoch - 1) % every == 0


def check_adaptive(cfg: Config, capabilities: frozenset[str]) -> None:
    """Refuse ``train.reweight_every`` for a model that cannot weight its own training set (before any run)."""
    if cfg.train.reweight_every is None:
        return
    if ENCODE not in capabilities:
        raise ValueError(f"train.reweight_every={cfg.train.reweight_every} needs a model that declares {ENCODE!r} "
                         f"(a VAE family) to weight its training set; {cfg.model.family!r} does not. Set it to "
                         f"null, or reweight with a separate VAE run (genlib reweight) and train.weights")
    check_encoder(cfg, cfg.model.family, capabilities)


def check_encoder(cfg: Config, family: str, capabilities: frozenset[str]) -> None:
    """Refuse a reweighting encoder that lacks what ``reweight.method`` reads from it."""
    if ENCODE not in capabilities:
        raise ValueError(f"reweight.encoder: family {family!r} does not declare {ENCODE!r}; reweighting needs latent "
                         f"means (a VAE family, or aae)")
    if "elbo" in cfg.reweight.signals and LOG_PROB not in capabilities:
        raise ValueError(f"reweight.method={cfg.reweight.method!r} uses the 'elbo' signal, which needs a model that "
                         f"declares {LOG_PROB!r}; {family!r} does not")


@torch.no_grad()
def recompute_weights(model, cfg: Config, version: DatasetVersion, rank: int, world: int,
                      batch_size: int = 512) -> tuple[np.ndarray, dict[str, float]]:
    """Weights of the whole train split from ``model`` (identical on every rank) and their diagnostics.

    Call it on every rank at the same point (it gathers and broadcasts when ``world`` > 1)."""
    from genlib.evaluate.reweight import diagnostics, estimate_weights, latent_means, sample_losses

    images, labels = version.images("train"), version.labels("train")
    mine = np.arange(rank, len(images), world)
    x = torch.from_numpy(np.array(images[mine])).permute(0, 3, 1, 2)
    y = labels[mine] if labels is not None and model.num_classes else None
    z = latent_means(model, x, batch_size, labels=y)
    losses = (sample_losses(model, x, batch_size, labels=y, seed=cfg.reweight.seed + rank)
              if "elbo" in cfg.reweight.signals else None)
    shards = [(mine, z, losses)]
    if world > 1:
        shards = [None] * world
        dist.all_gather_object(shards, (mine, z, losses))
    payload = [None]
    if rank == 0:
        try:
            order = np.concatenate([s[0] for s in shards])
            z_all = np.empty((len(images), z.shape[1]), dtype=z.dtype)
            z_all[order] = np.concatenate([s[1] for s in shards])
            losses_all = None
            if losses is not None:
                losses_all = np.empty(len(images))
                losses_all[order] = np.concatenate([s[2] for s in shards])
            weights, _, tau = estimate_weights(z_all, cfg.reweight, losses_all)
            payload = [(weights, {**diagnostics(weights), "tau": tau})]
        except Exception as err:  # noqa: BLE001 - every rank must hear of it, or the others wait in the broadcast forever
            payload = [err]
    if world > 1:
        dist.broadcast_object_list(payload, src=0)
    if isinstance(payload[0], Exception):
        raise ValueError(f"adaptive reweighting before this epoch failed: {payload[0]}") from payload[0]
    return payload[0]

"""The contract every generative family implements, so trainers and evaluators never branch on names.

Images cross this boundary as uint8 tensors ``(B, C, H, W)`` with values in ``[0, levels)`` —
the dataset's own discrete values — both into ``training_step``/``log_prob`` and out of
``sample``. Capabilities beyond training and sampling are declared in ``capabilities`` and
checked by the contract tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from genlib.config import ModelConfig, TrainConfig
from genlib.data.kinds import DIRECTIONS, IMAGES, KINDS
from genlib.registry import Registry

# Names a family may declare in ``capabilities``.
SAMPLE = "sample"  # sample(n, labels, generator): images from noise (every family but those that only translate)
# translate(x, direction, generator): images of the other domain (direction "a2b" or "b2a", those in ``directions``)
TRANSLATE = "translate"
LOG_PROB = "log_prob"  # log_prob(x): nats per image, exact or a bound (see log_prob_exact)
ENCODE = "encode"  # encode(x): latent means, used by reweighting
COMPLETE = "complete"  # complete(x, mask): fill unobserved pixels
INTERPOLATE = "interpolate"  # interpolate(rows, steps, generator): latent interpolation grids
TRAVERSE = "traverse"  # traverse(steps, span): one latent dimension varied per row
RECONSTRUCT = "reconstruct"  # reconstruction_log_prob(x): log p(x | z = the encoder's point estimate), nats per image
# latent_samples(x, labels, generator): draws of q(z|x) and, as many, of the prior p(z) (matching labels
# for a class-conditional prior): how far the aggregate posterior is from the prior
LATENT_PRIOR = "latent_prior"
TRUNCATE = "truncate"  # sample(n, labels, generator, truncation=ψ): the truncation trick, ψ in [0, 1] (1: none)
# style_mix(rows, cols, cutoff, generator): a grid mixing coarse styles of one latent with fine styles of another
STYLE_MIX = "style_mix"
# path_pairs(n, epsilon, space, generator): images (float, in level units) at t and t + ε on random latent paths in
# each of ``path_spaces``: the perceptual path length's pairs
PATH_LENGTH = "path_length"
KNOWN_CAPABILITIES = frozenset({SAMPLE, TRANSLATE, LOG_PROB, ENCODE, COMPLETE, INTERPOLATE, TRAVERSE, RECONSTRUCT,
                                LATENT_PRIOR, TRUNCATE, STYLE_MIX, PATH_LENGTH})


@dataclass(frozen=True)
class Batch:
    x: torch.Tensor  # (B, C, H, W) uint8 in [0, levels): the images (two-domain data: domain B's)
    labels: torch.Tensor | None  # (B,) int64, or None for unlabelled data
    index: torch.Tensor  # (B,) positions in the split
    # two-domain data: domain A's images, uint8 in [0, source_levels) (paired: x's inputs, aligned; unpaired: a draw)
    source: torch.Tensor | None = None

    @classmethod
    def from_loader(cls, item) -> Batch:
        """From a dataset batch ``(x, labels, index)`` or ``(x, labels, index, source)``; label -1 marks
        unlabelled data."""
        x, labels, index, *source = item
        return cls(x, labels if bool((labels >= 0).all()) else None, index, source[0] if source else None)

    def to(self, device: torch.device) -> Batch:
        """On ``device``; from pinned memory the copy is asynchronous (ordered before the kernels using it)."""
        labels, source = (None if t is None else t.to(device, non_blocking=True) for t in (self.labels, self.source))
        return Batch(self.x.to(device, non_blocking=True), labels, self.index.to(device, non_blocking=True), source)


@dataclass(frozen=True)
class TrainingContext:
    """What a family's update may depend on besides its batch, identical on every rank, so that a
    schedule (a warm-up, a critic's turn, a resolution's fade-in) moves in lock-step under DDP and
    resumes where it stood (the loop saves it with every checkpoint)."""

    step: int = 0  # optimizer steps taken before this one (all ranks step together)
    images_seen: int = 0  # training images drawn before this batch, over all ranks together
    world_size: int = 1  # data-parallel ranks
    epoch: int = 1  # the epoch this step belongs to, counted from 1

    def after(self, batch_size: int) -> TrainingContext:
        """The context of the next step, once every rank has trained on a batch of ``batch_size``
        images (ranks draw equal-sized batches: the samplers pad their shards to one length)."""
        return dataclasses.replace(self, step=self.step + 1,
                                   images_seen=self.images_seen + batch_size * self.world_size)


class GenerativeModel(nn.Module):
    """Base class of every family. Subclasses set ``config_class`` and implement the steps."""

    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    capabilities: ClassVar[frozenset[str]] = frozenset()
    data_kinds: ClassVar[frozenset[str]] = frozenset({IMAGES})  # the data kinds (``data/kinds.py``) it trains on
    directions: ClassVar[tuple[str, ...]] = ()  # with ``translate``: the directions it translates
    log_prob_exact: ClassVar[bool] = False  # True: log_prob is exact; False: a bound with k samples
    ddp_options: ClassVar[dict] = {}  # extra DistributedDataParallel arguments this family needs

    def __init__(self, config: ModelConfig, shape: tuple[int, int, int], levels: int,
                 num_classes: int | None = None, source: tuple[tuple[int, int, int], int] | None = None):
        super().__init__()
        if levels < 2 or levels > 256:
            raise ValueError(f"levels must be in [2, 256], got {levels}")
        if (source is None) != (IMAGES in self.data_kinds):
            raise ValueError(f"{type(self).__name__} trains on {sorted(self.data_kinds)} data: "
                             + ("it needs domain A's (shape, levels)" if source is None else "it takes no second domain"))
        self.config = config
        self.shape = tuple(shape)  # (C, H, W)
        self.levels = levels
        self.num_classes = num_classes
        # two-domain data: domain A's (C, H, W) and levels (``shape`` and ``levels`` are domain B's)
        self.source_shape, self.source_levels = (tuple(source[0]), source[1]) if source else (None, None)
        self.conditional = bool(getattr(config, "conditional", False))  # families that offer it
        if self.conditional and not num_classes:
            raise ValueError(f"{type(self).__name__} with conditional=true needs a labelled dataset "
                             f"(num_classes), got {num_classes}")
        self._runner: nn.Module | None = None

    @property
    def dims(self) -> int:
        c, h, w = self.shape
        return c * h * w

    @property
    def device(self) -> torch.device:
        tensor = next(self.parameters(), None)
        tensor = tensor if tensor is not None else next(self.buffers())
        return tensor.device

    @property
    def trainable(self) -> bool:
        """False for models fitted without gradients (EM): they get no optimizer and no DDP."""
        return any(p.requires_grad for p in self.parameters())

    # -- training ---------------------------------------------------------------------------

    def configure_optimizers(self, train: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """Named optimizers; one Adam over all parameters unless a family needs more."""
        return {"model": torch.optim.Adam(self.parameters(), lr=train.lr)}

    def training_step(self, batch: Batch, optimizers: dict[str, torch.optim.Optimizer],
                      context: TrainingContext) -> dict[str, float]:
        """Perform this family's update on one batch; return float metrics including ``loss``.
        ``context``: where training stands, the same on every rank (a schedule's clock)."""
        raise NotImplementedError

    @staticmethod
    def optimize(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One gradient update of ``loss`` with ``optimizer`` (a GAN calls it once per player)."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def on_epoch_end(self) -> None:
        """Called by the trainer after each training epoch, on every worker (EM's M-step, say)."""

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, float]:
        """Mean metrics of one held-out batch, including ``loss`` (lower is better)."""
        raise NotImplementedError

    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images, uint8 ``(n, C, H, W)`` in ``[0, levels)``."""
        raise NotImplementedError

    def class_labels(self, labels: torch.Tensor | None, n: int, default: bool = False) -> torch.Tensor | None:
        """The labels a class-conditional model sees (None for an unconditional one). Missing
        labels are an error in training, and an even spread of classes when ``default`` (sampling)."""
        if not self.conditional:
            return None
        if labels is None:
            if not default:
                raise ValueError(f"{type(self).__name__} is class-conditional: batches need labels "
                                 f"(the model needs labels to condition on)")
            labels = torch.arange(n) % self.num_classes
        return labels.to(self.device)

    # -- distributed ------------------------------------------------------------------------

    def bind_runner(self, runner: nn.Module) -> None:
        """Route ``run(...)`` through ``runner`` (a DDP wrapper of this model), so that forward
        passes made inside ``training_step`` synchronise gradients across workers."""
        # Stored outside nn.Module's registry: the wrapper holds this model, not the reverse.
        object.__setattr__(self, "_runner", runner)

    def run(self, *args, **kwargs):
        runner = self._runner if self._runner is not None else super().__call__
        return runner(*args, **kwargs)

    # -- optional capabilities --------------------------------------------------------------

    def log_prob(self, x: torch.Tensor, labels: torch.Tensor | None = None, k: int = 1) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not declare {LOG_PROB!r}")

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not declare {ENCODE!r}")

    def translate(self, x: torch.Tensor, direction: str = "a2b", generator: torch.Generator | None = None) -> torch.Tensor:
        """Images of the source domain (uint8 in its levels) → uint8 images in the target domain's levels."""
        raise NotImplementedError(f"{type(self).__name__} does not declare {TRANSLATE!r}")

    def domain_spec(self, domain: str) -> tuple[tuple[int, int, int], int]:
        """((C, H, W), levels) of domain "a" (the source side) or "b" (``shape``, ``levels``)."""
        return (self.source_shape, self.source_levels) if domain == "a" else (self.shape, self.levels)


def check_family(cls: type) -> None:
    """Registry check: a family is a GenerativeModel with a config class and known capabilities."""
    if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
        raise TypeError(f"a model family must subclass GenerativeModel, got {cls!r}")
    if not issubclass(cls.config_class, ModelConfig):
        raise TypeError(f"{cls.__name__}.config_class must subclass ModelConfig")
    unknown = set(cls.capabilities) - KNOWN_CAPABILITIES
    if unknown:
        raise TypeError(f"{cls.__name__} declares unknown capabilities {sorted(unknown)}; "
                        f"known: {sorted(KNOWN_CAPABILITIES)}")
    if not cls.data_kinds or not set(cls.data_kinds) <= set(KINDS) or (IMAGES in cls.data_kinds and len(cls.data_kinds) > 1):
        raise TypeError(f"{cls.__name__}.data_kinds must be {{{IMAGES!r}}} or a set of the two-domain kinds, "
                        f"got {sorted(cls.data_kinds)}")
    if (TRANSLATE in cls.capabilities) != bool(cls.directions) or not set(cls.directions) <= set(DIRECTIONS):
        raise TypeError(f"{cls.__name__}: a family that declares {TRANSLATE!r} names its directions (of "
                        f"{sorted(DIRECTIONS)}), and only such a family; got {cls.directions}")


def to_unit(x: torch.Tensor, levels: int) -> torch.Tensor:
    """uint8 levels → floats in [-1, 1]."""
    return x.float() * (2.0 / (levels - 1)) - 1.0


# Every family registers itself here on import (``@MODELS.register("vae")``).
MODELS: Registry[type[GenerativeModel]] = Registry("model family", check=check_family)

"""Model families behind one contract (``base.GenerativeModel``), looked up by name.

The registry lives in ``base.py``; importing this package imports every family, which
registers itself there.
"""

from __future__ import annotations

from genlib.config import ModelConfig
from genlib.models import aae, baselines, biggan, gan, pixelcnn, pixelvae, progan, stylegan, vae  # noqa: F401 - importing a family registers it
from genlib.models.base import MODELS, GenerativeModel


def model_config_class(family: str) -> type[ModelConfig]:
    """The config class of a registered family (its model section's type)."""
    return MODELS.get(family).config_class


def build_model(config, shape, levels, num_classes=None) -> GenerativeModel:
    """Build the family named by ``config.family`` for images of ``shape`` (C, H, W)."""
    cls = MODELS.get(config.family)
    if not isinstance(config, cls.config_class):
        raise TypeError(f"family {config.family!r} needs a {cls.config_class.__name__}, "
                        f"got {type(config).__name__}")
    return cls(config, shape, levels, num_classes)

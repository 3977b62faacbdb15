"""Model families behind one contract (``base.GenerativeModel``), looked up by name."""

from __future__ import annotations

from genlib.models.base import GenerativeModel, check_family
from genlib.registry import Registry

MODELS: Registry[type[GenerativeModel]] = Registry("model family", check=check_family)

# Importing a family registers it.
from genlib.models import baselines, gan, pixelcnn, vae  # noqa: E402,F401


def build_model(config, shape, levels, num_classes=None) -> GenerativeModel:
    """Build the family named by ``config.family`` for images of ``shape`` (C, H, W)."""
    cls = MODELS.get(config.family)
    if not isinstance(config, cls.config_class):
        raise TypeError(f"family {config.family!r} needs a {cls.config_class.__name__}, "
                        f"got {type(config).__name__}")
    return cls(config, shape, levels, num_classes)

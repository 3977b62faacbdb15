"""Model families behind one contract (``base.GenerativeModel``), looked up by name.

The registry lives in ``base.py``; importing this package imports every family, which
registers itself there.
"""

from __future__ import annotations

from genlib.config import ModelConfig
from genlib.data.kinds import IMAGES
from genlib.models import aae, baselines, biggan, gan, pixelcnn, pixelvae, progan, stylegan, translation, vae  # noqa: F401 - importing a family registers it
from genlib.models.base import MODELS, GenerativeModel


def model_config_class(family: str) -> type[ModelConfig]:
    """The config class of a registered family (its model section's type)."""
    return MODELS.get(family).config_class


def build_model(config, shape, levels, num_classes=None, source=None) -> GenerativeModel:
    """Build the family named by ``config.family`` for images of ``shape`` (C, H, W); ``source``: domain
    A's ((C, H, W), levels) for the families that train on two-domain data."""
    cls = MODELS.get(config.family)
    if not isinstance(config, cls.config_class):
        raise TypeError(f"family {config.family!r} needs a {cls.config_class.__name__}, "
                        f"got {type(config).__name__}")
    if source is None:
        return cls(config, shape, levels, num_classes)
    if IMAGES in cls.data_kinds:
        raise ValueError(f"{cls.__name__} trains on images data: it takes no second domain")
    return cls(config, shape, levels, num_classes, source)


def check_data_kind(family: str, kind: str, where: str = "the dataset") -> None:
    """Refuse a family on data of a kind it does not train on, saying which kinds it takes."""
    takes = MODELS.get(family).data_kinds
    if kind not in takes:
        raise ValueError(f"model family {family!r} trains on {' or '.join(sorted(takes))} data, but {where} is "
                         f"{kind} data; choose a {' or '.join(sorted(takes))} source (data.source) or another family")


def build_model_for(config, version) -> GenerativeModel:
    """Build ``config``'s family for a dataset version (``DatasetVersion``: its kind, shapes, levels and
    classes), refusing a kind the family does not train on."""
    check_data_kind(config.family, version.kind, f"dataset {version.path.name}")
    return build_model(config, version.shape, version.levels, version.num_classes, version.source_spec)


def check_model_data(model: GenerativeModel, version) -> None:
    """Refuse to score ``model`` on a dataset version it was not built for: another kind, image shape,
    level count or (a translator) source domain."""
    check_data_kind(model.config.family, version.kind, f"dataset {version.path.name}")
    built = (model.shape, model.levels, model.source_shape and (model.source_shape, model.source_levels))
    found = (tuple(version.shape), version.levels, version.source_spec)
    if built != found:
        raise ValueError(f"the {model.config.family} model was built for images {built[0]} with {built[1]} levels"
                         + (f" from domain A's {built[2][0]} with {built[2][1]}" if built[2] else "")
                         + f"; dataset {version.path.name} has {found[0]} with {found[1]}"
                         + (f" from {found[2][0]} with {found[2][1]}" if found[2] else "")
                         + ": evaluate it on the dataset version it was trained on")

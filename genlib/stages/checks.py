"""Names in a config that only their registries can check, checked before any stage starts.

``genlib.config`` checks every value's type and range but knows no registry; the registries live
in the layers that own them (dataset sources in ``genlib.data``, extractors in
``genlib.evaluate``). The CLI and the pipeline flow call ``check_names`` right after loading a
config, so an unknown extractor fails before training, not after it.
"""

from __future__ import annotations

from genlib.config import Config
from genlib.data.sources import SOURCES
from genlib.evaluate.extractor import eval_device
from genlib.evaluate.features import EXTRACTORS


def check_names(cfg: Config) -> None:
    """Raise ValueError naming the key if a registered name in ``cfg`` is unknown, or if it asks
    for a device this machine does not have."""
    for key, registry, value in (("data.source", SOURCES, cfg.data.source),
                                 ("eval.extractor", EXTRACTORS, cfg.eval.extractor)):
        if value not in registry:
            raise ValueError(f"{key}={value!r} is not a known {registry.kind}; known: {registry.names()}")
    eval_device(cfg.eval.device)  # eval.device=cuda without a CUDA GPU

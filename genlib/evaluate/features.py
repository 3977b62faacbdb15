"""Feature extractors for sample-quality and memorization metrics, looked up by name.

Importing this module registers every extractor:

* ``domain`` (``domain.py``): a small CNN trained on the dataset version's own train split — what
  makes FID meaningful on 8×8 digits, offline; its held-out accuracy is reported.
* ``inception-v3-fid`` (``inception.py``): the FID papers' Inception-v3 2048-d pool features with
  pytorch-fid's published weights (SHA-256 verified) and preprocessing — grey to 3 channels,
  bilinear resize to 299×299, [-1, 1]; its numbers are comparable with pytorch-fid's.
"""

from __future__ import annotations

from pathlib import Path

from genlib.data.dataset import DatasetVersion
from genlib.evaluate import domain, inception  # noqa: F401 - importing an extractor registers it
from genlib.evaluate.domain import DomainNet  # noqa: F401 - re-exported
from genlib.evaluate.extractor import EXTRACTORS, Extractor, cached_features  # noqa: F401 - re-exported


def load_extractor(name: str, version: DatasetVersion, weights: Path | None = None) -> Extractor:
    """The registered extractor ``name`` for a dataset version (a domain network is trained once), or,
    with ``weights``, the domain network another evaluation exported (``domain.import_domain``)."""
    if weights is None:
        return EXTRACTORS.get(name)(version)
    if name != "domain":
        raise ValueError(f"eval.extractor_from imports a domain network; eval.extractor={name!r} has fixed, "
                         f"published weights already (drop eval.extractor_from)")
    return domain.import_domain(version, weights)

"""The feature network behind an evaluation's numbers, shared through MLflow.

A domain network is trained per dataset version; numbers computed with different networks are not
comparable. Every evaluation and audit tags its run with the SHA-256 of its network's weights, and the
first run of a store to use a network logs it (``extractor/weights.safetensors`` and ``meta.json``),
once. ``eval.extractor_from`` brings such a network into another evaluation, from a run of this store
or from an exported folder, so two teams (or two dataset versions) score in one feature space.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from genlib.config import Config
from genlib.data.dataset import DatasetVersion
from genlib.evaluate.domain import export_domain
from genlib.evaluate.extractor import Extractor
from genlib.evaluate.references import References
from genlib.evaluate.workers import Workers
from genlib.tracking import Tag, Tracker

ARTIFACT = "extractor"


def load_references(cfg: Config, version: DatasetVersion, device: torch.device, tracker: Tracker,
                    scratch: Path) -> References:
    """The references an evaluation of ``version`` compares with, in ``cfg.eval.extractor``'s space or
    in the network ``cfg.eval.extractor_from`` names (downloaded into ``scratch``)."""
    source = cfg.eval.extractor_from
    weights = None if source is None else exported_network(tracker, source, scratch)
    return References.load(version, cfg.eval.extractor, device, weights, Workers.from_config(cfg.eval, device))


def exported_network(tracker: Tracker, source: str, scratch: Path) -> Path:
    """A local folder holding the network ``source`` names: a folder or weights file as it is, else the
    network the MLflow run ``source`` used (from the run of the store that logged it)."""
    if Path(source).exists():
        return Path(source)
    try:
        run = tracker.get_run(source)
    except Exception as err:  # noqa: BLE001 - MLflow raises its own exception types for a missing run
        raise ValueError(f"eval.extractor_from={source!r} is neither a folder, a file nor an MLflow run id in "
                         f"{tracker.uri} ({err})") from None
    digest = run.data.tags.get(Tag.EXTRACTOR)
    if not digest:
        raise ValueError(f"eval.extractor_from={source!r}: run {source} records no feature network "
                         f"(tag {Tag.EXTRACTOR}); pass the id of an evaluation or audit")
    holder = source if run.data.tags.get(Tag.EXTRACTOR_LOGGED) == "true" else _holder(tracker, digest)
    return Path(tracker.download_artifacts(holder, ARTIFACT, scratch))


def _holder(tracker: Tracker, digest: str) -> str:
    where = f"tags.`{Tag.EXTRACTOR}` = '{digest}' and tags.`{Tag.EXTRACTOR_LOGGED}` = 'true'"
    found = tracker.search_runs(tracker.experiment_ids(), where, max_results=1)
    if not found:
        raise ValueError(f"no run in {tracker.uri} holds the feature network {digest[:12]}… (its {ARTIFACT}/ "
                         f"artifacts); pass an exported folder instead")
    return found[0].info.run_id


def record_network(tracker: Tracker, run_id: str, extractor: Extractor) -> None:
    """Tag the run with its network's digest; log the network if no run of this store holds it yet."""
    digest = extractor.info.get("weights_sha256")
    if not digest:
        return
    tracker.set_tags(run_id, {Tag.EXTRACTOR: digest})
    if extractor.name != "domain" or extractor.module is None:
        return  # a published network (Inception): its file's digest names it, nothing to share
    try:
        _holder(tracker, digest)
        return
    except ValueError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        tracker.log_artifacts(run_id, export_domain(extractor, Path(tmp) / ARTIFACT), ARTIFACT)
    tracker.set_tags(run_id, {Tag.EXTRACTOR_LOGGED: "true"})

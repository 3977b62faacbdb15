"""Prepare immutable, content-hashed dataset versions.

A dataset version is a directory ``<GENLIB_HOME>/datasets/<source>-<hash12>/`` holding
``{split}_images.npy`` (uint8, N×H×W×C), ``{split}_labels.npy`` when labelled,
``{split}_rare.npy`` (bool, N) when the config draws a style (``data.style``: which images belong
to the rare subgroup — a report-only label that training and reweighting never read; for
``data.rare_class`` it is derived from the labels), and ``manifest.json``. The hash covers every
array and the levels, so the same inputs give the same directory and preparing them again is a
cache hit.

A two-domain version (kind ``paired`` or ``unpaired``, ``kinds.py``) holds each domain as a complete
version of its own in ``a/`` and ``b/`` (a paired version splits both by the same indices, so pairs stay
together; an unpaired one splits each domain on its own), the true translations of the test split
where the source knows them (``truth_a2b_test.npy``, for evaluation only), and a manifest with the
kind, each domain's shape, levels, splits and hash, and a hash over all of it. Writing goes to a temporary directory that is renamed into place only when complete, so
a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genlib import paths
from genlib.config import DataConfig
from genlib.data.kinds import DIRECTIONS, DOMAINS, IMAGES
from genlib.data.pairs import TwoDomains
from genlib.data.sources import SourceData, load_source
from genlib.io import atomic_dir

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Prepared:
    path: Path
    manifest: dict[str, Any]
    cache_hit: bool

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]


def prepare(cfg: DataConfig, root: Path | None = None) -> Prepared:
    """Load ``cfg.source``, split it, and write (or find) its dataset version."""
    source = load_source(cfg)
    if cfg.swap_domains and not isinstance(source, TwoDomains):
        raise ValueError(f"data.swap_domains exchanges the two domains of a paired or unpaired source; "
                         f"source {cfg.source!r} has one image set")
    if isinstance(source, TwoDomains):
        return _prepare_two_domains(cfg, source, Path(root) if root else paths.datasets_dir())
    splits = split_indices(source, cfg)
    arrays = {name: (source.images[idx], None if source.labels is None else source.labels[idx])
              for name, idx in splits.items()}
    arrays = induce_rarity(arrays, source.levels, cfg)
    content_hash = hash_arrays(arrays, source.levels)
    root = Path(root) if root else paths.datasets_dir()
    target = root / f"{cfg.source}-{content_hash[:12]}"
    if (target / "manifest.json").is_file():
        log.info("dataset %s is already prepared (cache hit)", target)
        return Prepared(target, read_manifest(target), cache_hit=True)
    manifest = _manifest(cfg, cfg.source, source, arrays, content_hash)
    with atomic_dir(target) as tmp:  # a version prepared meanwhile by another process is identical, and is kept
        _write_arrays(tmp, arrays, manifest)
        _read_only(tmp)
    log.info("prepared dataset %s", target)
    return Prepared(target, manifest, cache_hit=False)


def _prepare_two_domains(cfg: DataConfig, source: TwoDomains, root: Path) -> Prepared:
    if cfg.swap_domains:
        source = TwoDomains(source.kind, source.b, source.a,
                            {f"{d[-1]}2{d[0]}": values for d, values in source.truth.items()})
    if cfg.style is not None or cfg.rare_class is not None:
        raise ValueError(f"data.style and data.rare_class induce a rarity in one image set; source {cfg.source!r} is "
                         f"{source.kind} (two domains): leave them unset")
    if source.kind == "paired":  # one split for both sides: a pair stays together
        shared = split_indices(source.b, cfg)
        splits = {domain: shared for domain in DOMAINS}
    else:
        splits = {domain: split_indices(getattr(source, domain), cfg) for domain in DOMAINS}
    domains = {}
    for domain in DOMAINS:
        data = getattr(source, domain)
        arrays = {name: (data.images[idx], None if data.labels is None else data.labels[idx], None)
                  for name, idx in splits[domain].items()}
        domains[domain] = (data, arrays, hash_arrays(arrays, data.levels))
    truth = {f"truth_{direction}_test": values[splits[DIRECTIONS[direction][0]]["test"]]
             for direction, values in sorted(source.truth.items())}
    content_hash = hash_two_domains(source.kind, {domain: domains[domain][2] for domain in DOMAINS}, truth)
    target = root / f"{cfg.source}-{content_hash[:12]}"
    if (target / "manifest.json").is_file():
        log.info("dataset %s is already prepared (cache hit)", target)
        return Prepared(target, read_manifest(target), cache_hit=True)
    manifests = {domain: _manifest(cfg, f"{cfg.source}/{domain}", *domains[domain]) for domain in DOMAINS}
    manifest = {**manifests["b"], "source": cfg.source, "kind": source.kind, "content_hash": content_hash,
                "truth": sorted(source.truth), "rare": None,
                "domains": {domain: {key: m[key] for key in ("shape", "levels", "labelled", "num_classes", "splits",
                                                             "content_hash")} for domain, m in manifests.items()}}
    with atomic_dir(target) as tmp:
        for domain in DOMAINS:
            (tmp / domain).mkdir()
            _write_arrays(tmp / domain, domains[domain][1], manifests[domain])
        for name, values in truth.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(values))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        _read_only(tmp)
    log.info("prepared %s dataset %s", source.kind, target)
    return Prepared(target, manifest, cache_hit=False)


def split_indices(source: SourceData, cfg: DataConfig) -> dict[str, np.ndarray]:
    """Deterministic, seeded splits; stratified by label when labels exist.

    Without an official test split, ``test_fraction`` and ``val_fraction`` are shares of all
    images; with one, the official test split is kept and ``val_fraction`` is a share of the rest.
    """
    n = len(source.images)
    rng = np.random.default_rng(cfg.seed)
    if source.test_mask is not None:
        test = np.flatnonzero(source.test_mask)
        pool = np.flatnonzero(~source.test_mask)
        parts = _stratified(pool, source.labels, {"val": cfg.val_fraction}, rng)
        parts["test"] = test
    else:
        parts = _stratified(np.arange(n), source.labels,
                            {"test": cfg.test_fraction, "val": cfg.val_fraction}, rng)
    if cfg.rare_class is not None:
        parts["train"] = _thin_class(parts["train"], source.labels, cfg, rng)
    for name in SPLITS:
        if len(parts[name]) == 0:
            raise ValueError(f"split {name!r} of source {cfg.source!r} is empty ({n} images); "
                             f"use more images or larger fractions")
    return {name: np.sort(parts[name]) for name in SPLITS}


def _thin_class(train: np.ndarray, labels: np.ndarray | None, cfg: DataConfig,
                rng: np.random.Generator) -> np.ndarray:
    """Keep ``rare_keep`` of ``rare_class``'s training images (at least one), all others whole."""
    if labels is None:
        raise ValueError(f"data.rare_class needs labelled data; source {cfg.source!r} has no labels")
    members = train[labels[train] == cfg.rare_class]
    if len(members) == 0:
        raise ValueError(f"data.rare_class={cfg.rare_class} has no training images; "
                         f"classes present: {sorted(np.unique(labels[train]).tolist())}")
    kept = rng.choice(members, max(1, int(round(cfg.rare_keep * len(members)))), replace=False)
    return np.concatenate([train[labels[train] != cfg.rare_class], kept])


def _stratified(pool: np.ndarray, labels: np.ndarray | None, fractions: dict[str, float],
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    groups = [pool] if labels is None else [pool[labels[pool] == c] for c in np.unique(labels[pool])]
    out: dict[str, list[np.ndarray]] = {name: [] for name in (*fractions, "train")}
    for group in groups:
        group = rng.permutation(group)
        start = 0
        for name, fraction in fractions.items():
            count = int(round(fraction * len(group)))
            out[name].append(group[start:start + count])
            start += count
        out["train"].append(group[start:])
    return {name: np.concatenate(parts) for name, parts in out.items()}


def induce_rarity(arrays: dict[str, tuple], levels: int, cfg: DataConfig) -> dict[str, tuple]:
    """``(images, labels, rare)`` per split: the style drawn on its share of each class (seeded, the
    same rule in every split) and the report-only rare flag; ``rare`` is None without a rarity."""
    if cfg.style is None:  # a rare class needs no file: DatasetVersion.rare derives it from the labels
        return {name: (images, labels, None) for name, (images, labels) in arrays.items()}
    from genlib.data.styles import STYLES

    if cfg.style_class is not None and (arrays["train"][1] is None or cfg.style_class not in arrays["train"][1]):
        raise ValueError(f"data.style_class={cfg.style_class} has no training images; a rare combination needs "
                         f"a labelled source and a class present in it")
    out = {}
    for number, name in enumerate(SPLITS):
        rng = np.random.default_rng([cfg.seed, 1, number])  # own streams: the split and the other splits stay put
        images, labels = arrays[name]
        styled = np.zeros(len(images), dtype=bool)
        groups = [np.arange(len(images))] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
        for group in groups:
            share = cfg.style_eval_share if name != "train" else (
                cfg.style_class_share if labels is not None and labels[group[0]] == cfg.style_class else cfg.style_share)
            styled[rng.choice(group, int(round(share * len(group))), replace=False)] = True
        images = images.copy()
        images[styled] = STYLES[cfg.style](images[styled], levels)
        rare = styled if cfg.style_class is None else styled & (labels == cfg.style_class)
        out[name] = (images, labels, rare)
    if not out["train"][2].any():
        raise ValueError(f"data.style={cfg.style!r} leaves no rare training image at these shares; raise "
                         f"data.style_share (or data.style_class_share for a rare combination)")
    return out


def hash_arrays(arrays: dict[str, tuple], levels: int) -> str:
    """SHA-256 over the levels and every split's images, labels and rare flags (when present)."""
    digest = hashlib.sha256(f"genlib-dataset-v{FORMAT_VERSION};levels={levels}".encode())
    for name in SPLITS:
        images, labels, rare = arrays[name]
        digest.update(f";{name};{images.shape}".encode())
        digest.update(np.ascontiguousarray(images).tobytes())
        if labels is not None:
            digest.update(b";labels")
            digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
        if rare is not None:
            digest.update(b";rare")
            digest.update(np.ascontiguousarray(rare, dtype=bool).tobytes())
    return digest.hexdigest()


def hash_two_domains(kind: str, domain_hashes: dict[str, str], truth: dict[str, np.ndarray]) -> str:
    """SHA-256 over the kind, each domain's content hash and the kept-aside truth arrays (by file name)."""
    digest = hashlib.sha256(f"genlib-dataset-v{FORMAT_VERSION};kind={kind}".encode())
    for domain in DOMAINS:
        digest.update(f";{domain}={domain_hashes[domain]}".encode())
    for name, values in sorted(truth.items()):
        digest.update(f";{name};{values.shape}".encode())
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = Path(path) / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{path} is not a prepared dataset version (no manifest.json)")
    return json.loads(manifest_path.read_text())


def verify_version(path: Path) -> None:
    """Recompute a version's content hash and raise if its files were changed."""
    manifest = read_manifest(path)
    if manifest.get("kind", IMAGES) != IMAGES:
        for domain in DOMAINS:
            verify_version(Path(path) / domain)
        truth = {f"truth_{d}_test": np.load(Path(path) / f"truth_{d}_test.npy") for d in manifest.get("truth", [])}
        actual = hash_two_domains(manifest["kind"], {d: read_manifest(Path(path) / d)["content_hash"] for d in DOMAINS},
                                  truth)
        if actual != manifest["content_hash"]:
            raise ValueError(f"{path}: content hash is {actual}, manifest says {manifest['content_hash']}")
        return
    arrays = {}
    for name in SPLITS:
        optional = [Path(path) / f"{name}_{kind}.npy" for kind in ("labels", "rare")]
        arrays[name] = (np.load(Path(path) / f"{name}_images.npy"),
                        *(np.load(p) if p.exists() else None for p in optional))
    actual = hash_arrays(arrays, manifest["levels"])
    if actual != manifest["content_hash"]:
        raise ValueError(f"{path}: content hash is {actual}, manifest says {manifest['content_hash']}")


def _manifest(cfg: DataConfig, name: str, source: SourceData, arrays, content_hash: str) -> dict[str, Any]:
    _, h, w, c = source.images.shape
    labelled = source.labels is not None
    return {
        "format_version": FORMAT_VERSION,
        "source": name,
        "kind": IMAGES,
        "data_config": asdict(cfg),
        "shape": [h, w, c],
        "levels": source.levels,
        "labelled": labelled,
        "num_classes": int(source.labels.max()) + 1 if labelled else None,
        "class_names": list(source.class_names) if source.class_names else None,
        "splits": {name: int(len(arrays[name][0])) for name in SPLITS},
        "rare": _rare_counts(cfg, arrays),
        "seed": cfg.seed,
        "content_hash": content_hash,
    }


def _rare_counts(cfg: DataConfig, arrays) -> dict[str, int] | None:
    """Images flagged rare per split (the manifest's summary of ``DatasetVersion.rare``)."""
    if cfg.style is not None:
        return {name: int(arrays[name][2].sum()) for name in SPLITS}
    if cfg.rare_class is not None:
        return {name: int((arrays[name][1] == cfg.rare_class).sum()) for name in SPLITS}
    return None


def _write_arrays(folder: Path, arrays, manifest: dict[str, Any]) -> None:
    for name, (images, labels, rare) in arrays.items():
        np.save(folder / f"{name}_images.npy", np.ascontiguousarray(images))
        if labels is not None:
            np.save(folder / f"{name}_labels.npy", labels.astype(np.int64))
        if rare is not None:
            np.save(folder / f"{name}_rare.npy", rare.astype(bool))
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _read_only(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            f.chmod(0o444)  # a version is never modified

"""Two-domain sources: paired and unpaired image sets for image-to-image translation.

A two-domain source returns ``TwoDomains``: each domain as ``SourceData`` (its images, labels and
levels) and the data kind. Paired domains are aligned item by item; unpaired ones have any sizes.

* ``paired-folder``: ``data.path/A/`` and ``data.path/B/`` holding images of the same relative
  names, or one folder of side-by-side images (A left, B right, each half as wide), as the pix2pix
  datasets ship them;
* ``unpaired-folder``: ``data.path/A/`` and ``data.path/B/``, any counts;
* ``paired-npz`` / ``unpaired-npz``: arrays ``a`` and ``b`` (N, H, W[, C]) of integer levels, with
  optional ``labels`` (paired) or ``labels_a`` / ``labels_b`` (unpaired);
* ``digits-edges`` (paired) and ``digits-bold`` (unpaired): tasks synthesised from scikit-learn's
  digits (``data.image_size``, default 32): the stroke outline → the digit; plain digits ↔ bold
  digits, the two domains drawn from disjoint halves of the images so that nothing is paired. For
  ``digits-bold`` the true translation of every image is known: it is kept aside (``truth``) for the
  evaluation only.

Every problem with the input is a ``ValueError`` naming the file; nothing is written here.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from genlib.config import DataConfig
from genlib.data.kinds import PAIRED, UNPAIRED
from genlib.data.sources import (
    _IMAGE_SUFFIXES,
    SOURCES,
    SourceData,
    _image_array,
    _integral_images,
    _open_image,
    _required_path,
    check_images,
    digits,
)

DIGITS_TASK_SIZE = 32  # the synthesised tasks' default size: room for a U-Net's five halvings


@dataclass(frozen=True)
class TwoDomains:
    kind: str  # PAIRED or UNPAIRED
    a: SourceData
    b: SourceData
    # direction ("a2b", "b2a") → the true translation of every image of the source domain (aligned
    # with its images), where the task knows it: for evaluation only, never for training
    truth: dict[str, np.ndarray] = field(default_factory=dict)

    def check(self, where: str) -> TwoDomains:
        for name, domain in (("A", self.a), ("B", self.b)):
            check_images(domain.images, domain.levels, where=f"{where}, domain {name}")
        if self.a.images.shape[1:3] != self.b.images.shape[1:3]:
            raise ValueError(f"{where}: domain A's images are {self.a.images.shape[1:3]}, domain B's "
                             f"{self.b.images.shape[1:3]}; translation needs one size (set data.image_size)")
        if self.kind == PAIRED and len(self.a.images) != len(self.b.images):
            raise ValueError(f"{where}: a paired set needs as many A images as B images, got "
                             f"{len(self.a.images)} and {len(self.b.images)}")
        for direction, truth in self.truth.items():
            source, target = (self.a, self.b) if direction == "a2b" else (self.b, self.a)
            if truth.shape != (len(source.images), *target.images.shape[1:]):
                raise ValueError(f"{where}: the {direction} truth has shape {truth.shape}")
        return self


# --------------------------------------------------------------------------- folders


def _folder_images(files: list[Path], cfg: DataConfig) -> np.ndarray:
    """uint8 (N, H, W, C) of ``files``: one mode (data.channels, else grey when all are grey), one size."""
    mode = {1: "L", 3: "RGB", None: None}[cfg.channels]
    opened = [_open_image(f) for f in files]
    mode = mode or ("L" if all(im.mode in ("L", "1", "I;16") for im in opened) else "RGB")
    images = np.stack([_image_array(im, f, mode, cfg.image_size, files[0], opened[0].size)
                       for im, f in zip(opened, files)])
    return images[..., None] if images.ndim == 3 else images


def _listing(folder: Path) -> dict[str, Path]:
    """Image files under ``folder`` by their path relative to it, without suffix."""
    return {str(p.relative_to(folder).with_suffix("")): p for p in sorted(folder.rglob("*"))
            if p.suffix.lower() in _IMAGE_SUFFIXES}


def _domain_folders(cfg: DataConfig, source: str) -> tuple[Path, Path] | None:
    root = _required_path(cfg, source)
    if not root.is_dir():
        raise ValueError(f"data.path {str(root)!r} is not a folder")
    a, b = root / "A", root / "B"
    if a.is_dir() != b.is_dir():
        raise ValueError(f"{root}: found {'A/' if a.is_dir() else 'B/'} but not {'B/' if a.is_dir() else 'A/'}; "
                         f"a two-domain folder has both")
    return (a, b) if a.is_dir() else None


@SOURCES.register("paired-folder")
def paired_folder(cfg: DataConfig) -> TwoDomains:
    """Aligned pairs: ``A/`` and ``B/`` with matching relative file names, or side-by-side images."""
    folders = _domain_folders(cfg, "paired-folder")
    if folders is None:
        return _side_by_side(cfg)
    listed = [_listing(folder) for folder in folders]
    for folder, files in zip(folders, listed):
        if not files:
            raise ValueError(f"{folder}: no PNG or JPEG images (domain is empty)")
    only_a, only_b = sorted(set(listed[0]) - set(listed[1])), sorted(set(listed[1]) - set(listed[0]))
    if only_a or only_b:
        missing = [f"{listed[0][n]} has no partner in {folders[1]}" for n in only_a[:3]] + \
                  [f"{listed[1][n]} has no partner in {folders[0]}" for n in only_b[:3]]
        raise ValueError(f"paired-folder: {len(only_a) + len(only_b)} unmatched file names: " + "; ".join(missing))
    names = sorted(listed[0])
    a, b = (_folder_images([files[n] for n in names], cfg) for files in listed)
    return TwoDomains(PAIRED, SourceData(a, None, 256), SourceData(b, None, 256)).check("paired-folder")


def _side_by_side(cfg: DataConfig) -> TwoDomains:
    root = Path(cfg.path)
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{root}: no A/ and B/ folders and no PNG or JPEG images (side-by-side pairs) in it")
    halves = []
    for f in files:
        image = _open_image(f)
        w, h = image.size
        if w % 2:
            raise ValueError(f"{f}: a side-by-side pair is two images of one width; this one is {w} pixels wide")
        halves.append((image.crop((0, 0, w // 2, h)), image.crop((w // 2, 0, w, h))))
    mode = {1: "L", 3: "RGB", None: None}[cfg.channels] or (
        "L" if all(a.mode in ("L", "1", "I;16") for a, _ in halves) else "RGB")
    first = halves[0][0].size
    a, b = (np.stack([_image_array(pair[side], f, mode, cfg.image_size, files[0], first)
                      for pair, f in zip(halves, files)]) for side in (0, 1))
    a, b = (x[..., None] if x.ndim == 3 else x for x in (a, b))
    return TwoDomains(PAIRED, SourceData(a, None, 256), SourceData(b, None, 256)).check("paired-folder")


@SOURCES.register("unpaired-folder")
def unpaired_folder(cfg: DataConfig) -> TwoDomains:
    """Two domains, ``A/`` and ``B/``, any counts."""
    folders = _domain_folders(cfg, "unpaired-folder")
    if folders is None:
        raise ValueError(f"{cfg.path}: an unpaired set needs the folders A/ and B/, one per domain")
    domains = []
    for folder in folders:
        files = list(_listing(folder).values())
        if not files:
            raise ValueError(f"{folder}: no PNG or JPEG images (domain is empty)")
        domains.append(SourceData(_folder_images(files, cfg), None, 256))
    return TwoDomains(UNPAIRED, *domains).check("unpaired-folder")


# --------------------------------------------------------------------------- npz


def _npz_arrays(cfg: DataConfig, source: str) -> tuple[Path, dict[str, np.ndarray], int]:
    path = _required_path(cfg, source)
    levels = cfg.levels or 256
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zlib.error, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from err
    missing = [k for k in ("a", "b") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: a two-domain .npz needs arrays 'a' and 'b'; missing {missing}, found {sorted(arrays)}")
    return path, arrays, levels


def _npz_labels(arrays: dict[str, np.ndarray], key: str, n: int, path: Path) -> np.ndarray | None:
    labels = arrays.get(key)
    if labels is None:
        return None
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: {key!r} must be {n} integers, got {labels.dtype} {labels.shape}")
    return labels.astype(np.int64)


@SOURCES.register("paired-npz")
def paired_npz(cfg: DataConfig) -> TwoDomains:
    """Aligned arrays ``a`` and ``b`` and optional ``labels`` (one per pair)."""
    path, arrays, levels = _npz_arrays(cfg, "paired-npz")
    a, b = (_integral_images(arrays[k], levels, path) for k in ("a", "b"))
    if len(a) != len(b):
        raise ValueError(f"{path}: a paired set needs as many 'a' as 'b' images, got {len(a)} and {len(b)}")
    labels = _npz_labels(arrays, "labels", len(a), path)
    return TwoDomains(PAIRED, SourceData(a, labels, levels), SourceData(b, labels, levels)).check(str(path))


@SOURCES.register("unpaired-npz")
def unpaired_npz(cfg: DataConfig) -> TwoDomains:
    """Arrays ``a`` and ``b`` of any lengths, optional ``labels_a`` and ``labels_b``."""
    path, arrays, levels = _npz_arrays(cfg, "unpaired-npz")
    a, b = (_integral_images(arrays[k], levels, path) for k in ("a", "b"))
    return TwoDomains(UNPAIRED, SourceData(a, _npz_labels(arrays, "labels_a", len(a), path), levels),
                      SourceData(b, _npz_labels(arrays, "labels_b", len(b), path), levels)).check(str(path))


# --------------------------------------------------------------------------- digits tasks


def outline(images: np.ndarray, levels: int) -> np.ndarray:
    """The stroke's inner boundary: pixels at or above half the range with a 4-neighbour below it (or at
    the border), at the top level; everything else 0."""
    stroke = images >= levels // 2
    padded = np.pad(stroke, ((0, 0), (1, 1), (1, 1), (0, 0)))
    inner = stroke & padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    return np.where(stroke & ~inner, levels - 1, 0).astype(np.uint8)


def bold(images: np.ndarray, levels: int) -> np.ndarray:
    """A bold pen: grey-level dilation with a 3×3 footprint (each pixel the maximum of its neighbourhood)."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = images.shape[1:3]
    return np.max([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)


def _digits(cfg: DataConfig) -> SourceData:
    return digits(replace(cfg, image_size=cfg.image_size or DIGITS_TASK_SIZE))


@SOURCES.register("digits-edges")
def digits_edges(cfg: DataConfig) -> TwoDomains:
    """Paired: A is a digit's outline, B the digit (both labelled with its class)."""
    data = _digits(cfg)
    edges = SourceData(outline(data.images, data.levels), data.labels, data.levels, class_names=data.class_names)
    return TwoDomains(PAIRED, edges, data).check("digits-edges")


@SOURCES.register("digits-bold")
def digits_bold(cfg: DataConfig) -> TwoDomains:
    """Unpaired: A is plain digits, B bold ones (``bold``), from disjoint halves of the images (a seeded
    split, half of each class to each side). The true translations (A's images in bold, B's originals)
    are kept as ``truth``."""
    data = _digits(cfg)
    rng = np.random.default_rng([cfg.seed, 2])
    to_b = np.zeros(len(data.images), dtype=bool)
    for label in np.unique(data.labels):
        members = rng.permutation(np.flatnonzero(data.labels == label))
        to_b[members[: len(members) // 2]] = True

    def side(mask: np.ndarray, images: np.ndarray) -> SourceData:
        return SourceData(images[mask], data.labels[mask], data.levels, class_names=data.class_names)

    thick = bold(data.images, data.levels)
    return TwoDomains(UNPAIRED, side(~to_b, data.images), side(to_b, thick),
                      truth={"a2b": thick[~to_b], "b2a": data.images[to_b]}).check("digits-bold")

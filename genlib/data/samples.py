"""Samples from any generator, read for an audit against a prepared dataset version.

``read_samples`` takes a folder of PNG/JPEG files or an ``.npz`` file and returns uint8 images
(N, C, H, W) in the dataset's shape and levels, or says exactly what does not match:

* a folder: every PNG/JPEG under it (sorted by path); grey or colour as the dataset is;
* an ``.npz``: the array ``images`` (or ``samples``, or its only array), shaped (N, H, W),
  (N, H, W, C) or (N, C, H, W) (what ``genlib sample -o x.npz`` writes), integer-valued; a stored
  ``levels`` scalar says how many values its pixels take.

Samples of another size are an error unless ``resize`` (bicubic, to the dataset's size); samples
with values the dataset does not have (PNGs hold 0..255; digits have 17 levels) are an error unless
``quantise``, which maps the source's S levels (256, or the ``levels`` an .npz stores) onto the
dataset's L: v ↦ round(v·(L−1)/(S−1)). What was done is
returned with the images so the audit records it in its protocol.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_samples(path: str | Path, shape: tuple[int, int, int], levels: int, resize: bool = False,
                 quantise: bool = False) -> tuple[np.ndarray, dict[str, str]]:
    """uint8 (N, C, H, W) samples matching ``shape`` (C, H, W) and ``levels``, and the conversions
    applied ({"audit.resize": ..., "audit.quantise": ...}, empty when none was needed)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"samples {str(path)!r} do not exist: pass a folder of PNG/JPEG files or an .npz file")
    channels, height, width = shape
    if path.is_dir():
        images, source_levels = _folder(path, channels, (height, width) if resize else None), 256
    elif path.suffix == ".npz":
        images, source_levels = _npz(path, shape)
    else:
        raise ValueError(f"samples {str(path)!r}: expected a folder of PNG/JPEG files or an .npz file")
    if len(images) == 0:
        raise ValueError(f"samples {str(path)!r}: no images")
    done = {}
    if images.shape[1] != channels:
        raise ValueError(f"samples {str(path)!r} have {images.shape[1]} channel(s); the dataset has {channels}")
    if images.shape[2:] != (height, width):
        if not resize:
            raise ValueError(f"samples {str(path)!r} are {images.shape[2]}×{images.shape[3]}; the dataset's images are "
                             f"{height}×{width}: pass --resize to resize them (bicubic) to the dataset's size")
        images = _resized(images, (height, width), source_levels)
        done["audit.resize"] = f"bicubic to {height}×{width}"
    if path.is_dir() and resize and "audit.resize" not in done:
        done["audit.resize"] = f"bicubic to {height}×{width} (where needed)"
    top = int(images.max())
    if quantise and source_levels != levels:
        images = np.rint(images.astype(np.float64) * (levels - 1) / (source_levels - 1)).astype(np.uint8)
        done["audit.quantise"] = f"round(v·{levels - 1}/{source_levels - 1}): {source_levels} → {levels} levels"
    elif top >= levels:
        raise ValueError(f"samples {str(path)!r} hold values up to {top}; the dataset has {levels} levels "
                         f"(0..{levels - 1}): pass --quantise to map 0..{source_levels - 1} onto 0..{levels - 1}")
    return images, done


def _folder(root: Path, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"samples folder {str(root)!r}: no PNG or JPEG files found")
    mode = "L" if channels == 1 else "RGB"
    arrays, first = [], None
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                image = image.convert(mode)
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise ValueError(f"{file}: unreadable image ({err})") from err
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
        array = np.asarray(image, dtype=np.uint8)
        first = first or (file, array.shape)
        if array.shape != first[1]:
            raise ValueError(f"{file}: {array.shape[1]}×{array.shape[0]} differs from {first[0]} "
                             f"({first[1][1]}×{first[1][0]}); pass --resize to bring every sample to the dataset's size")
        arrays.append(array)
    images = np.stack(arrays)
    return images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)


def _npz(path: Path, shape: tuple[int, int, int]) -> tuple[np.ndarray, int]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zlib.error, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from err
    name = next((k for k in ("images", "samples") if k in arrays), None)
    if name is None:
        big = [k for k, v in arrays.items() if v.ndim >= 3]
        if len(big) != 1:
            raise ValueError(f"{path}: no 'images' or 'samples' array, and not one image array to take; "
                             f"found {sorted(arrays)}")
        name = big[0]
    images = arrays[name]
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise ValueError(f"{path}: '{name}' must be numeric, got {images.dtype}")
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all() or not np.array_equal(images, np.round(images)):
            raise ValueError(f"{path}: '{name}' holds non-integer or non-finite values; store discrete levels")
    if images.size and images.min() < 0:
        raise ValueError(f"{path}: '{name}' has negative values ({images.min()}); store levels 0..L-1")
    if images.size and images.max() > 255:
        raise ValueError(f"{path}: '{name}' has values up to {images.max()}; at most 256 levels (0..255) are supported")
    images = _channels_first(images.astype(np.uint8), shape, path, name)
    stored = arrays.get("levels")
    source_levels = int(stored) if stored is not None and np.ndim(stored) == 0 else 256
    return images, source_levels


def _channels_first(images: np.ndarray, shape: tuple[int, int, int], path: Path, name: str) -> np.ndarray:
    """(N, C, H, W) from (N, H, W), (N, H, W, C) or (N, C, H, W), using the dataset's shape to tell them apart."""
    c = shape[0]
    if images.ndim == 3:
        return images[:, None]
    if images.ndim != 4:
        raise ValueError(f"{path}: '{name}' must be (N, H, W), (N, H, W, C) or (N, C, H, W), got {images.shape}")
    if images.shape[1:] == shape:
        return images
    if images.shape[3] == c or (images.shape[3] in (1, 3) and images.shape[1] not in (1, 3)):
        return images.transpose(0, 3, 1, 2)
    return images


def _resized(images: np.ndarray, size: tuple[int, int], levels: int) -> np.ndarray:
    out = []
    for image in images:  # (C, H, W)
        planes = [Image.fromarray(plane).resize((size[1], size[0]), Image.Resampling.BICUBIC) for plane in image]
        out.append(np.stack([np.asarray(p) for p in planes]))
    return np.clip(np.stack(out), 0, levels - 1).astype(np.uint8)

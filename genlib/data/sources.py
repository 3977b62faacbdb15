"""Dataset sources: one small function each, registered by name.

A source turns raw files into uint8 images ``(N, H, W, C)`` in ``[0, levels)``, optional integer
labels, and, where the data ships one, the official test split. Every problem with the input is
a ``ValueError`` naming the file and what was wrong; nothing is written here.
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from genlib import paths
from genlib.config import DataConfig
from genlib.data.download import fetch
from genlib.registry import Registry


@dataclass(frozen=True)
class SourceData:
    images: np.ndarray  # (N, H, W, C) uint8 in [0, levels)
    labels: np.ndarray | None  # (N,) int64, or None when unlabelled
    levels: int  # discrete values per channel
    test_mask: np.ndarray | None = None  # (N,) bool: the source's official test split, if any
    class_names: tuple[str, ...] | None = None


Source = Callable[[DataConfig], SourceData]
SOURCES: Registry[Source] = Registry("dataset source")


def load_source(cfg: DataConfig):
    """The source's ``SourceData`` (one image set) or ``pairs.TwoDomains`` (paired or unpaired domains)."""
    data = SOURCES.get(cfg.source)(cfg)
    if isinstance(data, SourceData):
        check_images(data.images, data.levels, where=f"source {cfg.source!r}")
    return data


def check_images(images: np.ndarray, levels: int, where: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{where}: images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise ValueError(f"{where}: no images")
    if images.max() >= levels:
        raise ValueError(f"{where}: pixel value {images.max()} is outside [0, {levels})")


# --------------------------------------------------------------------------- digits


@SOURCES.register("digits")
def digits(cfg: DataConfig) -> SourceData:
    """scikit-learn's bundled 8×8 digits: 1,797 images, values 0..16 (17 levels), 10 classes.

    ``data.image_size`` upsamples them (bilinear) to that square size, so that families that grow
    or halve resolutions (progressive growing, U-Nets) have room; ``data.levels`` requantises the
    values (default: the 17 of the originals)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    levels = cfg.levels or 17
    if cfg.image_size not in (None, 8) or levels != 17:
        images = resample(images, 17, cfg.image_size or 8, levels)
    return SourceData(images, bunch.target.astype(np.int64), levels=levels,
                      class_names=tuple(str(c) for c in range(10)))


def resample(images: np.ndarray, levels: int, size: int, new_levels: int) -> np.ndarray:
    """uint8 (N, H, W, C) images with ``levels`` values, bilinearly resized to ``size``² (half-pixel
    centres, as PIL and torchvision) and rounded to ``new_levels`` values: uint8 (N, size, size, C)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images.astype(np.float32) / (levels - 1)).permute(0, 3, 1, 2)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * (new_levels - 1)).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


# --------------------------------------------------------------------------- MNIST-style IDX

_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
# Published MD5s of the four files (the same ones torchvision and the dataset pages list).
_MNIST_MD5 = ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
              "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")
_FASHION_MD5 = ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")
_IDX_DTYPE = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file, checking its header against its payload."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: not a readable gzip file ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = raw[2], raw[3]
    if dtype not in _IDX_DTYPE:
        raise ValueError(f"{path}: IDX element type 0x{dtype:02x} is not supported (only unsigned byte)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header is truncated")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX header says shape {shape} ({expected} bytes) "
                         f"but the file holds {len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_dataset(cfg: DataConfig, base_url: str, md5s: tuple[str, ...], name: str) -> SourceData:
    folder = Path(cfg.path) if cfg.path else paths.downloads_dir() / name
    files = [fetch(base_url + f, f"md5:{md5}", folder / f) for f, md5 in zip(_IDX_FILES, md5s)]
    train_x, train_y, test_x, test_y = (read_idx(f) for f in files)
    for x, y, fx, fy in ((train_x, train_y, files[0], files[1]), (test_x, test_y, files[2], files[3])):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{fx} and {fy} disagree: images {x.shape}, labels {y.shape}")
    images = np.concatenate([train_x, test_x])[..., None]
    labels = np.concatenate([train_y, test_y]).astype(np.int64)
    test_mask = np.arange(len(images)) >= len(train_x)
    return SourceData(images, labels, levels=256, test_mask=test_mask)


@SOURCES.register("mnist")
def mnist(cfg: DataConfig) -> SourceData:
    """MNIST, 28×28 grey, from the four IDX gz files (downloaded and checked, or in data.path)."""
    return _idx_dataset(cfg, _MNIST_URL, _MNIST_MD5, "mnist")


@SOURCES.register("fashion-mnist")
def fashion_mnist(cfg: DataConfig) -> SourceData:
    """Fashion-MNIST, same format as MNIST."""
    return _idx_dataset(cfg, _FASHION_URL, _FASHION_MD5, "fashion-mnist")


# --------------------------------------------------------------------------- CIFAR-10

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR_TRAIN = tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "cifar-10-batches-py/test_batch"


@SOURCES.register("cifar10")
def cifar10(cfg: DataConfig) -> SourceData:
    """CIFAR-10, 32×32 RGB, from the python-batches tarball (downloaded and checked, or in data.path)."""
    folder = Path(cfg.path) if cfg.path else paths.downloads_dir() / "cifar10"
    archive = fetch(_CIFAR_URL, f"md5:{_CIFAR_MD5}", folder / "cifar-10-python.tar.gz")
    batches = read_cifar_tarball(archive)
    train = [batches[name] for name in _CIFAR_TRAIN]
    test = batches[_CIFAR_TEST]
    images = np.concatenate([x for x, _ in train] + [test[0]])
    labels = np.concatenate([y for _, y in train] + [test[1]])
    test_mask = np.arange(len(images)) >= len(images) - len(test[0])
    return SourceData(images, labels, levels=256, test_mask=test_mask)


def read_cifar_tarball(archive: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read every batch of a CIFAR-10 python tarball as ``{member: (images NHWC, labels)}``."""
    wanted = set(_CIFAR_TRAIN) | {_CIFAR_TEST}
    out = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.name in wanted:
                    out[member.name] = _cifar_batch(tar.extractfile(member).read(), f"{archive}:{member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{archive}: truncated or corrupt tar.gz archive ({err})") from err
    missing = sorted(wanted - set(out))
    if missing:
        raise ValueError(f"{archive}: missing CIFAR-10 batches {missing}")
    return out


def _cifar_batch(blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = pickle.loads(blob, encoding="bytes")  # the official format is a pickle
        data, labels = batch[b"data"], batch[b"labels"]
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt batch
        raise ValueError(f"{where}: not a CIFAR-10 batch ({err})") from err
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{where}: expected (N, 3072) data and N labels, got {data.shape} and {len(labels)}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), np.asarray(labels, dtype=np.int64)


# --------------------------------------------------------------------------- image folder

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@SOURCES.register("folder")
def image_folder(cfg: DataConfig) -> SourceData:
    """PNG/JPEG files under data.path; class subfolders become labels (sorted by name)."""
    root = _required_path(cfg, "folder")
    if not root.is_dir():
        raise ValueError(f"data.path {str(root)!r} is not a folder")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    if subdirs:
        groups = [(i, sorted(p for p in d.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)) for i, d in enumerate(subdirs)]
        names = tuple(d.name for d in subdirs)
    else:
        groups = [(None, sorted(p for p in root.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES))]
        names = None
    files = [(f, label) for label, fs in groups for f in fs]
    if not files:
        raise ValueError(f"{root}: no PNG or JPEG images found (looked for {sorted(_IMAGE_SUFFIXES)})")
    mode = {1: "L", 3: "RGB", None: None}.get(cfg.channels, "?")
    if mode == "?":
        raise ValueError(f"data.channels must be 1, 3 or null, got {cfg.channels}")
    opened = [_open_image(f) for f, _ in files]
    mode = mode or ("L" if all(im.mode in ("L", "1", "I;16") for im in opened) else "RGB")
    images = np.stack([_image_array(im, f, mode, cfg.image_size, files[0][0], opened[0].size)
                       for im, (f, _) in zip(opened, files)])
    if images.ndim == 3:
        images = images[..., None]
    labels = None if names is None else np.array([label for _, label in files], dtype=np.int64)
    return SourceData(images, labels, levels=256, class_names=names)


def _open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
        return image
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: unreadable image ({err})") from err


def _image_array(image: Image.Image, path: Path, mode: str, size: int | None,
                 first: Path, first_size: tuple[int, int]) -> np.ndarray:
    if size is not None:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    elif image.size != first_size:
        raise ValueError(f"{path}: size {image.size} differs from {first} {first_size}; "
                         f"set data.image_size to resize all images to one square size")
    return np.asarray(image.convert(mode), dtype=np.uint8)


# --------------------------------------------------------------------------- npz arrays


@SOURCES.register("npz")
def npz(cfg: DataConfig) -> SourceData:
    """``images`` (N,H,W[,C]) integer-valued arrays in [0, levels) and optional ``labels`` (N,)."""
    path = _required_path(cfg, "npz")
    levels = cfg.levels or 256
    if not 2 <= levels <= 256:
        raise ValueError(f"data.levels must be in [2, 256] (images are stored as uint8), got {levels}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zlib.error, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from err
    if "images" not in arrays:
        raise ValueError(f"{path}: no 'images' array; found {sorted(arrays)}")
    images = _integral_images(arrays["images"], levels, path)
    labels = arrays.get("labels")
    if labels is not None:
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{path}: 'labels' must be {len(images)} integers, got {labels.dtype} {labels.shape}")
        labels = labels.astype(np.int64)
    return SourceData(images, labels, levels=levels)


def _integral_images(images: np.ndarray, levels: int, path: Path) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"{path}: 'images' must be (N, H, W) or (N, H, W, C), got shape {images.shape}")
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise ValueError(f"{path}: 'images' must be numeric, got {images.dtype}")
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise ValueError(f"{path}: 'images' contains NaN or infinite values")
        if not np.array_equal(images, np.round(images)):
            raise ValueError(f"{path}: 'images' holds non-integer values; store discrete levels 0..{levels - 1}")
    lo, hi = images.min(), images.max()
    if lo < 0 or hi >= levels:
        raise ValueError(f"{path}: 'images' values span [{lo}, {hi}], outside [0, {levels - 1}] "
                         f"(data.levels={levels})")
    return images.astype(np.uint8)


def _required_path(cfg: DataConfig, source: str) -> Path:
    if not cfg.path:
        raise ValueError(f"dataset source {source!r} reads local files: set data.path")
    path = Path(cfg.path)
    if not path.exists():
        raise ValueError(f"data.path {str(path)!r} does not exist")
    return path

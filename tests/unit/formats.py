"""Writers of small files in the real on-disk formats genlib reads (for tests)."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, shape: tuple[int, ...] | None = None) -> Path:
    """Gzipped IDX (unsigned byte); ``shape`` overrides the header to make it lie."""
    shape = shape or array.shape
    header = bytes([0, 0, 0x08, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
    return path


def write_mnist_folder(folder: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = [
        write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28))),
        write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10),
        write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28))),
        write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10),
    ]
    return files


def write_cifar_tarball(path: Path, per_batch: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz") as tar:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for name in names:
            batch = {b"data": rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8),
                     b"labels": [int(i % 10) for i in range(per_batch)]}
            blob = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()

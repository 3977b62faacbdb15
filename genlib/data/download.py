"""Checksum-verified, cached downloads that fail offline with a message saying what to do."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from genlib.io import atomic_file

OFFLINE_ENV = "GENLIB_OFFLINE"
_CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, checksum: str) -> None:
    """Raise if ``path`` does not match ``checksum`` ("md5:<hex>" or "sha256:<hex>")."""
    algorithm, _, expected = checksum.partition(":")
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ValueError(
            f"{path}: {algorithm} checksum is {actual}, expected {expected}; "
            f"the file is corrupt or a different version: delete it and fetch it again"
        )


def fetch(url: str, checksum: str, dest: Path) -> Path:
    """Return ``dest`` holding the file at ``url``, downloading it only if it is not there.

    An existing file is verified too, so a corrupt cache is reported rather than used. The
    download goes to a temporary file in the same directory and is renamed only once its
    checksum matches, so an interrupted download never looks complete.
    """
    dest = Path(dest)
    if dest.exists():
        verify(dest, checksum)
        return dest
    if os.environ.get(OFFLINE_ENV):
        raise FileNotFoundError(_missing_message(url, checksum, dest, f"{OFFLINE_ENV} is set"))
    try:
        with atomic_file(dest) as tmp, open(tmp, "wb") as out:
            _download(url, out)
            out.flush()
            verify(tmp, checksum)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise FileNotFoundError(_missing_message(url, checksum, dest, str(err))) from err
    return dest


def _download(url: str, out) -> None:
    with urllib.request.urlopen(url, timeout=30) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {url.rsplit('/', 1)[-1]}") as bar:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                bar.update(len(block))


def _missing_message(url: str, checksum: str, dest: Path, reason: str) -> str:
    return (
        f"could not download {url} ({reason}). Put the file at {dest} "
        f"(expected {checksum}) or set data.path to a folder that holds it"
    )

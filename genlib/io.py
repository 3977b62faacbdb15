"""Atomic writes: the one helper every writer of a file or a directory uses.

A writer fills a temporary path next to its target, and the target appears only by a rename once
the content is complete: a crash, an exception or a full disk leaves the old target (or none)
and no half-written one. Both helpers remove their temporary path on failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary file path in ``target``'s folder, renamed over ``target`` when the block completes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """A temporary directory in ``target``'s folder, renamed to ``target`` when the block completes.

    If ``target`` exists by then: with ``overwrite`` it is replaced; without, it is kept — another
    process wrote the same content first (a directory appears here only complete, by a rename)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    try:
        yield tmp
        if overwrite and target.exists():
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)

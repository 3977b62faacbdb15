"""Arrays computed once per dataset version and kept under ``GENLIB_HOME/features``.

A key names everything that changes the numbers (dataset hash, split, extractor preprocessing,
n, ...), so an entry is never read for inputs it was not computed from. Entries are written to a
temporary file and renamed, so a crash never leaves a half-written entry behind.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from genlib import paths
from genlib.io import atomic_file


def cached_arrays(key: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``compute()``'s arrays, from ``features/<key>.npz`` when an earlier call stored them."""
    if "/" in key or key.startswith("."):
        raise ValueError(f"cache keys are plain file names, got {key!r}")
    path = paths.home() / "features" / f"{key}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    arrays = compute()
    with atomic_file(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, **arrays)
    return arrays

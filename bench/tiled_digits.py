"""A bigger digits dataset for timing benches: sklearn's 8×8 digits repeated ``tile`` times, as an
npz source, so an epoch lasts seconds rather than milliseconds."""

from __future__ import annotations

from pathlib import Path


def tiled_digits_overrides(folder: str | Path, tile: int) -> list[str]:
    """Write the tiled digits into ``folder`` and return the config overrides that read them."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    npz = Path(folder) / "digits-tiled.npz"
    np.savez(npz, images=np.tile(digits.images.astype(np.uint8), (tile, 1, 1)), labels=np.tile(digits.target, tile))
    return ["data.source=npz", f"data.path={npz}", "data.levels=17"]

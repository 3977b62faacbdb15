"""The per-sample weights file: how ``genlib reweight`` hands sampling weights to ``genlib train``.

A weights file is parquet with one row per sample of a dataset version's train split —
``index`` (its position), ``weight`` (summing to 1), ``log_density`` (what the weight came
from) and optionally ``label`` (for reports only) — and JSON metadata in the schema: the
dataset's content hash, the VAE run it came from, the reweighting parameters and a ``key``.
``check_weights`` refuses weights computed for another dataset version before training starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from genlib.io import atomic_file

WEIGHTS_FILE = "weights.parquet"  # its name, on disk and as an MLflow artifact
WEIGHT_COLUMNS = ("index", "weight", "log_density")  # required in a weights file; "label" optional
META_KEY = b"genlib.weights"  # parquet schema-metadata key holding the JSON metadata
SUM_TOLERANCE = 1e-6  # |Σ weights − 1| allowed in a weights file


def weights_table(weights: np.ndarray, log_density: np.ndarray, labels: np.ndarray | None = None):
    """DataFrame with one row per sample of the split: index, weight, log_density[, label]."""
    import pandas as pd

    w, ld = np.asarray(weights, dtype=np.float64), np.asarray(log_density, dtype=np.float64)
    if w.ndim != 1 or w.shape != ld.shape:
        raise ValueError(f"weights {w.shape} and log_density {ld.shape} must be the same (N,) shape")
    columns = {"index": np.arange(len(w), dtype=np.int64), "weight": w, "log_density": ld}
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != w.shape:
            raise ValueError(f"labels {labels.shape} must match weights {w.shape}")
        columns["label"] = labels.astype(np.int64)
    table = pd.DataFrame(columns)
    _validate_table(table, "weights_table")
    return table


def write_weights(table, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write the table as parquet, ``meta`` (dataset hash, VAE run id, parameters; JSON-able) in
    the schema metadata. Atomic: a temporary file in the same folder, then ``os.replace``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    _validate_table(table, str(path))
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    schema_meta = {**(arrow.schema.metadata or {}), META_KEY: json.dumps(meta, sort_keys=True).encode()}
    arrow = arrow.replace_schema_metadata(schema_meta)
    with atomic_file(path) as tmp:
        pq.write_table(arrow, tmp)
    return path


def read_weights(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """The weights table, in sample order, and its metadata, checked: columns present, indices
    0..N−1, weights finite, ≥ 0 and summing to 1."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}; create one with `genlib reweight`")
    arrow = pq.read_table(path)
    raw_meta = (arrow.schema.metadata or {}).get(META_KEY)
    if raw_meta is None:
        raise ValueError(f"{path} is a parquet file without genlib weights metadata; was it written by write_weights?")
    table = arrow.to_pandas()
    _validate_table(table, str(path))
    return table.sort_values("index", ignore_index=True), json.loads(raw_meta)


def _validate_table(table, where: str) -> None:
    missing = [c for c in WEIGHT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{where}: weights table lacks column(s) {missing}; "
                         f"needs {list(WEIGHT_COLUMNS)} (+ optional 'label'), has {list(table.columns)}")
    index = table["index"].to_numpy()
    if not np.issubdtype(index.dtype, np.integer) or not np.array_equal(np.sort(index), np.arange(len(index))):
        raise ValueError(f"{where}: column 'index' must hold each sample position 0..{len(index) - 1} once")
    w = table["weight"].to_numpy(dtype=np.float64)
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{where}: weights must be finite and ≥ 0; found {int((~np.isfinite(w)).sum())} "
                         f"non-finite and {int((w < 0).sum())} negative")
    if abs(w.sum() - 1.0) > SUM_TOLERANCE:
        raise ValueError(f"{where}: weights sum to {w.sum():.9g}, expected 1 (± {SUM_TOLERANCE}); "
                         f"normalise them first")


def check_weights(table, meta: dict[str, Any], content_hash: str, n_train: int, name: str) -> None:
    """Refuse weights made for another dataset version (another hash or train-split size)."""
    if meta.get("dataset_hash") != content_hash or len(table) != n_train:
        theirs = str(meta.get("dataset_hash"))[:12]
        raise ValueError(f"the weights {name} are for dataset {theirs} ({len(table)} train images), not "
                         f"{content_hash[:12]} ({n_train}); compute weights for this dataset with genlib reweight")

"""Copy detection on real digits: the plain copy test against the transform-robust one, per transform.

Copies of ``--copies`` training images are made under each transform (exact, Gaussian noise, shifts
of 1 and 2 pixels, a mirror, a mirror plus a shift, a crop and rescale (zoom ×1.1), a zoom ×0.9, a
brightness and contrast change), rounded to the data's levels, and scored against the train split:

* plain: nearest / second-nearest training distance below 1/3 (genlib's ``copy_rate``), in pixel space
  and in the ``domain`` feature space;
* robust: ``genlib/evaluate/copies.py`` (54 versions of each query), its threshold calibrated on one
  half of the test split (at most 1 % flagged there); the other half gives the false-alarm rate.

Recall counts a copy as caught only when the flagged training image is its original. Then the cost of
the robust pixel search against the plain exact search on random 16×16 images (``--queries`` ×
``--refs`` × 256), seconds and ratio, with the machine.

    .venv/bin/python bench/copy_detection.py [--copies 200] [--queries 10000] [--refs 200000]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=200)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--refs", type=int, default=200_000)
    args = parser.parse_args()
    os.environ.setdefault("GENLIB_HOME", tempfile.mkdtemp(prefix="genlib-bench-"))
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars between the tables

    import numpy as np
    import torch

    from genlib.config import DataConfig
    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.evaluate.copies import (
        Invariances,
        _shift,
        _zoom,
        calibrate,
        robust_feature_neighbours,
        robust_pixel_neighbours,
    )
    from genlib.evaluate.features import load_extractor
    from genlib.evaluate.knn import nearest_neighbours

    version = DatasetVersion(prepare(DataConfig(source="digits")).path)
    levels = version.levels

    def split(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(version.images(name))).permute(0, 3, 1, 2)

    train, test = split("train"), split("test")
    extractor = load_extractor("domain", version)
    f_train = extractor(train)
    inv = Invariances()

    def plain(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        near = nearest_neighbours(queries, references, k=2)
        return near.distances[:, 0] < near.distances[:, 1] / 3, near.indices[:, 0]

    def robust(images: torch.Tensor, space: str):
        if space == "pixel":
            return robust_pixel_neighbours(images, train, inv)
        return robust_feature_neighbours(images, f_train, inv, extractor, levels)

    half = len(test) // 2
    calibration, false_alarm = {}, {}
    for space in ("pixel", "domain"):
        ratios = robust(test, space).ratio
        calibration[space] = calibrate(ratios[:half])
        false_alarm[space] = float((ratios[half:] < calibration[space].threshold).mean())
    test_px, train_px = test.flatten(1).float().numpy(), train.flatten(1).float().numpy()
    false_alarm |= {"plain pixel": float(plain(test_px, train_px)[0].mean()),
                    "plain domain": float(plain(extractor(test), f_train)[0].mean())}

    rng = np.random.default_rng(0)
    picked = rng.choice(len(train), args.copies, replace=False)
    src = train[picked].float()
    planted = {"exact": src, "noise σ=0.5 level": src + torch.from_numpy(rng.normal(0, 0.5, src.shape)).float(),
               "shift 1 px": _shift(src, 1, 0, 1), "shift 2 px": _shift(src, -2, 1, 2), "mirror": src.flip(-1),
               "mirror + shift 1": _shift(src.flip(-1), 1, 1, 1), "crop (zoom ×1.1)": _zoom(src, 1.1),
               "zoom ×0.9": _zoom(src, 0.9), "brightness ×0.8 +2": src * 0.8 + 2}
    rows = []
    for name, images in planted.items():
        copies = images.round().clamp(0, levels - 1).to(torch.uint8)
        row = {"transform": name}
        for space, queries, refs in (("pixel", copies.flatten(1).float().numpy(), train_px),
                                     ("domain", extractor(copies), f_train)):
            flags, index = plain(queries, refs)
            row[f"plain {space}"] = float((flags & (index == picked)).mean())
            match = robust(copies, space)
            row[f"robust {space}"] = float(((match.ratio < calibration[space].threshold)
                                            & (match.index == picked)).mean())
        rows.append(row)

    # Cost on random 16×16 images (256 dims): the robust search runs the exact engine once per version.
    gen = torch.Generator().manual_seed(1)
    refs = torch.randint(0, 256, (args.refs, 1, 16, 16), generator=gen, dtype=torch.uint8)
    queries = torch.randint(0, 256, (args.queries, 1, 16, 16), generator=gen, dtype=torch.uint8)
    started = time.perf_counter()
    nearest_neighbours(queries.flatten(1).float().numpy(), refs.flatten(1).float().numpy(), k=2)
    plain_seconds = time.perf_counter() - started
    started = time.perf_counter()
    robust_pixel_neighbours(queries, refs, inv)
    robust_seconds = time.perf_counter() - started

    print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, {torch.get_num_threads()} torch "
          f"threads; torch {torch.__version__}")
    print(f"digits 8×8, {len(train)} train / {len(test)} test images; {args.copies} copies per transform; "
          f"robust: {inv.describe()}")
    print(f"robust thresholds (d1/d2, flag ≤ 1 % of {half} held-out images): pixel "
          f"{calibration['pixel'].threshold:.3f}, domain {calibration['domain'].threshold:.3f}")
    columns = ["plain pixel", "robust pixel", "plain domain", "robust domain"]
    print(f"\n{'recall (original found)':26}" + "".join(f"{c:>15}" for c in columns))
    for row in rows:
        print(f"{row['transform']:26}" + "".join(f"{row[c]:15.3f}" for c in columns))
    alarms = {"plain pixel": false_alarm["plain pixel"], "robust pixel": false_alarm["pixel"],
              "plain domain": false_alarm["plain domain"], "robust domain": false_alarm["domain"]}
    print(f"{'false alarms, held-out':26}" + "".join(f"{alarms[c]:15.3f}" for c in columns))
    print(f"\ncost, {args.queries} × {args.refs} × 256 (k=2): plain exact {plain_seconds:.1f} s, robust "
          f"({inv.versions} versions) {robust_seconds:.1f} s, ratio {robust_seconds / plain_seconds:.1f}×")


if __name__ == "__main__":
    main()

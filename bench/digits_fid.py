"""Sample quality and memorization of every family on digits, against two references in the same run:
the floor (real training images scored as if they were samples) and a mixture-of-categoricals baseline.

Each model of the preset (plus `mixture` if the preset lacks it) is trained with Ray Train and scored
by the evaluation stage: domain-feature FID / KID / precision / recall of `eval.n_generated`
samples against the test split, density/coverage, and the pixel- and feature-space copy rates (plain
and transform-robust) against the train split.
The floor row scores `n_generated` training images the same way (FID vs test), and its copy rates are
those of the held-out test images against the training set: what real, uncopied data looks like (the
robust copy rate's threshold is calibrated on them, so there it is at most 1 % by construction).

    .venv/bin/python bench/digits_fid.py [--preset digits-quick] [--override train.epochs=30 ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="digits-quick")
    parser.add_argument("--override", action="append", default=[], help="config override, e.g. train.epochs=30")
    args = parser.parse_args()
    os.environ.setdefault("GENLIB_HOME", tempfile.mkdtemp(prefix="genlib-bench-"))

    import torch

    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.evaluate.copies import Invariances
    from genlib.evaluate.fid import density_coverage, frechet_distance, gaussian_stats, kid, precision_recall
    from genlib.evaluate.knn import nearest_neighbours
    from genlib.evaluate.memorization import copy_rate
    from genlib.evaluate.references import References
    from genlib.models import MODELS
    from genlib.presets import load_config
    from genlib.stages.evaluate import evaluate
    from genlib.stages.train import train

    cfg = load_config(args.preset, ["reweight.retrain=[]", *args.override])
    version = DatasetVersion(prepare(cfg.data).path)
    refs = References.load(version, cfg.eval.extractor)
    extractor = refs.extractor
    n = cfg.eval.n_generated
    name = extractor.name

    # The floor: n real training images in place of samples.
    f_train, f_test = refs.train_features, refs.test_features
    pick = np.random.default_rng(0).choice(len(f_train), min(n, len(f_train)), replace=False)
    mu, sigma, _ = refs.test_stats
    train_px = np.asarray(version.images("train"), np.float32).reshape(len(f_train), -1)
    test_px = np.asarray(version.images("test"), np.float32).reshape(len(f_test), -1)
    rows = [("floor: train images", {
        f"fid_{name}": frechet_distance(*gaussian_stats(f_train[pick]), mu, sigma).value,
        f"kid_{name}": kid(f_test, f_train[pick], subsets=50, subset_size=min(1000, len(f_test), len(pick)))[0],
        **dict(zip((f"precision_{name}", f"recall_{name}"), precision_recall(f_test, f_train[pick]))),
        **dict(zip((f"density_{name}", f"coverage_{name}"), density_coverage(f_test, f_train[pick]))),
        "copy_rate_pixel": copy_rate(nearest_neighbours(test_px, train_px, k=2))[0],
        # held-out test images: the robust threshold is calibrated on them, to flag at most 1 %
        "copy_rate_pixel_robust": refs.robust_calibration("pixel", Invariances()).false_alarm,
        f"copy_rate_{name}": copy_rate(nearest_neighbours(f_test, f_train, k=2))[0]}, "", 0.0)]

    models = list(cfg.pipeline_models())
    if "mixture" not in {m.family for m in models}:
        models.insert(1, MODELS.get("mixture").config_class(family="mixture"))
    for model in models:
        one = cfg.replace(model=model, models=())
        started = time.perf_counter()
        trained = train(one, version.path)
        scores = evaluate(one, trained.checkpoint, version.path).metrics
        rows.append((model.label, scores, str(trained.epoch), time.perf_counter() - started))

    columns = [f"fid_{name}", f"kid_{name}", f"precision_{name}", f"recall_{name}", f"density_{name}",
               f"coverage_{name}", "copy_rate_pixel", "copy_rate_pixel_robust", f"copy_rate_{name}"]
    print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}; "
          f"preset {cfg.name}, {cfg.train.epochs} epochs max; digits {version.manifest['splits']}")
    print(f"extractor {extractor.preprocessing} ({extractor.info}); {n} samples per model vs the test split; "
          f"copy rate: share with nearest/second-nearest train distance < 1/3; robust: through shifts, flips, "
          f"zooms and intensity changes, threshold calibrated to flag ≤ 1 % of held-out test images")
    width = max(map(len, columns)) + 2
    print(f"{'model':22}" + "".join(f"{c:>{width}}" for c in columns) + f"{'epoch':>7}{'train+eval s':>14}")
    for label, scores, epoch, seconds in rows:
        print(f"{label:22}" + "".join(f"{scores.get(c, float('nan')):{width}.4f}" for c in columns)
              + f"{epoch:>7}{seconds:14.0f}")


if __name__ == "__main__":
    main()

"""The course's GAN systems side by side on 32×32 digits, at equal images seen: DCGAN, DRAGAN,
progressive growing, the StyleGAN-style and the BigGAN-style models, with the mixture-of-categoricals
baseline and the floor (real training images scored as samples) in the same run.

Each model trains through the real train stage (Ray Train, one worker) for ``--epochs`` epochs of the
1259 training digits upsampled to 32×32 (`data.image_size=32`), and the evaluate stage scores its
selected checkpoint: domain-feature FID, precision and recall of ``eval.n_generated`` samples against
the test split, the IS analogue (the domain classifier's), the class accuracy of conditional samples
(BigGAN), and the truncation curve of the models that truncate (StyleGAN: ψ; BigGAN: the latent
threshold), and the path lengths in Z (and W for StyleGAN). Then each GAN trains 2 more epochs on 1 and on 2
workers for its training images/s (progan at its full resolution from the first step).

    .venv/bin/python bench/gan_systems.py [--epochs 20] [--n-generated 1000] [--skip-speed | --speed-only]

Results go to stdout and to ``--out`` (JSON, written after each model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

# (label, preset, overrides): each at 32×32; the DCGAN and DRAGAN presets' own sizes.
MODELS = [
    ("dcgan", "digits-gan", ["data.image_size=32"]),
    ("dragan", "digits-gan", ["data.image_size=32", "model.penalty=dragan"]),  # Kodali et al.: the GAN loss + penalty
    ("progan", "digits32-progan", []),
    ("stylegan", "digits32-stylegan", []),
    ("biggan", "digits32-biggan", []),
    ("mixture", "digits-gan", ["data.image_size=32", "model={family: mixture, components: 30}"]),
]
COLUMNS = ["fid_domain", "precision_domain", "recall_domain", "is_domain", "class_accuracy_domain", "ppl_z_domain",
           "ppl_w_domain"]
# The speed runs time the full-resolution networks: progan's schedule would spend them at 4×4.
SPEED_OVERRIDES = {"progan": ["model.fade_images=1", "model.stable_images=0"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--n-generated", type=int, default=1000)
    parser.add_argument("--models", nargs="*", default=[m[0] for m in MODELS])
    parser.add_argument("--skip-speed", action="store_true", help="no 1- and 2-worker images/s runs")
    parser.add_argument("--speed-only", action="store_true", help="only the images/s runs (added to --out's report)")
    parser.add_argument("--out", type=Path, default=Path("gan_systems.json"))
    args = parser.parse_args()
    os.environ.setdefault("GENLIB_HOME", tempfile.mkdtemp(prefix="genlib-bench-gans-"))

    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.evaluate.fid import frechet_distance, gaussian_stats, inception_score, precision_recall
    from genlib.evaluate.references import References
    from genlib.presets import load_config
    from genlib.stages.evaluate import evaluate
    from genlib.stages.train import train
    from genlib.tracking import Tracker

    common = [f"train.epochs={args.epochs}", "train.num_workers=1", f"eval.n_generated={args.n_generated}",
              "train.select_by=last", "reweight.retrain=[]"]
    machine = f"{platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    report = {"machine": machine, "date": time.strftime("%Y-%m-%d"), "epochs": args.epochs,
              "n_generated": args.n_generated, "models": {}}

    # The floor: n real training images scored as samples, at 32×32.
    version = DatasetVersion(prepare(load_config("digits-gan", ["data.image_size=32"]).data).path)
    refs = References.load(version, "domain")
    report["images_seen"] = args.epochs * version.manifest["splits"]["train"]
    f_train, f_test = refs.train_features, refs.test_features
    pick = np.random.default_rng(0).choice(len(f_train), min(args.n_generated, len(f_train)), replace=False)
    mu, sigma, _ = refs.test_stats
    precision, recall = precision_recall(f_test, f_train[pick])
    is_mean, _ = inception_score(refs.extractor.class_logits(f_train[pick]), 10)
    report["floor"] = {"fid_domain": frechet_distance(*gaussian_stats(f_train[pick]), mu, sigma).value,
                       "precision_domain": precision, "recall_domain": recall, "is_domain": is_mean,
                       "class_accuracy_domain": refs.extractor.info.get("test_accuracy")}
    print(f"genlib GAN systems on 32×32 digits, {args.epochs} epochs ({report['images_seen']} images seen) each, "
          f"{args.n_generated} samples scored; {machine}", flush=True)

    tracker = Tracker()
    if args.speed_only:  # keep what an earlier run of the quality part wrote
        report["models"] = json.loads(args.out.read_text())["models"] if args.out.exists() else {}
    for label, preset, overrides in MODELS:
        if label not in args.models or args.speed_only:
            continue
        cfg = load_config(preset, [*overrides, *common])
        dataset = prepare(cfg.data).path
        started = time.perf_counter()
        trained = train(cfg, dataset, tracker)
        train_seconds = time.perf_counter() - started
        speeds = [m.value for m in tracker.client.get_metric_history(trained.run_id, "images_per_second")]
        scored = evaluate(cfg, trained.checkpoint, dataset, tracker)
        metrics = dict(scored.metrics)
        row = {"family": cfg.model.family, "train_seconds": train_seconds,
               "images_per_second_1_worker": float(np.median(speeds[1:] or speeds)), **metrics}
        report["models"][label] = row
        args.out.write_text(json.dumps(report, indent=2, default=float))
        print(f"{label}: " + ", ".join(f"{k} {row[k]:.4g}" for k in COLUMNS if row.get(k) is not None)
              + f"; {train_seconds:.0f} s of training", flush=True)

    if not args.skip_speed:  # training images/s on 1 and 2 workers, 2 epochs each (the second one's)
        for label, preset, overrides in MODELS:
            if label not in args.models or label == "mixture":
                continue
            for workers in (1, 2):
                cfg = load_config(preset, [*overrides, *SPEED_OVERRIDES.get(label, []), *common, "train.epochs=2",
                                           f"train.num_workers={workers}",
                                           f"train.seed={100 + workers}", "eval.n_generated=0"])
                trained = train(cfg, prepare(cfg.data).path, tracker)
                speed = tracker.client.get_metric_history(trained.run_id, "images_per_second")[-1].value
                report["models"].setdefault(label, {})[f"images_per_second_{workers}_workers"] = speed
            args.out.write_text(json.dumps(report, indent=2, default=float))

    _print(report)


def _print(report: dict) -> None:
    print(f"\n{report['epochs']} epochs ({report['images_seen']} images seen), {report['n_generated']} samples; "
          f"{report['machine']}, {report['date']}")
    head = ["model", *COLUMNS, "img/s 1w", "img/s 2w"]
    print(" | ".join(head))
    rows = [("floor (train images)", report["floor"]), *report["models"].items()]
    for label, row in rows:
        cells = [label] + [f"{row[k]:.3f}" if isinstance(row.get(k), float) else "-" for k in COLUMNS]
        cells += [f"{row[k]:.0f}" if k in row else "-" for k in ("images_per_second_1_workers",
                                                                 "images_per_second_2_workers")]
        print(" | ".join(cells))
    dcgan = report["models"].get("dcgan", {}).get("fid_domain")
    if dcgan:
        for label, row in report["models"].items():
            if label != "dcgan" and "fid_domain" in row:
                print(f"{label}: FID {row['fid_domain']:.1f} vs DCGAN {dcgan:.1f} "
                      f"({'better' if row['fid_domain'] < dcgan else 'worse'} by {abs(row['fid_domain'] - dcgan):.1f})")
    for label, row in report["models"].items():
        curve = sorted((float(k.split("_psi")[1]), v) for k, v in row.items() if k.startswith("fid_domain_psi"))
        if curve:
            points = ", ".join(f"ψ {p:g}: FID {row[f'fid_domain_psi{p:g}']:.1f} P {row[f'precision_domain_psi{p:g}']:.2f} "
                               f"R {row[f'recall_domain_psi{p:g}']:.2f}" for p, _ in curve)
            print(f"{label} truncation: ψ 1: FID {row['fid_domain']:.1f} P {row['precision_domain']:.2f} "
                  f"R {row['recall_domain']:.2f}; {points}")


if __name__ == "__main__":
    main()

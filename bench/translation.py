"""Image-to-image translation on the synthesised digits tasks, against baselines in the same run.

* pix2pix on ``digits-edges`` (an outline → the digit, 32×32, paired): L1, PSNR, SSIM to the test targets,
  FID in domain B's features and the share of translations the digit classifier still reads as their digit,
  for pix2pix (its preset), the L1-only U-Net (the same preset with ``model.adversarial_weight=0``: the
  paper's own ablation) and the identity map (the outline itself);
* CycleGAN on ``digits-bold`` (plain ↔ bold digits from disjoint images, unpaired): the same scores against
  the true translations kept aside at prepare, the cycle error, and a domain classifier's share of
  translations judged to be of the target domain (logistic regression on pixels, trained on the two
  domains' real training images), against the identity map;
* training images/s of pix2pix and CycleGAN on 1 and on 2 Ray workers (2 epochs each; the second's).

Every model trains through the real train stage (Ray Train) and is scored by the evaluate stage's
translation code; the identity map is scored by the same code.

    .venv/bin/python bench/translation.py [--pix2pix-epochs 15] [--cyclegan-epochs 10] [--skip-speed]
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
import torch

COLUMNS = ["l1_a2b", "psnr_a2b", "ssim_a2b", "fid_domain_a2b", "content_accuracy_domain_a2b", "l1_b2a",
           "fid_domain_b2a", "content_accuracy_domain_b2a", "cycle_l1_a", "cycle_l1_b", "target_share_a2b",
           "target_share_b2a"]


def identity_model(version, directions: tuple[str, ...]):
    """The identity map as a translator (``directions``): the baseline every translation must beat."""
    from genlib.models.base import TRANSLATE, GenerativeModel

    class Identity(GenerativeModel):
        capabilities = frozenset({TRANSLATE})
        data_kinds = frozenset({"paired", "unpaired"})
        def __init__(self):
            super().__init__(GenerativeModel.config_class(), version.shape, version.levels, None, version.source_spec)
            self.register_buffer("anchor", torch.zeros(()))

        def translate(self, x, direction="a2b", generator=None):
            return x.clone()

    Identity.directions = directions
    return Identity()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pix2pix-epochs", type=int, default=15)
    parser.add_argument("--cyclegan-epochs", type=int, default=10)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("translation.json"))
    args = parser.parse_args()
    os.environ.setdefault("GENLIB_HOME", tempfile.mkdtemp(prefix="genlib-bench-translation-"))


    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.evaluate.translate import translation_scores
    from genlib.models.io import load_model
    from genlib.presets import load_config
    from genlib.stages.evaluate import evaluate
    from genlib.stages.extractors import load_references
    from genlib.stages.train import train
    from genlib.tracking import Tracker

    machine = f"{platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    report = {"machine": machine, "date": time.strftime("%Y-%m-%d"), "rows": {}}
    tracker = Tracker()
    common = ["train.num_workers=1", "reweight.retrain=[]"]
    runs = [("pix2pix", "digits-pix2pix", [f"train.epochs={args.pix2pix_epochs}"]),
            ("L1-only U-Net", "digits-pix2pix", [f"train.epochs={args.pix2pix_epochs}", "model.adversarial_weight=0"]),
            ("identity (edges)", "digits-pix2pix", None),
            ("cyclegan", "digits-cyclegan", [f"train.epochs={args.cyclegan_epochs}"]),
            ("identity (bold)", "digits-cyclegan", None)]
    print(f"genlib translation on the synthesised digits tasks; {machine}", flush=True)
    for label, preset, overrides in runs:
        cfg = load_config(preset, [*(overrides or []), *common])
        version = DatasetVersion(prepare(cfg.data).path)
        started = time.perf_counter()
        if overrides is None:
            model = identity_model(version, ("a2b",) if version.kind == "paired" else ("a2b", "b2a"))
            refs = {}
            with tempfile.TemporaryDirectory() as scratch:
                def references(domain):
                    if domain not in refs:
                        refs[domain] = load_references(cfg, version.domain(domain), "cpu", tracker, Path(scratch))
                    return refs[domain]

                metrics = {k: v for part in translation_scores(model, cfg, version, references) for k, v in part.metrics.items()}
        else:
            trained = train(cfg, version.path, tracker)
            metrics = dict(evaluate(cfg, trained.checkpoint, version.path, tracker).metrics)
            model = load_model(trained.checkpoint).eval()
        row = {"seconds": time.perf_counter() - started, **metrics, **_target_shares(model, version)}
        report["rows"][label] = row
        args.out.write_text(json.dumps(report, indent=2, default=float))
        print(f"{label}: " + ", ".join(f"{k} {row[k]:.4g}" for k in COLUMNS if k in row), flush=True)

    if not args.skip_speed:
        for label, preset in (("pix2pix", "digits-pix2pix"), ("cyclegan", "digits-cyclegan")):
            for workers in (1, 2):
                cfg = load_config(preset, [*common, "train.epochs=2", f"train.num_workers={workers}",
                                           f"train.seed={100 + workers}", "eval.n_generated=0"])
                trained = train(cfg, prepare(cfg.data).path, tracker)
                speed = tracker.client.get_metric_history(trained.run_id, "images_per_second")[-1].value
                report["rows"][label][f"images_per_second_{workers}_workers"] = speed
            args.out.write_text(json.dumps(report, indent=2, default=float))
    _print(report)


def _target_shares(model, version) -> dict[str, float]:
    """Per direction, the share of translated test images a logistic regression on pixels (trained to tell
    the two domains' real training images apart) assigns to the target domain."""
    from sklearn.linear_model import LogisticRegression

    from genlib.evaluate.translate import nchw, translate_all

    def pixels(domain, split):
        images = np.array(version.domain(domain).images(split), dtype=np.float64)
        return images.reshape(len(images), -1) / (version.domain(domain).levels - 1)

    x = np.concatenate([pixels("a", "train"), pixels("b", "train")])
    y = np.r_[np.zeros(len(x) - len(pixels("b", "train"))), np.ones(len(pixels("b", "train")))]
    judge = LogisticRegression(max_iter=2000).fit(x, y)
    shares = {}
    for direction in model.directions:
        source, target = direction[0], direction[-1]
        out = translate_all(model, nchw(version.domain(source).images("test")), direction)
        flat = out.flatten(1).double().numpy() / (version.domain(target).levels - 1)
        shares[f"target_share_{direction}"] = float((judge.predict(flat) == (target == "b")).mean())
    shares["judge_test_accuracy"] = float(np.mean(np.r_[judge.predict(pixels("a", "test")) == 0,
                                                        judge.predict(pixels("b", "test")) == 1]))
    return shares


def _print(report: dict) -> None:
    print(f"\n{report['machine']}, {report['date']}")
    print(" | ".join(["translator", *COLUMNS, "img/s 1w", "img/s 2w"]))
    for label, row in report["rows"].items():
        cells = [label] + [f"{row[k]:.3f}" if k in row else "-" for k in COLUMNS]
        cells += [f"{row[k]:.0f}" if k in row else "-" for k in ("images_per_second_1_workers",
                                                                 "images_per_second_2_workers")]
        print(" | ".join(cells))


if __name__ == "__main__":
    main()

"""Does reweighting find what is rare, whatever made it rare? The rarity benchmark family on real digits.

Each rarity type is a dataset version prepared by genlib (``data.rare_class`` / ``data.style``) with a
report-only flag of the rare subgroup in every split; the weights never see it:

  class        only 10% of the 3s kept in train (1.1% of it)
  thick        2% of every class drawn with thick strokes
  slant        2% of every class slanted (italic)
  combination  slanted 7s: half of every other class slanted, 15% of the 7s (1.5% of train)
  combination-thick   thick 7s, built the same way: a hard case reported beside the family

For each type a VAE (the `digits-imbalanced` preset's, latent 16) is trained without labels through
`genlib train` (Ray Train), and every rarity signal weights its training images:
  * rare mean weight / other mean weight (target ≥ 3),
  * the rare share of one weighted epoch's draw (the sampler genlib trains with) vs its share of the data,
  * the effective sample size as a share of N (the target: not below 10%), and the tempering τ that
    kept it at the ESS floor (the config's reweight.min_ess, or --min-ess).
The default should be the method with the highest geometric-mean ratio over the family (without
the hard case) among those whose worst case reaches 3. Then, per type, on the outputs:
  * the DB-VAE check: a small CNN digit classifier trained on the biased split with uniform and with
    the default weights (same epochs, same number of draws; 5 seeds), its accuracy on the rare
    subgroup's test images and overall (``genlib.evaluate.debias.classifier_check``);
  * the VAE retrained with the default weights (`genlib reweight`, then `genlib train --weights`):
    the share of 2000 samples of each VAE that the report-only classifier assigns to the rare
    subgroup, the recall of the rare test images (``genlib.evaluate.debias``, as the pipeline
    report shows them), and the domain FID of each against the whole test split.

    .venv/bin/python bench/reweight_rarity.py [--seeds 5] [--vae-epochs 40] [--clf-epochs 15] [--types class,thick]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import torch

TYPES = {
    "class": ["data.rare_class=3", "data.rare_keep=0.1"],
    "thick": ["data.style=thick", "data.style_share=0.02"],
    "slant": ["data.style=slant", "data.style_share=0.02"],
    "combination": ["data.style=slant", "data.style_share=0.5", "data.style_class=7", "data.style_class_share=0.15"],
    "combination-thick": ["data.style=thick", "data.style_share=0.5", "data.style_class=7",
                          "data.style_class_share=0.15"],
}
HARD = {"combination-thick"}  # reported, not part of the choice
# (label, ReweightConfig overrides); every method is tempered to the same ESS floor
METHODS = [
    ("max (lab)", {"method": "max"}),
    ("product (paper)", {"method": "product"}),
    ("product, α to the floor", {"method": "product", "alpha": "floor"}),  # the paper's own knob instead of τ
    ("gmm", {"method": "gmm"}),
    ("kde", {"method": "kde"}),
    ("elbo", {"method": "elbo"}),
    ("knn k=5", {"method": "knn", "k": 5}),
    ("knn k=10", {"method": "knn", "k": 10}),
    ("knn k=30", {"method": "knn", "k": 30}),
    ("knn k=10 standardised", {"method": "knn", "k": 10, "latents": "standardise"}),
    ("knn k=10 whitened", {"method": "knn", "k": 10, "latents": "whiten"}),
    ("knn+max k=10", {"method": "knn+max", "k": 10}),
    ("knn+elbo k=10", {"method": "knn+elbo", "k": 10}),
]


def config_for(fields: dict, z: np.ndarray, min_ess: float):
    """The ReweightConfig of a bench row. ``alpha="floor"``: the paper's α (added to every histogram
    density before inverting it) raised, untempered, until the ESS reaches the floor (bisection on log α)."""
    from genlib.config import ReweightConfig
    from genlib.evaluate.reweight import effective_sample_size, estimate_weights

    if fields.get("alpha") != "floor":
        return ReweightConfig(**fields, min_ess=min_ess)
    low, high = -12.0, 6.0
    for _ in range(40):
        mid = 0.5 * (low + high)
        w = estimate_weights(z, ReweightConfig(**{**fields, "alpha": 10 ** mid}, min_ess=None)).weights
        low, high = (low, mid) if effective_sample_size(w) >= min_ess * len(w) else (mid, high)
    return ReweightConfig(**{**fields, "alpha": 10 ** high}, min_ess=None)


def separability(points: np.ndarray, rare: np.ndarray, k: int = 10) -> float:
    """ROC AUC of the distance to the k-th nearest other point as a score of being rare."""
    from sklearn.metrics import roc_auc_score

    from genlib.evaluate.knn import nearest_neighbours

    found = nearest_neighbours(points.astype(np.float32), points.astype(np.float32), k=k, exclude_self=True)
    return float(roc_auc_score(rare, found.distances[:, -1]))


def images_of(version, split: str) -> torch.Tensor:
    return torch.from_numpy(np.array(version.images(split))).permute(0, 3, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--vae-epochs", type=int, default=40)
    parser.add_argument("--clf-epochs", type=int, default=15)
    parser.add_argument("--min-ess", type=float, default=None, help="ESS floor for every method (default: the config's)")
    parser.add_argument("--samples", type=int, default=2000, help="samples of each VAE for the rare share")
    parser.add_argument("--types", default=",".join(TYPES))
    args = parser.parse_args()
    os.environ.setdefault("GENLIB_HOME", tempfile.mkdtemp(prefix="genlib-bench-"))

    from genlib.config import ReweightConfig
    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.data.sampling import WeightedDistributedSampler
    from genlib.evaluate.debias import classifier_check
    from genlib.evaluate.references import References
    from genlib.evaluate.reweight import effective_sample_size, estimate_weights, latent_means, sample_losses
    from genlib.evaluate.suite import generate, rare_subgroup, sample_quality
    from genlib.models.io import load_model
    from genlib.presets import load_config
    from genlib.stages.reweight import reweight
    from genlib.stages.train import train

    default = ReweightConfig()
    min_ess = default.min_ess if args.min_ess is None else args.min_ess
    types = args.types.split(",")
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"default reweighting: method {default.method}, k {default.k}, latents {default.latents}, "
          f"ESS floor {min_ess}")
    data, default_weights = {}, {}
    for name in types:
        overrides = TYPES[name] + ([] if name == "class" else ["data.rare_class=null", "data.rare_keep=1.0"])
        cfg = load_config("digits-imbalanced", ["models=[]", f"train.epochs={args.vae_epochs}", *overrides])
        version = DatasetVersion(prepare(cfg.data).path)
        started = time.perf_counter()
        vae = train(cfg, version.path)
        seconds = time.perf_counter() - started
        model = load_model(vae.checkpoint)
        x = images_of(version, "train")
        z, losses = latent_means(model, x), sample_losses(model, x)
        rare = version.rare("train")
        data[name] = SimpleNamespace(version=version, rare=rare, z=z, losses=losses, cfg=cfg, vae=vae, x=x)
        print(f"\n{name}: {rare.sum()} rare of {len(rare)} train images ({rare.mean():.2%}); VAE {vae.epoch} of "
              f"{args.vae_epochs} epochs selected ({seconds:.0f} s), trained without labels")
        print(f"how separable the rare images are: AUC of the distance to the 10th neighbour, "
              f"{separability(x.flatten(1).float().numpy(), rare):.3f} in pixel space, "
              f"{separability(z, rare):.3f} in the VAE's latent space")
        print(f"{'method':24}{'rare/other mean weight':>24}{'rare share of a draw':>22}{'ESS %':>8}{'τ':>7}")
        default_weights[name] = estimate_weights(z, ReweightConfig(min_ess=min_ess), losses).weights
        for label, fields in METHODS:
            est = estimate_weights(z, config_for(fields, z, min_ess), losses)
            w = est.weights
            draw = np.array(list(WeightedDistributedSampler(w, seed=0)))
            row = (w[rare].mean() / w[~rare].mean(), rare[draw].mean(), effective_sample_size(w) / len(w), est.tau)
            print(f"{label:24}{row[0]:24.2f}{row[1]:22.2%}{row[2]:8.1%}{row[3]:7.2f}")

    family = [t for t in types if t not in HARD]
    print(f"\nacross the family ({', '.join(family)}): worst rare/other ratio, geometric mean, lowest ESS")
    floors = sorted({0.1, 0.2, 0.3, min_ess})
    print(f"{'method':24}" + "".join(f"{'ESS floor ' + str(f):>26}" for f in floors))
    for label, fields in METHODS:
        cells = []
        for floor in floors:
            rows = []
            for t in family:
                d = data[t]
                w = estimate_weights(d.z, config_for(fields, d.z, floor), d.losses).weights
                rows.append((w[d.rare].mean() / w[~d.rare].mean(), effective_sample_size(w) / len(w)))
            ratios, ess = np.array(rows).T
            cells.append(f"{ratios.min():8.2f}{np.exp(np.log(ratios).mean()):9.2f}{ess.min():8.1%}")
        print(f"{label:24}" + "".join(f"{c:>26}" for c in cells), flush=True)

    print(f"\nclassifier on each biased split, {args.clf_epochs} epochs, {args.seeds} seeds, uniform vs default "
          f"weights ({default.method}); accuracy on the test split's rare subgroup and overall")
    print(f"{'type':20}{'rare: uniform':>18}{'rare: reweighted':>20}{'all: uniform':>17}{'all: reweighted':>19}")
    for name in types:
        version = data[name].version
        check = classifier_check(data[name].x, version.labels("train"), default_weights[name],
                                 images_of(version, "test"), version.labels("test"), version.rare("test"),
                                 version.levels, version.num_classes, args.clf_epochs, args.seeds)
        print(f"{name:20}{check['classifier_rare_accuracy_uniform']:11.3f} ± "
              f"{check['classifier_rare_accuracy_uniform_std']:.3f}{check['classifier_rare_accuracy_weighted']:13.3f}"
              f" ± {check['classifier_rare_accuracy_weighted_std']:.3f}{check['classifier_accuracy_uniform']:17.3f}"
              f"{check['classifier_accuracy_weighted']:19.3f}", flush=True)

    print(f"\nthe VAE retrained with the default weights: {args.samples} samples of each, the share the report-only "
          f"classifier assigns to the rare subgroup (data: its share of train), the recall of the rare test images, "
          f"and the domain FID against the whole test split (what the weights cost the common part)")
    print(f"{'type':20}{'train share':>12}{'samples: VAE':>14}{'reweighted':>12}{'rare recall: VAE':>18}"
          f"{'reweighted':>12}{'assignment bal. acc.':>22}{'FID: VAE':>12}{'reweighted':>12}")
    for name in types:
        d = data[name]
        version, rare, cfg = d.version, d.rare, d.cfg
        weights = reweight(d.vae.run_id, overrides=["reweight.classifier_seeds=0", f"reweight.min_ess={min_ess}"])
        again = train(cfg.replace(train=dataclasses.replace(cfg.train, weights=str(weights.weights_path))),
                      version.path)
        refs = References.load(version, "domain")
        found = []
        for run in (d.vae, again):
            features = refs.extractor(generate(load_model(run.checkpoint).eval(), args.samples, seed=1))
            found.append({**rare_subgroup(features, refs).metrics, **sample_quality(features, refs).metrics})
        print(f"{name:20}{rare.mean():12.2%}{found[0]['rare_share_generated']:14.2%}"
              f"{found[1]['rare_share_generated']:12.2%}{found[0]['rare_recall_domain']:18.3f}"
              f"{found[1]['rare_recall_domain']:12.3f}{found[0]['rare_classifier_balanced_accuracy']:22.3f}"
              f"{found[0]['fid_domain']:12.1f}{found[1]['fid_domain']:12.1f}", flush=True)

if __name__ == "__main__":
    main()

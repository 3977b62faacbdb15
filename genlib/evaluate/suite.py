"""Score a trained model: pure functions from a model and its references to metrics and figures.

For one model and one dataset version it measures
  * likelihood on the test split (``likelihood.py``) when the model declares ``log_prob``;
  * sample quality of ``eval.n_generated`` samples against the test split in an extractor's
    feature space (``fid.py``): FID, KID, precision and recall;
  * memorization against the train split (``memorization.py``), in pixel and feature space:
    copy rate, authenticity, the data-copying z-score, a per-class table when the data is
    labelled, and a gallery of the closest generated/train pairs;
and draws the figures (samples, interpolations, traversals). Each part comes back as ``Scores``:
metrics, the protocol behind them, figures and tables. Nothing here knows MLflow: the evaluate
stage (``genlib/stages/evaluate.py``) records the parts and the report.

Reference features, statistics and train→train neighbours depend on the dataset version only:
``References`` loads them once per evaluation, from a per-dataset cache.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genlib.config import Config
from genlib.data.dataset import DatasetVersion
from genlib.evaluate.copies import FALSE_ALARM, Invariances, robust_feature_neighbours, robust_pixel_neighbours
from genlib.evaluate.debias import rare_subgroup_scores
from genlib.evaluate.fid import (
    density_coverage,
    frechet_distance,
    gaussian_stats,
    inception_score,
    kid,
    precision_recall,
)
from genlib.evaluate.knn import Neighbours, approximate_neighbours, nearest_neighbours, recall_at_k
from genlib.evaluate.likelihood import LATENT_MMD_IMAGES, latent_metrics, likelihood_metrics
from genlib.evaluate.memorization import authenticity, copy_rate, data_copying_zscore
from genlib.evaluate.references import References
from genlib.evaluate.workers import SAMPLE_BATCH, Rows, Workers, as_rows, shard_count
from genlib.figures import image_grid
from genlib.models import GenerativeModel
from genlib.models.base import INTERPOLATE, LATENT_PRIOR, PATH_LENGTH, STYLE_MIX, TRAVERSE, TRUNCATE
from genlib.tracking import (
    CLOSEST_PAIRS,
    INTERPOLATION,
    PER_CLASS,
    SAMPLES,
    STYLE_MIXING,
    TRAVERSALS,
    TRUNCATION,
    TRUNCATION_CURVE,
)

TRUNCATION_GRID = (1.0, 0.7, 0.5, 0.3, 0.0)  # ψ per row of the truncation figure


@dataclass
class Scores:
    """What one part of the evaluation found, ready to log."""
    metrics: dict[str, float]
    params: dict[str, Any]  # the protocol behind the metrics
    figures: dict[str, Any]  # artifact path → PIL image
    tables: dict[str, list[dict[str, Any]]]  # artifact path → rows


def requested_labels(model, n: int) -> torch.Tensor | None:
    """The classes a class-conditional model's ``n`` evaluation samples are drawn for: each in turn."""
    return torch.arange(n) % model.num_classes if model.conditional else None


def generate(model, n: int, seed: int, truncation: float | None = None, workers: Workers | None = None) -> torch.Tensor:
    """``n`` samples, uint8 (n, C, H, W), drawn in batches of ``SAMPLE_BATCH``, each under its own seed
    derived from ``seed`` (truncated by ψ = ``truncation`` when given: models with the ``truncate``
    capability); a class-conditional model's for ``requested_labels``. By ``workers`` (default: this
    process): the same images wherever they are drawn."""
    workers = workers or Workers(device=model.device)
    return workers.sample(model, n, seed, truncation, requested_labels(model, n))


def generate_scored(model, n: int, seed: int, refs: References,
                    truncation: float | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """``generate``'s samples and their features in ``refs``' extractor, drawn and extracted together
    (on Ray by the same actors)."""
    return refs.workers.sample_features(model, n, seed, truncation, requested_labels(model, n), refs.extractor)


def truncation_curve(model: GenerativeModel, cfg: Config, refs: References, untruncated: dict[str, float]) -> Scores:
    """Quality against diversity as ψ falls: FID, precision and recall of ``eval.n_generated`` samples at
    each ψ of ``eval.truncation`` (the same latents: one seed), against the test split; ``untruncated``:
    the evaluation's own metrics, the curve's ψ = 1 point. Metrics ``fid_<extractor>_psi0.5`` and so on,
    and the curve as a table."""
    name, (mu, sigma, _) = refs.extractor.name, refs.test_stats
    rows = [{"psi": 1.0, **{m: untruncated[f"{m}_{name}"] for m in ("fid", "precision", "recall")}}]
    for psi in cfg.eval.truncation:
        _, f_gen = generate_scored(model, cfg.eval.n_generated, cfg.train.seed + 1, refs, psi)
        precision, recall = precision_recall(refs.features("test"), f_gen, workers=refs.workers,
                                             real_radii=refs.test_radii[:, 2])
        rows.append({"psi": psi, "fid": frechet_distance(*gaussian_stats(f_gen), mu, sigma).value,
                     "precision": precision, "recall": recall})
    metrics = {f"{m}_{name}_psi{row['psi']:g}": row[m] for row in rows[1:] for m in ("fid", "precision", "recall")}
    return Scores(metrics, {"quality.truncation": ", ".join(f"{p:g}" for p in cfg.eval.truncation)}, {},
                  {TRUNCATION_CURVE: rows})


def sample_quality(f_gen: np.ndarray, refs: References) -> Scores:
    """FID, KID, precision/recall and density/coverage of generated features against the test split."""
    f_test = test_rows = refs.features("test")  # on disk: read where needed, never whole
    workers = refs.workers
    mu, sigma, n_ref = refs.test_stats
    fd = frechet_distance(*gaussian_stats(f_gen), mu, sigma)
    kid_mean, kid_std = kid(f_test, f_gen, subsets=50, subset_size=min(1000, len(f_test), len(f_gen)))
    precision, recall = precision_recall(test_rows, f_gen, workers=workers, real_radii=refs.test_radii[:, 2])
    density, coverage = density_coverage(test_rows, f_gen, workers=workers, real_radii=refs.test_radii[:, 4])
    extractor = refs.extractor
    name = extractor.name
    numeric = {k: v for k, v in extractor.info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    metrics = {f"fid_{name}": fd.value, f"kid_{name}": kid_mean, f"kid_{name}_std": kid_std,
               **_inception_score(extractor, f_gen, f"is_{name}"),
               f"precision_{name}": precision, f"recall_{name}": recall,
               f"density_{name}": density, f"coverage_{name}": coverage,
               **{f"{name}_extractor_{k}": v for k, v in numeric.items()}}
    # What the network is (its weights' SHA-256, a file name) goes with the protocol: numbers computed
    # with different digests are not comparable.
    params = {**{f"quality.extractor_{k}": v for k, v in extractor.info.items() if k not in numeric},
              "quality.extractor": extractor.preprocessing, "quality.n_generated": len(f_gen),
              "quality.reference_split": "test", "quality.n_reference": n_ref,
              "quality.precision_recall_k": 3, "quality.density_coverage_k": 5,
              "fid.clipped_eigenvalues": fd.clipped_eigenvalues, "quality.reference_shards": shard_count(n_ref),
              **workers.protocol()}
    ceiling = _inception_score(extractor, f_test, "quality.is_test_split")  # the same score of real test images
    if ceiling:
        params.update({"quality.is_splits": IS_SPLITS, "quality.is_test_split": ceiling["quality.is_test_split"]})
    return Scores(metrics, params, {}, {})


IS_SPLITS = 10  # as [Salimans et al. 2016]


def _with_class_accuracy(quality: Scores, features: np.ndarray, labels: torch.Tensor, extractor) -> Scores:
    """Add the share of conditional samples the extractor's classifier assigns the class they were drawn
    for (``class_accuracy_<extractor>``; its accuracy on real test images is the ceiling)."""
    logits = extractor.class_logits(features)
    if logits is None:
        return quality
    accuracy = float((logits.argmax(1) == labels.numpy()).mean())
    return Scores({**quality.metrics, f"class_accuracy_{extractor.name}": accuracy},
                  {**quality.params, "quality.class_accuracy": "top-1 agreement of the extractor's classifier with "
                                                               "the class each sample was drawn for"},
                  quality.figures, quality.tables)


def _inception_score(extractor, features: np.ndarray, key: str) -> dict[str, float]:
    """The IS analogue of ``features`` with the extractor's own classifier, when it has one."""
    logits = extractor.class_logits(features)
    if logits is None or len(logits) < IS_SPLITS:
        return {}
    mean, std = inception_score(logits, IS_SPLITS)
    return {key: mean, f"{key}_std": std}


def train_search(queries: np.ndarray, train: Rows | np.ndarray, method: str, probes: int,
                 workers: Workers | None = None, desc: str = "train neighbours") -> tuple[Neighbours, dict]:
    """Nearest two training neighbours of each query: exact (by ``workers``, in shards), or, in this
    process, from the IVF index with its recall against exact search measured on a sample of the
    queries (logged with the metrics)."""
    workers = workers or Workers()
    if method == "exact":
        return workers.neighbours(queries, train, 2, desc=desc), {}
    if method != "ivf":
        raise ValueError(f"eval.knn must be 'exact' or 'ivf', got {method!r}")
    device, train = workers.device, as_rows(train).read()
    found = approximate_neighbours(queries, train, k=2, probes=probes, device=device)
    check = np.random.default_rng(0).choice(len(queries), min(200, len(queries)), replace=False)
    exact = nearest_neighbours(queries[check], train, k=2, device=device)
    recall = recall_at_k(Neighbours(found.distances[check], found.indices[check]), exact)
    return found, {"recall": recall}


def robust_copies(generated: torch.Tensor, refs: References, spaces: str) -> tuple[dict, dict, dict]:
    """Transform-robust copy rates (``copies.py``) in pixel space and, with "pixel+features", in the
    extractor's space: (metrics, protocol params, per-space (flags, match)). Each rate comes with its
    calibrated threshold and the share of held-out real images that threshold flags."""
    if spaces == "none":
        return {}, {"memorization.robust_copies": "none"}, {}
    inv, name = Invariances(), refs.extractor.name
    found = {"pixel": robust_pixel_neighbours(generated, refs.images("train"), inv, workers=refs.workers)}
    if spaces == "pixel+features":
        found[name] = robust_feature_neighbours(generated, refs.features("train"), inv, refs.extractor,
                                                refs.version.levels, workers=refs.workers)
    metrics, params, flags = {}, {}, {}
    for space, match in found.items():
        cal = refs.robust_calibration("pixel" if space == "pixel" else "features", inv)
        flags[space] = (match.ratio < cal.threshold, match)
        metrics |= {f"copy_rate_{space}_robust": float(flags[space][0].mean()),
                    f"copy_threshold_{space}_robust": cal.threshold, f"copy_false_alarm_{space}_robust": cal.false_alarm}
        params[f"memorization.robust_invariances_{space}"] = inv.describe("pixel" if space == "pixel" else "features")
    params["memorization.robust_calibration"] = (
        f"d1/d2 of the best-matching version below a threshold that flags at most {FALSE_ALARM:.0%} of the "
        f"{cal.n} held-out test images scored against the train split the same way")
    return metrics, params, flags


def memorization(generated: torch.Tensor, f_gen: np.ndarray, refs: References, cells: int,
                 knn: str = "exact", probes: int = 8, robust: str = "none") -> Scores:
    """Copy rates (plain and transform-robust), authenticity and data-copying z of samples against
    the train split."""
    version, train_px, workers = refs.version, refs.pixels("train"), refs.workers
    gen_px = generated.flatten(1).float().numpy()
    name = refs.extractor.name
    (nn_px, px_check), (nn_feat, feat_check) = (
        train_search(gen_px, train_px, knn, probes, workers, "train neighbours (pixels)"),
        train_search(f_gen, refs.features("train"), knn, probes, workers, f"train neighbours ({name})"))
    copy_px, copied = copy_rate(nn_px)
    auth_px, authentic = authenticity(nn_px, refs.train_self_neighbours)
    metrics = {"copy_rate_pixel": copy_px, f"copy_rate_{name}": copy_rate(nn_feat)[0], "authenticity_pixel": auth_px,
               **{f"knn_{k}_pixel": v for k, v in px_check.items()},
               **{f"knn_{k}_{name}": v for k, v in feat_check.items()}}
    robust_metrics, robust_params, robust_flags = robust_copies(generated, refs, robust)
    metrics |= robust_metrics
    params = {**robust_params, "memorization.reference_split": "train", "memorization.n_reference": len(train_px),
              "memorization.reference_shards": shard_count(len(train_px)),
              "memorization.extractor_weights_sha256": refs.extractor.info.get("weights_sha256"),
              "memorization.copy_threshold": "d1/d2 < 1/3",
              "memorization.knn": knn if knn == "exact" else f"ivf, {probes} probes of ~sqrt(N) cells"}
    try:
        d_test = workers.neighbours(refs.features("test"), refs.features("train"), 1, desc="test → train").distances
        metrics[f"data_copying_z_{name}"], _ = data_copying_zscore(refs.features("train"), refs.features("test"), f_gen,
                                                                   cells, distances=(d_test[:, 0],
                                                                                     nn_feat.distances[:, 0]))
        params["data_copying.cells"] = cells
    except ValueError as err:  # too few samples per cell: say so in the run rather than guess
        params["data_copying.skipped"] = str(err)
    # The gallery: the samples most like a training image, by the robust score where there is one
    # (a shifted copy then shows next to its original), else by pixel distance.
    if "pixel" in robust_flags:
        match = robust_flags["pixel"][1]
        closest, matched = np.argsort(match.ratio)[:16], match.index
        params["memorization.closest_pairs"] = "lowest robust pixel d1/d2"
    else:
        closest, matched = np.argsort(nn_px.distances[:, 0])[:16], nn_px.indices[:, 0]
        params["memorization.closest_pairs"] = "lowest pixel distance"
    nearest = torch.from_numpy(refs.images("train").take(matched[closest]))
    pairs = torch.stack([generated[closest], nearest], 1).flatten(0, 1)
    figures = {CLOSEST_PAIRS: image_grid(pairs, version.levels, nrow=8)}
    tables = {}
    if version.num_classes:
        # A sample's class is that of its nearest training image in feature space: it works for
        # unconditional models too, and shows which classes are over- or under-produced.
        assigned = version.labels("train")[nn_feat.indices[:, 0]]
        robust_copied = robust_flags["pixel"][0] if "pixel" in robust_flags else None
        tables[PER_CLASS] = per_class_table(assigned, version.labels("train"), copied, authentic, robust_copied)
    return Scores(metrics, params, figures, tables)


def per_class_table(assigned: np.ndarray, train_labels: np.ndarray, copied: np.ndarray,
                    authentic: np.ndarray, robust_copied: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Per class: share of samples vs share of training data, copy rates and authenticity."""
    rows = []
    for label in np.unique(train_labels):
        mine = assigned == label
        n = int(mine.sum())
        rows.append({"class": int(label), "samples": n, "sample_share": n / len(assigned),
                     "train_share": float((train_labels == label).mean()),
                     "copy_rate_pixel": float(copied[mine].mean()) if n else None,
                     **({"copy_rate_pixel_robust": float(robust_copied[mine].mean()) if n else None}
                        if robust_copied is not None else {}),
                     "authenticity_pixel": float(authentic[mine].mean()) if n else None})
    return rows


def sample_figures(model: GenerativeModel, cfg: Config) -> dict[str, Any]:
    """The final sample grid, and interpolation / traversal grids where the model supports them."""
    seed = cfg.train.seed
    def seeded() -> torch.Generator:  # on the model's device: CUDA draws need a CUDA generator
        return torch.Generator(device=model.device).manual_seed(seed)

    figures = {SAMPLES: image_grid(model.sample(cfg.eval.n_samples, generator=seeded()).cpu(), model.levels)}
    if INTERPOLATE in model.capabilities:
        path = model.interpolate(rows=8, steps=8, generator=seeded()).cpu()
        figures[INTERPOLATION] = image_grid(path, model.levels, nrow=8)
    if TRAVERSE in model.capabilities:
        figures[TRAVERSALS] = image_grid(model.traverse(steps=9).cpu(), model.levels, nrow=9)
    if STYLE_MIX in model.capabilities:
        figures[STYLE_MIXING] = image_grid(model.style_mix(rows=4, cols=6, generator=seeded()).cpu(), model.levels,
                                           nrow=7)
    if TRUNCATE in model.capabilities:  # the same latents in every row: one seed per row
        rows = [model.sample(8, generator=seeded(), truncation=psi).cpu() for psi in TRUNCATION_GRID]
        figures[TRUNCATION] = image_grid(torch.cat(rows), model.levels, nrow=8)
    return figures


def score(model: GenerativeModel, cfg: Config, version: DatasetVersion, refs: References | None = None) -> list[Scores]:
    """Every part of the evaluation of ``model`` on ``version`` (model in eval mode, on the device
    where sampling, feature extraction and neighbour search run)."""
    test = version.dataset("test")
    protocol = {"eval.split": "test", "eval.n": len(test), "eval.iwae_k": cfg.eval.iwae_k, "eval.seed": cfg.train.seed,
                "eval.device": model.device.type}
    if LATENT_PRIOR in model.capabilities:
        protocol["eval.latent_mmd_images"] = min(len(test), LATENT_MMD_IMAGES)
    metrics = {**likelihood_metrics(model, test, cfg.eval.iwae_k, cfg.eval.batch_size, cfg.train.seed),
               **latent_metrics(model, test, cfg.eval.batch_size, cfg.train.seed)}
    parts = [Scores(metrics, protocol, sample_figures(model, cfg), {})]
    if cfg.eval.n_generated > 0:
        refs = refs or References.load(version, cfg.eval.extractor, model.device)
        generated, f_gen = generate_scored(model, cfg.eval.n_generated, cfg.train.seed + 1, refs)
        quality = sample_scores(generated, cfg, version, model.device, refs,
                                requested_labels(model, cfg.eval.n_generated), f_gen)
        parts += quality
        if TRUNCATE in model.capabilities and cfg.eval.truncation:
            parts.append(truncation_curve(model, cfg, refs, quality[0].metrics))
        if PATH_LENGTH in model.capabilities:
            parts.append(path_length(model, cfg, refs))
    return parts


PPL_EPSILON = 1e-4  # as [Karras et al. 2019]


def path_length(model: GenerativeModel, cfg: Config, refs: References) -> Scores:
    """Perceptual path length [Karras et al. 2019] in the extractor's feature space, in each latent space
    the model walks: the mean of ‖f(G(p(t))) − f(G(p(t + ε)))‖² / ε² over ``eval.n_generated`` random
    points t of random full paths p, keeping the pairs between the 1st and 99th percentiles (as the
    paper does). Lower: a smoother mapping from latents to images."""
    name, metrics = refs.extractor.name, {}
    with _full_precision():  # ε = 1e-4 steps are below TF32's rounding (~5e-4 relative): CUDA would measure that
        for space in model.path_spaces:
            metrics[f"ppl_{space}_{name}"] = _path_length(model, cfg, refs, space)
    return Scores(metrics, {"quality.ppl": f"full paths, ε = {PPL_EPSILON:g}, squared distance of {name} features, "
                                           f"pairs between the 1st and 99th percentiles"}, {}, {})


def _path_length(model: GenerativeModel, cfg: Config, refs: References, space: str) -> float:
    generator = torch.Generator(device=model.device).manual_seed(cfg.train.seed + 3)
    distances = []
    for i in range(0, cfg.eval.n_generated, SAMPLE_BATCH):
        a, b = model.path_pairs(min(SAMPLE_BATCH, cfg.eval.n_generated - i), PPL_EPSILON, space, generator)
        fa, fb = refs.extractor(a.cpu()), refs.extractor(b.cpu())
        distances.append(((fa.astype(np.float64) - fb) ** 2).sum(1) / PPL_EPSILON ** 2)
    return trimmed_mean(np.concatenate(distances))


@contextlib.contextmanager
def _full_precision():
    """CUDA convolutions and matrix products in full fp32 (no TF32) inside, as they were after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def trimmed_mean(values: np.ndarray, low: float = 1, high: float = 99) -> float:
    """The mean of the values between the ``low``-th and ``high``-th percentiles (inclusive)."""
    lo, hi = np.percentile(values, [low, high])
    return float(values[(values >= lo) & (values <= hi)].mean())


def sample_scores(generated: torch.Tensor, cfg: Config, version: DatasetVersion,
                  device: torch.device | str = "cpu", refs: References | None = None,
                  labels: torch.Tensor | None = None, f_gen: np.ndarray | None = None) -> list[Scores]:
    """Sample quality against the test split and memorization against the train split of images
    (uint8 (N, C, H, W) in the version's shape and levels), whoever made them: a model's samples
    (``score``) or a folder of another generator's (the audit stage). ``refs``: loaded by the caller
    (default: this dataset's own, for ``cfg.eval.extractor``); ``labels``: the class each image was
    drawn for (a class-conditional model's), scored with the extractor's classifier where it has one;
    ``f_gen``: their features, when the caller extracted them."""
    refs = refs or References.load(version, cfg.eval.extractor, device)
    f_gen = refs.workers.features(refs.extractor, generated) if f_gen is None else f_gen
    quality = sample_quality(f_gen, refs)
    if labels is not None:
        quality = _with_class_accuracy(quality, f_gen, labels, refs.extractor)
    parts = [quality,
             memorization(generated, f_gen, refs, cfg.eval.copying_cells, cfg.eval.knn, cfg.eval.knn_probes,
                          cfg.eval.robust_copies)]
    if version.rare("test") is not None:  # a version with an induced rarity: does the model generate it?
        parts.append(rare_subgroup(f_gen, refs))
    return parts


def rare_subgroup(f_gen: np.ndarray, refs: References) -> Scores:
    """The report-only rare-subgroup measures (``debias.py``) of generated features."""
    rare = {split: refs.version.rare(split) for split in ("train", "val", "test")}  # each flag file read once
    metrics = rare_subgroup_scores(f_gen, refs.val_features, rare["val"], refs.test_features, rare["test"],
                                   rare["train"], refs.extractor.name)
    return Scores(metrics, {"rare.assigned_by": "logistic regression on val-split features (balanced)",
                            "rare.n_test": int(rare["test"].sum())}, {}, {})


# Metric names of the memorization curve a training run logs every ``train.eval_every`` epochs.
CURVE_PREFIX = "during_training_"


def memorization_curve_point(model: GenerativeModel, cfg: Config, refs: References) -> dict[str, float]:
    """One point of the memorization curve: the copy rates (plain and, unless off, transform-robust) in
    pixel space and the data-copying z of ``train.eval_samples`` fresh samples (model in eval mode)."""
    generated = generate(model, cfg.train.eval_samples, cfg.train.seed + 2, workers=refs.workers)
    nn_px = refs.workers.neighbours(generated.flatten(1).float().numpy(), refs.pixels("train"), 2)
    point = {"copy_rate_pixel": copy_rate(nn_px)[0]}
    if cfg.eval.robust_copies != "none":
        robust, _, _ = robust_copies(generated, refs, "pixel")
        point["copy_rate_pixel_robust"] = robust["copy_rate_pixel_robust"]
    try:
        z, _ = data_copying_zscore(refs.train_features, refs.test_features, refs.extractor(generated),
                                   min(cfg.eval.copying_cells, cfg.train.eval_samples // 20), device=refs.device)
        point[f"data_copying_z_{refs.extractor.name}"] = z
    except ValueError:  # too few samples in every cell this time: the point has no z
        pass
    return {CURVE_PREFIX + k: v for k, v in point.items()}

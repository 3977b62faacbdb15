"""Does reweighting debias? Measured on outputs, for dataset versions that flag a rare subgroup.

A version prepared with ``data.rare_class`` or ``data.style`` flags, in every split, which images
belong to its rare subgroup (``DatasetVersion.rare``); training and reweighting never read the
flag. These report-only measures use it:

* ``rare_subgroup_scores``: for a model's generated samples, in an extractor's feature space,
  - ``rare_share_generated``: the share of samples a report-only classifier assigns to the rare
    subgroup (logistic regression on the val split's features and flags, balanced classes);
    its balanced accuracy on the test split is logged beside it, so the assignment's
    reliability is on record; the train split's own rare share is the reference;
  - ``rare_precision_*`` / ``rare_recall_*``: improved precision and recall [1] of the samples
    against the rare test images only (recall: the share of rare test images inside the
    samples' manifold — does the model generate the rare part?);
  - ``rare_fid_*``: FID of the samples assigned rare against the rare test images (when at
    least ``MIN_ASSIGNED`` are);
* ``classifier_check``: the DB-VAE claim [2] — a small CNN classifier of the labels trained on
  the biased train split with uniform and with reweighted sampling, over several seeds: its
  accuracy on the rare subgroup's test images and on all of them.

[1] Kynkäänniemi et al., "Improved Precision and Recall Metric for Assessing Generative Models",
    NeurIPS 2019.
[2] Amini et al., "Uncovering and Mitigating Algorithmic Bias through Learned Latent Structure",
    AIES 2019 (accuracy of a classifier trained with and without the weights, on the
    under-represented faces).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from genlib.evaluate.fid import frechet_distance, gaussian_stats, precision_recall

MIN_ASSIGNED = 10  # generated samples assigned rare needed for a rare-subgroup FID
PRECISION_K = 3  # the k of the k-NN balls of precision/recall (as sample_quality's)


def rare_subgroup_scores(f_gen: np.ndarray, f_val: np.ndarray, rare_val: np.ndarray, f_test: np.ndarray,
                         rare_test: np.ndarray, rare_train: np.ndarray, name: str) -> dict[str, float]:
    """The rare-subgroup measures of generated features ``f_gen`` (see the module docstring).

    ``f_val`` / ``f_test``: features of the val and test images; ``rare_*``: their flags (and the
    train split's, for its share). ``name``: the extractor's, as in the metric names."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rare_val, rare_test = np.asarray(rare_val, bool), np.asarray(rare_test, bool)
    if rare_val.all() or not rare_val.any():
        raise ValueError("the val split must hold both rare and other images to fit the rare-subgroup classifier")
    assign = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
    assign.fit(f_val, rare_val)
    assigned = assign.predict(f_gen).astype(bool)
    metrics = {"rare_share_generated": float(assigned.mean()),
               "rare_share_train": float(np.mean(rare_train)),
               "rare_classifier_balanced_accuracy": float(balanced_accuracy_score(rare_test, assign.predict(f_test)))}
    f_rare = f_test[rare_test]
    if len(f_rare) > PRECISION_K and len(f_gen) > PRECISION_K:
        metrics[f"rare_precision_{name}"], metrics[f"rare_recall_{name}"] = precision_recall(f_rare, f_gen,
                                                                                             k=PRECISION_K)
    if assigned.sum() >= MIN_ASSIGNED and len(f_rare) >= 2:
        metrics[f"rare_fid_{name}"] = frechet_distance(*gaussian_stats(f_gen[assigned]),
                                                       *gaussian_stats(f_rare)).value
    return metrics


def train_classifier(x: torch.Tensor, y: np.ndarray, weights: np.ndarray | None, levels: int, classes: int,
                     epochs: int, seed: int, batch_size: int = 64) -> torch.nn.Module:
    """A small CNN (the domain network's shape) trained on uint8 images (N, C, H, W) with labels y,
    drawing each epoch uniformly (a shuffle) or by ``weights`` (with replacement, as genlib trains)."""
    from genlib.data.sampling import WeightedDistributedSampler
    from genlib.evaluate.domain import DomainNet

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = DomainNet(tuple(x.shape[1:]), levels, classes)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        targets = torch.as_tensor(np.asarray(y, dtype=np.int64))
        sampler = WeightedDistributedSampler(weights, seed=seed) if weights is not None else None
        for epoch in range(epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)
                order = sampler.draw()
            else:
                order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
            for idx in order.split(batch_size):
                loss = F.cross_entropy(net.head(net.features(x[idx])), targets[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return net.eval()


@torch.no_grad()
def correct(net: torch.nn.Module, x: torch.Tensor, y: np.ndarray) -> np.ndarray:
    """(N,) bool: which images the classifier labels right."""
    return net.head(net.features(x)).argmax(1).numpy() == np.asarray(y)


def classifier_check(x_train: torch.Tensor, y_train: np.ndarray, weights: np.ndarray, x_test: torch.Tensor,
                     y_test: np.ndarray, rare_test: np.ndarray, levels: int, classes: int, epochs: int = 15,
                     seeds: int = 3) -> dict[str, float]:
    """Accuracy on the rare test images and on all of them of classifiers trained with uniform and with
    ``weights`` sampling (the same epochs and draws per epoch), mean and std over ``seeds`` seeds."""
    rare_test = np.asarray(rare_test, bool)
    if not rare_test.any():
        raise ValueError("the test split has no rare image to measure the classifier on")
    out = {}
    for key, w in (("uniform", None), ("weighted", weights)):
        runs = np.array([(c[rare_test].mean(), c.mean()) for c in (
            correct(train_classifier(x_train, y_train, w, levels, classes, epochs, seed), x_test, y_test)
            for seed in range(seeds))])
        out.update({f"classifier_rare_accuracy_{key}": float(runs[:, 0].mean()),
                    f"classifier_rare_accuracy_{key}_std": float(runs[:, 0].std()),
                    f"classifier_accuracy_{key}": float(runs[:, 1].mean())})
    return out

"""DB-VAE reweighting on digits with an induced imbalance: does it find the rare class without labels,
and does sampling with its weights help a classifier on that class?

The train split keeps 10% of one digit class (`data.rare_class`, default 3) and every other class
whole; val and test stay whole. A VAE is trained on it without labels (Ray Train, as `genlib train`),
`genlib reweight` weights the training images with each density method, and we report
  * mean weight of the rare class / mean weight of the other classes (target ≥ 3),
  * the rare class's share of one weighted epoch's draw vs its share of the data,
  * a small CNN classifier trained with uniform vs reweighted sampling (same epochs, same number
    of draws), accuracy on the rare class's test images and overall, mean ± std over seeds.

    .venv/bin/python bench/reweight_imbalance.py [--seeds 5] [--vae-epochs 40] [--clf-epochs 15]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F


def train_classifier(x: torch.Tensor, y: np.ndarray, weights: np.ndarray | None, levels: int, classes: int,
                     epochs: int, seed: int):
    """A small CNN (the domain network's shape) trained with uniform or weighted sampling."""
    from genlib.data.sampling import WeightedDistributedSampler
    from genlib.evaluate.features import DomainNet

    torch.manual_seed(seed)
    net = DomainNet(tuple(x.shape[1:]), levels, classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    targets = torch.from_numpy(y)
    sampler = WeightedDistributedSampler(weights, seed=seed) if weights is not None else None
    for epoch in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler))
        else:
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        for idx in order.split(64):
            loss = F.cross_entropy(net.head(net.features(x[idx])), targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


@torch.no_grad()
def accuracy(net, x: torch.Tensor, y: np.ndarray, rare: int) -> tuple[float, float]:
    pred = net.head(net.features(x)).argmax(1).numpy()
    return float((pred[y == rare] == rare).mean()), float((pred == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rare-class", type=int, default=3)
    parser.add_argument("--keep", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--vae-epochs", type=int, default=40)
    parser.add_argument("--clf-epochs", type=int, default=15)
    args = parser.parse_args()
    os.environ.setdefault("GENLIB_HOME", tempfile.mkdtemp(prefix="genlib-bench-"))

    from genlib.config import METHODS
    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.data.sampling import WeightedDistributedSampler
    from genlib.data.weights import read_weights
    from genlib.presets import load_config
    from genlib.stages.reweight import reweight
    from genlib.stages.train import train

    cfg = load_config("digits-imbalanced", [f"data.rare_class={args.rare_class}", f"data.rare_keep={args.keep}",
                                            f"train.epochs={args.vae_epochs}", "models=[]"])
    version = DatasetVersion(prepare(cfg.data).path)
    started = time.perf_counter()
    vae = train(cfg, version.path)
    vae_seconds = time.perf_counter() - started
    labels = version.labels("train")
    rare = labels == args.rare_class
    print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"digits, class {args.rare_class} kept at {args.keep:.0%} in train: {rare.sum()} of {len(labels)} "
          f"train images ({rare.mean():.2%}); VAE latent_dim {cfg.model.latent_dim}, {vae.epoch + 1} epochs "
          f"selected of {args.vae_epochs} ({vae_seconds:.0f} s), trained without labels")

    print(f"\n{'method':10}{'rare/other mean weight':>24}{'rare share: data':>18}{'one weighted draw':>19}"
          f"{'ESS %':>8}")
    weights_by_method = {}
    for method in METHODS:
        result = reweight(vae.run_id, overrides=[f"reweight.method={method}"])
        w = read_weights(result.weights_path)[0]["weight"].to_numpy()
        weights_by_method[method] = w
        draw = np.array(list(WeightedDistributedSampler(w, seed=0)))
        print(f"{method:10}{w[rare].mean() / w[~rare].mean():24.2f}{rare.mean():18.2%}"
              f"{rare[draw].mean():19.2%}{result.diagnostics['ess_fraction']:8.1%}")

    method = cfg.reweight.method
    x_train = torch.from_numpy(np.array(version.images("train"))).permute(0, 3, 1, 2)
    x_test = torch.from_numpy(np.array(version.images("test"))).permute(0, 3, 1, 2)
    y_test = version.labels("test")
    scores = {"uniform": [], f"reweighted ({method})": []}
    for seed in range(args.seeds):
        for name, w in (("uniform", None), (f"reweighted ({method})", weights_by_method[method])):
            net = train_classifier(x_train, labels, w, version.levels, version.num_classes, args.clf_epochs, seed)
            scores[name].append(accuracy(net, x_test, y_test, args.rare_class))
    print(f"\nclassifier, {args.clf_epochs} epochs × {len(labels)} draws, {args.seeds} seeds; test split "
          f"({(y_test == args.rare_class).sum()} images of class {args.rare_class}, {len(y_test)} in all)")
    print(f"{'sampling':24}{'rare-class accuracy':>22}{'overall accuracy':>20}")
    for name, runs in scores.items():
        r, o = np.array(runs).T
        print(f"{name:24}{r.mean():15.3f} ± {r.std():.3f}{o.mean():13.3f} ± {o.std():.3f}")


if __name__ == "__main__":
    main()

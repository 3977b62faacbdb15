"""An evaluation's references are loaded once: each piece is computed on first use, cached per
dataset version, and read back (not recomputed) by the next evaluation."""

import numpy as np
import torch

from genlib import paths
from genlib.config import DataConfig
from genlib.data.dataset import DatasetVersion
from genlib.data.prepare import prepare
from genlib.evaluate.extractor import Extractor
from genlib.evaluate.knn import nearest_neighbours
from genlib.evaluate.references import References


def _counting_extractor(calls: list) -> Extractor:
    def encode(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        return images.flatten(1).float()[:, :16]

    return Extractor("fake", "fake-first-16-pixels", 16, encode, {})


def test_references_compute_each_piece_once_and_the_next_evaluation_reads_the_cache():
    version = DatasetVersion(prepare(DataConfig(source="digits")).path)
    calls = []
    refs = References(version, _counting_extractor(calls))
    for _ in range(3):  # sample quality, memorization and the data-copying test each ask
        test, _ = refs.test_features, refs.train_features
        mu, sigma, n = refs.test_stats
        self_nn = refs.train_self_neighbours
    n_test, n_train = version.manifest["splits"]["test"], version.manifest["splits"]["train"]
    assert sum(calls) == n_test + n_train  # each split encoded once
    assert test.shape == (n_test, 16) and n == n_test and np.allclose(mu, test.mean(0), atol=1e-5)
    px = refs.pixels("train").read()
    exact = nearest_neighbours(px, px, k=1, exclude_self=True)
    assert np.array_equal(self_nn.distances, exact.distances)
    # digits' integer pixels tie often: the row found may be another one at the same distance, never itself
    found = np.linalg.norm(px - px[self_nn.indices[:, 0]], axis=1)
    assert np.allclose(found, exact.distances[:, 0], rtol=1e-6) and (self_nn.indices[:, 0] != np.arange(len(px))).all()

    again = References(version, _counting_extractor(calls))
    before = sum(calls)
    assert np.array_equal(again.test_features, test) and np.array_equal(again.test_stats[1], sigma)
    assert np.array_equal(again.train_self_neighbours.distances, self_nn.distances)
    assert sum(calls) == before  # read from GENLIB_HOME/features, not recomputed
    cached = paths.home() / "features"
    assert len(list(cached.glob("*.npy"))) == 2 and len(list(cached.glob("*.npz"))) == 2  # train, test features;
    #                                                                         test statistics, self-neighbours

"""Memorization tests: planted copies are caught, clean held-out data is not."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.neighbors import NearestNeighbors

from genlib.evaluate.memorization import (authenticity, copy_rate, data_copying_zscore,
                                          nearest_neighbours)


@pytest.fixture(scope="module")
def digits_split():
    x = load_digits().data.astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    return x[order[:1200]], x[order[1200:1500]], x[order[1500:]]  # train, test, held-out


def test_exact_knn_matches_brute_force_with_small_blocks():
    rng = np.random.default_rng(0)
    queries, refs = rng.normal(size=(37, 5)), rng.normal(size=(101, 5))
    ours = nearest_neighbours(queries, refs, k=3, block_q=8, block_r=16)
    dist, idx = NearestNeighbors(n_neighbors=3, algorithm="brute").fit(refs).kneighbors(queries)
    assert np.array_equal(ours.indices, idx)
    assert np.allclose(ours.distances, dist, atol=1e-4)
    self_nn = nearest_neighbours(refs, refs, k=1, block_q=10, block_r=7, exclude_self=True)
    assert (self_nn.indices[:, 0] != np.arange(len(refs))).all()
    assert np.allclose(self_nn.distances[:, 0], NearestNeighbors(n_neighbors=2).fit(refs).kneighbors(refs)[0][:, 1],
                       atol=1e-4)


def test_planted_copies_are_flagged_and_clean_held_out_is_not(digits_split):
    train, _test, held_out = digits_split
    copies = train[:40]
    samples = np.concatenate([copies, held_out[:200]])
    _, flags = copy_rate(nearest_neighbours(samples, train, k=2))
    assert flags[:40].all()  # every exact copy: d1 = 0
    assert flags[40:].mean() < 0.05  # clean held-out digits are rarely that close to one image
    score, per_sample = authenticity(nearest_neighbours(samples, train, k=1),
                                     nearest_neighbours(train, train, k=1, exclude_self=True))
    assert not per_sample[:40].any()  # copies are not authentic
    assert per_sample[40:].mean() > 0.3


def test_data_copying_zscore_separates_copies_from_fresh_data(digits_split):
    train, test, held_out = digits_split
    rng = np.random.default_rng(1)
    copied = train[rng.choice(len(train), 297)] + rng.normal(scale=0.1, size=(297, 64)).astype(np.float32)
    z_copy, _ = data_copying_zscore(train, test, copied, cells=3)
    z_fresh, cells = data_copying_zscore(train, test, held_out, cells=3)
    assert z_copy < -5 and abs(z_fresh) < 3 and cells
    with pytest.raises(ValueError, match="no cell holds"):
        data_copying_zscore(train, test[:5], held_out[:5], cells=3)

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from genlib.data.sampling import WeightedDistributedSampler

WEIGHTS = np.array([0.05, 0.1, 0.0, 0.15, 0.2, 0.5])


def _ranks(weights, world, epoch=0, **kwargs):
    samplers = [WeightedDistributedSampler(weights, world, rank, **kwargs) for rank in range(world)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    return samplers, [list(sampler) for sampler in samplers]


@pytest.mark.parametrize("world, num_samples", [(1, 6), (3, 7), (4, 10), (4, 1)])
def test_ranks_are_disjoint_positions_of_one_draw(world, num_samples):
    samplers, shares = _ranks(WEIGHTS, world, num_samples=num_samples, seed=3)
    draw = samplers[0].draw().tolist()
    assert all(s.draw().tolist() == draw for s in samplers)  # the same draw on every rank
    assert len(draw) % world == 0 and len(draw) - num_samples < world  # padded only to a multiple of world
    lengths = {len(share) for share in shares}
    assert lengths == {len(samplers[0])} == {-(-num_samples // world)}  # every rank the same length
    interleaved = [shares[r][i] for i in range(len(shares[0])) for r in range(world)]
    assert interleaved == draw  # disjoint positions that together cover the draw
    assert 2 not in draw  # a zero weight is never drawn


def test_reproducible_under_seed_and_new_each_epoch():
    weights = np.ones(1000)
    first = _ranks(weights, 2, epoch=5, seed=7)[1]
    assert first == _ranks(weights, 2, epoch=5, seed=7)[1]
    assert first != _ranks(weights, 2, epoch=6, seed=7)[1]
    assert first != _ranks(weights, 2, epoch=5, seed=8)[1]


def test_frequencies_follow_the_weights():
    from scipy.stats import chisquare

    weights = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 0.5])
    n = 60_000
    shares = _ranks(weights, 3, num_samples=n, seed=0)[1]
    counts = np.bincount(np.concatenate(shares), minlength=len(weights))
    expected = weights / weights.sum() * n
    assert chisquare(counts, expected).pvalue > 1e-3
    np.testing.assert_allclose(counts / n, weights / weights.sum(), atol=0.01)


def test_without_replacement_draws_distinct_indices():
    sampler = WeightedDistributedSampler(np.arange(1, 21, dtype=float), num_samples=20, replacement=False)
    assert sorted(sampler) == list(range(20))
    with pytest.raises(ValueError, match="without replacement from 5 non-zero weights"):
        WeightedDistributedSampler(WEIGHTS, num_samples=6, replacement=False)


def test_bad_inputs_say_what_is_right():
    with pytest.raises(ValueError, match="6 weights for a dataset of 7 samples"):
        WeightedDistributedSampler(WEIGHTS, dataset_size=7)
    with pytest.raises(ValueError, match="finite and ≥ 0; 1 are not .first at index 1"):
        WeightedDistributedSampler([1.0, -1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        WeightedDistributedSampler([1.0, np.inf])
    with pytest.raises(ValueError, match="finite"):
        WeightedDistributedSampler([np.nan, 1.0])
    with pytest.raises(ValueError, match="all weights are zero"):
        WeightedDistributedSampler(np.zeros(4))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        WeightedDistributedSampler(np.ones((2, 2)))
    with pytest.raises(ValueError, match="rank 2 of 2"):
        WeightedDistributedSampler(WEIGHTS, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_samples must be"):
        WeightedDistributedSampler(WEIGHTS, num_samples=0)


def test_works_in_a_dataloader():
    data = TensorDataset(torch.arange(6))
    sampler = WeightedDistributedSampler(torch.tensor(WEIGHTS), num_replicas=2, rank=1, num_samples=9, seed=1)
    sampler.set_epoch(3)
    seen = torch.cat([batch for (batch,) in DataLoader(data, batch_size=2, sampler=sampler)]).tolist()
    assert seen == list(sampler) and len(seen) == len(sampler) == 5

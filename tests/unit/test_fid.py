"""Sample-quality metrics against closed forms, independent computations and brute force."""

import itertools

import numpy as np
import pytest
import scipy.linalg

from genlib.evaluate.fid import density_coverage, frechet_distance, gaussian_stats, kid, precision_recall


def test_frechet_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    result = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert result.value == pytest.approx(expected, rel=1e-12) and result.clipped_eigenvalues == 0
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(a)).value == pytest.approx(0.0, abs=1e-9)


def test_frechet_matches_scipy_sqrtm_in_float64():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(500, 20)), rng.normal(size=(400, 20)) @ rng.normal(size=(20, 20)) * 0.3 + 0.5
    (mu1, s1), (mu2, s2) = gaussian_stats(x), gaussian_stats(y)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2).value == pytest.approx(reference, rel=1e-8)


def test_frechet_rank_deficient_covariances_are_handled_and_reported():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(10, 50)), rng.normal(size=(10, 50))  # N < D: singular covariances
    result = frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
    assert np.isfinite(result.value) and result.value > 0
    assert result.most_negative_eigenvalue <= 0.0 and result.clipped_eigenvalues >= 0
    with pytest.raises(ValueError, match="shapes disagree"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def _kid_brute_force(x, y):
    d, m = x.shape[1], len(x)
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_its_definition():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 4)), rng.normal(size=(12, 4)) + 0.7
    mean, std = kid(x, y, subsets=3, subset_size=12)  # each subset is the whole (shuffled) set
    assert mean == pytest.approx(_kid_brute_force(x, y), rel=1e-10) and std == pytest.approx(0.0, abs=1e-10)
    same = kid(rng.normal(size=(400, 4)), rng.normal(size=(400, 4)), subsets=20, subset_size=200)
    assert abs(same[0]) < 0.05 and same[1] > 0


def _pr_brute_force(real, fake, k):
    def radius(points, i):
        return sorted(np.linalg.norm(points[i] - points[j]) for j in range(len(points)) if j != i)[k - 1]

    rr = [radius(real, i) for i in range(len(real))]
    fr = [radius(fake, i) for i in range(len(fake))]
    precision = np.mean([any(np.linalg.norm(f - real[j]) <= rr[j] for j in range(len(real))) for f in fake])
    recall = np.mean([any(np.linalg.norm(r - fake[j]) <= fr[j] for j in range(len(fake))) for r in real])
    return precision, recall


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of 37 reference rows against blocks of 29 queries, measured 13 at a time: the pieces' merges
    are exercised."""
    import genlib.evaluate.workers as workers

    monkeypatch.setattr(workers, "SHARD_ROWS", 37)
    monkeypatch.setattr(workers, "QUERY_ROWS", 29)
    monkeypatch.setattr(workers, "BALL_ROWS", 13)


def test_precision_recall_match_their_definition(small_shards):
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) * 1.5 + 0.5
    p, r = precision_recall(real, fake, k=3)
    bp, br = _pr_brute_force(real, fake, 3)
    assert p == pytest.approx(bp) and r == pytest.approx(br)
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)


def test_density_and_coverage_equal_the_reference_prdc(small_shards):
    from prdc import compute_prdc

    rng = np.random.default_rng(5)
    for real, fake in [(rng.normal(size=(200, 8)), rng.normal(size=(150, 8)) * 1.3 + 0.2),
                       (rng.normal(size=(120, 4)), rng.normal(size=(300, 4)) * 0.5)]:  # crowded: density > 1
        reference = compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
        density, coverage = density_coverage(real, fake, k=5)
        assert density == pytest.approx(reference["density"], rel=1e-6)
        assert coverage == pytest.approx(reference["coverage"], rel=1e-6)
    assert density > 1  # the second pair's samples sit in the middle of the real balls
    with pytest.raises(ValueError, match="needs more than 5 real samples"):
        density_coverage(real[:5], fake)


def test_inception_score_analogue_equals_a_direct_computation():
    from genlib.evaluate.fid import inception_score

    confident = np.full((1000, 10), -50.0)
    confident[np.arange(1000), np.arange(1000) % 10] = 50.0  # sure of one class each, the classes even
    assert inception_score(confident)[0] == pytest.approx(10.0, rel=1e-9)
    assert inception_score(np.tile([5.0, 0.0, 1.0], (100, 1)))[0] == pytest.approx(1.0)  # one prediction for all
    logits = np.random.default_rng(0).normal(size=(300, 4)) * 3
    direct = []
    for part in np.array_split(logits, 3):
        p = np.exp(part) / np.exp(part).sum(1, keepdims=True)
        marginal = p.mean(0)
        direct.append(np.exp(np.mean([(q * np.log(q / marginal)).sum() for q in p])))
    mean, std = inception_score(logits, splits=3)
    assert mean == pytest.approx(np.mean(direct), rel=1e-10) and std == pytest.approx(np.std(direct), rel=1e-10)
    with pytest.raises(ValueError, match="N ≥ splits"):
        inception_score(logits[:5], splits=10)

"""Transform-robust copy detection (genlib/evaluate/copies.py)."""

import numpy as np
import pytest
import torch

import genlib.evaluate.copies as copies
import genlib.evaluate.workers as workers
from genlib.config import DataConfig
from genlib.data.dataset import DatasetVersion
from genlib.data.prepare import prepare
from genlib.evaluate.copies import (
    Invariances,
    Version,
    VersionRows,
    _shift,
    _zoom,
    calibrate,
    robust_feature_neighbours,
    robust_pixel_neighbours,
    standardise,
    version_list,
    versions,
    windows,
)
from genlib.evaluate.extractor import Extractor
from genlib.evaluate.knn import nearest_neighbours


def test_a_moved_or_mirrored_copy_and_its_original_share_the_compared_window():
    original = torch.rand(3, 1, 7, 9)
    h, w = original.shape[-2:]
    for flip in (False, True):
        for dy, dx in [(1, 0), (0, -2), (-1, 2), (2, 1)]:
            moved = torch.full_like(original, -5.0)  # what moved in from outside the frame: anything
            moved[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
                original[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
            copy = moved.flip(-1) if flip else moved
            version = Version(flip, dy, dx)
            assert torch.equal(windows(copy, version, "query"), windows(original, version, "reference"))
            assert windows(copy, version, "query").shape[-2:] == (h - abs(dy), w - abs(dx))


def test_versions_list_the_identity_first_and_every_shift_flip_and_zoom_once():
    inv = Invariances(shift=2, flip=True, scales=(0.9, 1.1))
    found = version_list(inv)
    assert found[0] == Version() and len(found) == len(set(found)) == inv.versions == 2 * (25 + 2)
    assert Version(True, -2, 1) in found and Version(False, 0, 0, 1.1) in found
    images = torch.rand(4, 1, 8, 8)
    full = versions(images, inv)
    assert full.shape == (4, inv.versions, 1, 8, 8) and torch.equal(full[:, 0], images)


def _brute_force(queries, train, inv):
    """d1, d2 and the training index of each query's best version, from plain Python loops."""
    out = []
    for q in queries:
        best = None
        for version in version_list(inv):
            qv = standardise(windows(q[None].float(), version, "query"))[0]
            dists = sorted((float(np.linalg.norm(qv - standardise(windows(t[None].float(), version, "reference"))[0])), i)
                           for i, t in enumerate(train))
            if best is None or dists[0][0] < best[0]:
                best = (dists[0][0], dists[1][0], dists[0][1])
        out.append(best)
    return np.array(out)


@pytest.mark.parametrize("pieces", [None, (5, 2, 4)], ids=["one piece", "shards of 5, blocks of 2, 4 versions"])
def test_the_robust_distance_is_the_minimum_over_versions_of_a_brute_force_search(pieces, monkeypatch):
    if pieces:  # 3 training shards × 3 query blocks × 5 groups of versions, merged
        monkeypatch.setattr(workers, "SHARD_ROWS", pieces[0])
        monkeypatch.setattr(workers, "QUERY_ROWS", pieces[1])
        monkeypatch.setattr(copies, "PIECE_VERSIONS", pieces[2])
    gen = torch.Generator().manual_seed(0)
    train = torch.randint(0, 17, (12, 1, 6, 6), generator=gen, dtype=torch.uint8)
    queries = torch.cat([torch.randint(0, 17, (3, 1, 6, 6), generator=gen, dtype=torch.uint8),
                         _shift(train[:2].float(), 1, -1, 1).to(torch.uint8)])  # two moved copies
    inv = Invariances(shift=1, flip=True, scales=(1.2,))
    found = robust_pixel_neighbours(queries, train, inv)
    expected = _brute_force(queries, train, inv)
    assert np.allclose(found.d1, expected[:, 0], atol=1e-5) and np.allclose(found.d2, expected[:, 1], atol=1e-5)
    assert list(found.index) == [int(i) for i in expected[:, 2]]
    assert list(found.index[3:]) == [0, 1] and np.all(found.d1[3:] < 1e-5)  # the copies match their originals


def test_feature_space_search_is_the_minimum_over_the_versions_features():
    gen = torch.Generator().manual_seed(1)
    train = torch.randint(0, 9, (10, 1, 5, 5), generator=gen, dtype=torch.uint8)
    queries = torch.randint(0, 9, (4, 1, 5, 5), generator=gen, dtype=torch.uint8)
    inv = Invariances(shift=1, flip=True, scales=())

    extract = Extractor("half", "pixels × 0.5", 25, lambda images: images.flatten(1).float() * 0.5, {})
    found = robust_feature_neighbours(queries, extract(train), inv, extract, levels=9)
    all_versions = versions(queries, inv).round().clamp(0, 8).to(torch.uint8)  # (4, V, 1, 5, 5)
    for i in range(len(queries)):
        near = nearest_neighbours(extract(all_versions[i]), extract(train), k=2)
        best = near.distances[:, 0].argmin()
        assert found.d1[i] == pytest.approx(near.distances[best, 0]) and found.index[i] == near.indices[best, 0]


def test_version_rows_are_every_version_of_each_image_rounded_to_the_levels_read_in_any_span():
    images = torch.randint(0, 9, (5, 1, 6, 6), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    inv = Invariances(shift=1, flip=True, scales=(1.2,))
    rows = VersionRows(workers.ArrayRows(images.numpy()), inv, levels=9)
    every = versions(images, inv).round().clamp(0, 8).to(torch.uint8).flatten(0, 1).numpy()
    assert rows.shape == every.shape == (5 * inv.versions, 1, 6, 6) and every.dtype == np.uint8
    for start, stop in [(0, None), (0, 1), (inv.versions - 1, inv.versions + 1), (7, 60), (len(every) - 3, None)]:
        assert np.array_equal(rows.read(start, stop), every[start:stop])


def test_the_calibrated_threshold_flags_at_most_the_target_share_of_held_out_images():
    ratios = np.random.default_rng(2).uniform(0.2, 1.0, 1000)
    cal = calibrate(ratios, false_alarm=0.01)
    assert cal.false_alarm <= 0.01 and cal.false_alarm == (ratios < cal.threshold).mean() and cal.n == 1000
    assert (ratios <= cal.threshold).mean() > 0.01  # the largest such threshold
    with pytest.raises(ValueError, match="needs held-out images"):
        calibrate(np.array([]))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GENLIB_HOME", str(tmp_path_factory.mktemp("copies") / "home"))
        version = DatasetVersion(prepare(DataConfig(source="digits")).path)
        as_tensor = lambda split: torch.from_numpy(np.array(version.images(split))).permute(0, 3, 1, 2)  # noqa: E731
        return as_tensor("train"), as_tensor("test"), version.levels


def test_planted_copies_under_every_transform_are_caught_and_clean_held_out_images_are_not(digits):
    """Real digits (8×8): copies of 100 training images under each transform, mixed with held-out
    test images. The threshold is calibrated on one half of the test split; the other half measures
    the false alarms. Plain d1/d2 < 1/3 in pixel space misses all but the exact and noisy copies."""
    train, test, levels = digits
    inv = Invariances()
    held_out = robust_pixel_neighbours(test, train, inv).ratio
    half = len(test) // 2
    cal = calibrate(held_out[:half])
    assert (held_out[half:] < cal.threshold).mean() <= 0.02

    rng = np.random.default_rng(0)
    picked = rng.choice(len(train), 100, replace=False)
    src = train[picked].float()
    planted = {"exact": src, "noise": src + torch.from_numpy(rng.normal(0, 0.5, src.shape)).float(),
               "shift 1": _shift(src, 1, 0, 1), "shift 2": _shift(src, -2, 1, 2), "flip": src.flip(-1),
               "flip+shift": _shift(src.flip(-1), 1, 1, 1), "crop (zoom 1.1)": _zoom(src, 1.1),
               "zoom 0.9": _zoom(src, 0.9), "brightness and contrast": src * 0.8 + 2}
    recall, plain = {}, {}
    for name, images in planted.items():
        copies = images.round().clamp(0, levels - 1).to(torch.uint8)
        match = robust_pixel_neighbours(copies, train, inv)
        recall[name] = float(((match.ratio < cal.threshold) & (match.index == picked)).mean())
        near = nearest_neighbours(copies.flatten(1).float().numpy(), train.flatten(1).float().numpy(), k=2)
        plain[name] = float((near.distances[:, 0] < near.distances[:, 1] / 3).mean())
    assert min(recall.values()) >= 0.9, recall
    assert plain["shift 1"] == plain["flip"] == plain["crop (zoom 1.1)"] == 0.0, plain

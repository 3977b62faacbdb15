"""An evaluation spread over two Ray workers (``eval.workers=2``: a Ray Data actor pool for samples and
features, Ray tasks over shards for the searches) gives the numbers of one process. (An audit takes the
same path without the sampling: ``sample_scores``.)"""

import os
import threading
import time

import numpy as np
import pytest
import torch

import genlib.evaluate.workers as workers_module
from genlib import paths
from genlib.config import DataConfig
from genlib.data.dataset import DatasetVersion
from genlib.data.prepare import prepare
from genlib.evaluate.copies import Invariances, robust_feature_neighbours, robust_pixel_neighbours
from genlib.evaluate.extractor import Extractor
from genlib.evaluate.features import load_extractor
from genlib.evaluate.workers import FileRows, SplitRows, Workers
from genlib.models import build_model
from genlib.presets import config_from_dict, load_config
from genlib.stages.evaluate import evaluate
from genlib.tracking import Tracker

pytestmark = pytest.mark.integration


@pytest.fixture
def digits(digits_domain_network):
    return DatasetVersion(prepare(DataConfig(source="digits")).path)


@pytest.fixture(autouse=True)
def every_piece_on_ray(monkeypatch):
    """Searches of any size go to the workers (below ``RAY_MIN_WORK`` they would run in the driver), and so
    do sampling and feature extraction (an actor pool that starts in no time always pays)."""
    monkeypatch.setattr(workers_module, "RAY_MIN_WORK", 0)
    monkeypatch.setattr(workers_module, "RAY_POOL_SECONDS", 0)


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of 300 reference rows against blocks of 128 queries: several pieces, merged, on each side."""
    monkeypatch.setattr(workers_module, "SHARD_ROWS", 300)
    monkeypatch.setattr(workers_module, "QUERY_ROWS", 128)


def test_two_ray_workers_sample_and_search_what_one_process_does(ray_local, digits, small_shards):
    here, spread = Workers(1), Workers(2)
    torch.manual_seed(0)
    model = build_model(load_config("digits-quick", ["model.hidden=8"]).model, digits.shape, digits.levels,
                        digits.num_classes).eval()
    extractor = load_extractor("domain", digits)
    samples, features = here.sample_features(model, 600, seed=7, extractor=extractor)  # 3 batches of 256
    on_ray, on_ray_features = spread.sample_features(model, 600, seed=7, extractor=extractor)  # one actor pool
    assert torch.equal(on_ray, samples) and np.array_equal(on_ray_features, features)
    assert torch.equal(here.sample(model, 600, seed=7), samples) and features.shape == (600, extractor.dims)
    assert not torch.equal(samples[:256], samples[256:512])  # each batch its own seed

    # Pixel space: 1259 training rows in 5 shards, read by the workers from the dataset; the samples
    # shipped through the object store.
    pixels, gen = SplitRows(str(digits.path), "train", pixels=True), samples.flatten(1).float().numpy()
    for queries, k, exclude in [(gen, 3, False), (pixels, 2, True)]:
        single, ray_found = here.neighbours(queries, pixels, k, exclude), spread.neighbours(queries, pixels, k, exclude)
        assert np.array_equal(ray_found.indices, single.indices)
        assert np.array_equal(ray_found.distances, single.distances)
    exact = torch.cdist(torch.from_numpy(gen), torch.from_numpy(pixels.read())).topk(3, largest=False)
    assert np.allclose(here.neighbours(gen, pixels, 3).distances, exact.values.numpy(), rtol=1e-5)

    (mu, sigma), (mu_ray, sigma_ray) = here.moments(pixels), spread.moments(pixels)
    assert np.allclose(mu_ray, mu, rtol=1e-9, atol=0) and np.allclose(sigma_ray, sigma, rtol=1e-9, atol=1e-12)
    assert np.allclose(sigma, np.cov(pixels.read().astype(np.float64), rowvar=False), rtol=1e-9, atol=1e-12)

    radii = here.kth_distances(pixels, 3)
    for a, b in zip(here.balls(gen, pixels, radii, strict=False), spread.balls(gen, pixels, radii, strict=False)):
        assert np.array_equal(a, b)

    # The transform-robust copy searches (9 versions here). Pixels: a task per query block, training shard
    # and 13 versions. Features: every version of every query extracted by an actor pool (the samples
    # shipped with the versions' recipe), then the plain search.
    images, inv = SplitRows(str(digits.path), "train"), Invariances(shift=1, flip=False, scales=())
    f_train = here.features(extractor, images)
    for search, args in [(robust_pixel_neighbours, (images, inv)),
                         (robust_feature_neighbours, (f_train, inv, extractor, digits.levels))]:
        single, ray_found = (search(samples[:100], *args, workers=w) for w in (here, spread))
        for a, b in zip(single, ray_found):
            assert np.array_equal(a, b)


def test_sampling_and_extraction_a_pool_would_not_speed_up_stay_in_this_process(digits, monkeypatch):
    """With ``eval.workers=2``, a first batch that says the rest would end before an actor pool started
    keeps the rest here: no pool, the same numbers."""
    monkeypatch.setattr(workers_module, "RAY_POOL_SECONDS", 1e9)
    monkeypatch.setattr(Workers, "_ray_data", lambda *args: pytest.fail("an actor pool was started"))
    torch.manual_seed(0)
    model = build_model(load_config("digits-quick", ["model.hidden=8"]).model, digits.shape, digits.levels,
                        digits.num_classes).eval()
    extractor = load_extractor("domain", digits)
    (samples, features), (kept, kept_features) = (Workers(n).sample_features(model, 600, seed=7, extractor=extractor)
                                                  for n in (1, 2))
    assert torch.equal(kept, samples) and np.array_equal(kept_features, features)
    train = SplitRows(str(digits.path), "train")
    assert np.array_equal(Workers(2).features(extractor, train), Workers(1).features(extractor, train))


def test_an_evaluation_on_two_ray_workers_gives_the_single_process_numbers(vae_two_workers, digits, monkeypatch):
    """The evaluate stage on a trained VAE: samples drawn and extracted by a Ray Data actor pool, reference
    features by another (train and test in one pass), searches (the transform-robust one in pixel space too),
    balls and moments as Ray tasks, over shards of 300 reference rows (query blocks as they are)."""
    monkeypatch.setattr(workers_module, "SHARD_ROWS", 300)
    _, cfg, trained = vae_two_workers
    settings = cfg.to_dict()
    results = {}
    for n in (1, 2):
        settings["eval"] |= {"workers": n, "n_generated": 300, "n_samples": 16, "robust_copies": "pixel",
                             "iwae_k": 2}
        results[n] = evaluate(config_from_dict(settings), trained.checkpoint, digits.path)
        for cached in (paths.home() / "features").glob("*.np[yz]"):  # the next run computes its references anew
            cached.unlink()
    one, two = results[1].metrics, results[2].metrics
    assert one.keys() == two.keys() and {"fid_domain", "precision_domain", "copy_rate_pixel_robust"} <= one.keys()
    assert {k: v for k, v in two.items() if v != pytest.approx(one[k], rel=1e-9, abs=1e-12)} == {}
    params = Tracker().get_run(results[2].run_id).data.params
    assert params["eval.workers"] == "2" and params["eval.shard_rows"] == "300"
    assert params["memorization.reference_shards"] == "5" and params["quality.reference_shards"] == "2"  # 1259, 359


def _fake_extractor(encode) -> Extractor:
    return Extractor("fake", "fake-first-16-pixels", 16, encode, {})


def test_a_feature_worker_killed_mid_extraction_is_replaced_and_the_features_are_unchanged(ray_local, digits,
                                                                                        tmp_path):
    armed, calls = tmp_path / "armed", tmp_path / "calls"

    def encode(images: torch.Tensor) -> torch.Tensor:
        with open(calls, "a") as log:
            log.write(".")
        if calls.stat().st_size >= 4:  # from the fourth batch of 13 on, once: its worker dies
            try:
                armed.unlink()  # two actors may both get here: the one that disarms it dies
            except FileNotFoundError:
                pass
            else:
                os._exit(1)
        return images.flatten(1).float()[:, :16] * 2 + 1

    train = SplitRows(str(digits.path), "train")
    expected = Workers(1, batch_size=100).features(_fake_extractor(encode), train)
    armed.touch()
    calls.unlink()
    found = Workers(2, batch_size=100).features(_fake_extractor(encode), train)
    assert not armed.exists()  # a worker did die
    assert np.array_equal(found, expected)
    assert calls.stat().st_size > 13  # the dead worker's batch ran again


def _private_memory() -> int:
    """This process's resident memory of its own, in bytes: heap and file pages (a memory-mapped file's
    pages count once read). Not Ray's object store, shared memory mapped by every process of the node,
    whose size Ray's settings fix, not the data."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value
    return sum(int(fields[key].split()[0]) * 1024 for key in ("RssAnon", "RssFile"))


def _memory_growth(work) -> tuple[int, object]:
    """(the largest rise of this process's private memory while ``work()`` ran, in bytes; its result)."""
    peak, done, base = [0], threading.Event(), _private_memory()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _private_memory() - base)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = work()
    finally:
        done.set()
        watcher.join()
    return max(peak[0], _private_memory() - base), result


def test_the_driver_holds_none_of_a_reference_set_larger_than_its_memory_budget(ray_local, tmp_path):
    budget = 16 * 2 ** 20  # 16 MiB for the driver; the reference set is 64 MiB, in 4 shards of 16 MiB
    rng = np.random.default_rng(0)
    path = tmp_path / "reference.npy"
    reference = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(4 * 65536, 64))
    for s in range(0, len(reference), 65536):
        reference[s:s + 65536] = rng.normal(size=(65536, 64))
    reference.flush()
    del reference
    queries = rng.normal(size=(300, 64)).astype(np.float32)
    spread = Workers(2)

    def evaluate(workers, rows=FileRows(str(path))):
        return workers.neighbours(queries, rows, 2), workers.moments(rows)

    evaluate(spread, queries)  # once on a small set: the code and libraries it loads are not the data
    grown, (found, (mu, sigma)) = _memory_growth(lambda: evaluate(spread))
    assert grown < budget, f"the driver grew by {grown / 2 ** 20:.1f} MiB"
    assert found.indices.shape == (300, 2) and sigma.shape == (64, 64)
    # The same search in this process reads every shard here: the measure sees it.
    grown_here, (found_here, (mu_here, _)) = _memory_growth(lambda: evaluate(Workers(1)))
    assert grown_here > budget
    assert np.array_equal(found_here.indices, found.indices) and np.allclose(mu_here, mu, rtol=1e-9, atol=1e-15)


def test_workers_the_ray_cluster_cannot_place_are_refused_before_any_piece_runs(ray_local):
    rows = np.zeros((10, 4), np.float32)
    with pytest.raises(ValueError, match=r"eval.workers=8 workers of 1 CPU each cannot be placed on this Ray cluster "
                                         r"\(1 node\): it has 2 CPU, 0 GPU in all"):
        Workers(8).moments(rows)
    with pytest.raises(ValueError, match=r"eval.workers=2 workers of 1 CPU \+ 1 GPU each .* room for 0 such worker\(s\)\. "
                                         r"Lower eval.workers or eval.gpus_per_worker"):
        Workers(2, gpus_per_worker=1).neighbours(rows, rows, 1)

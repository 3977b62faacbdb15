"""Feature extractor registry contract (every registered extractor) and its cache."""

import numpy as np
import pytest
import torch

from genlib import paths
from genlib.config import DataConfig
from genlib.data.dataset import DatasetVersion
from genlib.data.prepare import prepare
from genlib.evaluate.features import EXTRACTORS, cached_features


@pytest.fixture
def fast_inception(inception_weights, monkeypatch):
    """Synthetic Inception weights, and 75×75 inputs (the smallest Inception-v3 takes) so that the
    whole test split runs in seconds, not a minute; test_inception.py covers the 299×299 path."""
    from genlib.evaluate import inception

    monkeypatch.setattr(inception, "INPUT_SIZE", 75)


@pytest.mark.parametrize("name", EXTRACTORS.names())
@pytest.mark.usefixtures("fast_inception", "digits_domain_network")
def test_extractor_contract(name):
    version = DatasetVersion(prepare(DataConfig(source="digits")).path)
    extractor = EXTRACTORS.get(name)(version)
    images = torch.from_numpy(np.array(version.images("test")[:10])).permute(0, 3, 1, 2)
    feats = extractor(images)
    assert feats.shape == (10, extractor.dims) and np.isfinite(feats).all()
    assert extractor.preprocessing and extractor.name == name
    again = EXTRACTORS.get(name)(version)  # a cache hit: the same network, the same features
    assert np.allclose(again(images), feats, atol=1e-5)
    split = cached_features(extractor, version, "test")
    assert split.shape == (version.manifest["splits"]["test"], extractor.dims)
    assert len(list((paths.home() / "features").glob("*-test-*.npy"))) == 1


@pytest.mark.usefixtures("digits_domain_network")
def test_domain_classifier_learns_the_digits():
    version = DatasetVersion(prepare(DataConfig(source="digits")).path)
    assert EXTRACTORS.get("domain")(version).info["test_accuracy"] > 0.9
    with pytest.raises(ValueError, match="unknown feature extractor 'inception'"):
        EXTRACTORS.get("inception")


def test_domain_network_trains_to_the_same_weights_whatever_ran_before(genlib_home, monkeypatch, tmp_path):
    from genlib.evaluate.domain import domain
    from genlib.evaluate.extractor import weights_digest

    version = DatasetVersion(prepare(DataConfig(source="digits")).path)
    digests = []
    for i, home in enumerate((tmp_path / "a", tmp_path / "b")):
        monkeypatch.setenv("GENLIB_HOME", str(home))
        torch.manual_seed(100 + i)  # another history of the global generator each time
        torch.rand(i + 1)
        state = torch.get_rng_state()
        extractor = domain(version, epochs=2)
        assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is left alone
        digests.append(extractor.info["weights_sha256"])
        assert domain(version, epochs=2).info["weights_sha256"] == digests[-1]  # read back from the cache
        assert weights_digest(extractor.module) == digests[-1]
    assert digests[0] == digests[1] and len(digests[0]) == 64

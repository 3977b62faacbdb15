"""The record schema (genlib.tracking): one headline-metric table that the summary, the report, the
leaderboard and the registry all read, and the atomic writes every writer uses (genlib.io)."""

import re

import pytest

from genlib.io import atomic_dir, atomic_file
from genlib.tracking import HEADLINES, headline, headline_metrics, headline_row, ranking_metric

VAE = {"test_elbo_bpd": 2.1, "test_iwae8_bpd": 2.0, "fid_domain": 60.0, "kid_domain": 0.05, "kid_domain_std": 0.01,
       "precision_domain": 0.7, "recall_domain": 0.8, "copy_rate_pixel": 0.0, "copy_rate_domain": 0.01,
       "authenticity_pixel": 0.9, "data_copying_z_domain": -0.5, "knn_recall_pixel": 0.99}


def test_every_headline_is_well_formed():
    assert len({h.column for h in HEADLINES}) == len(HEADLINES)
    for entry in HEADLINES:
        assert entry.direction in ("min", "max", None)
        re.compile(entry.metrics)
        assert entry.label and entry.has


def test_leaderboard_row_shows_the_tightest_bound_and_the_pixel_copy_rate():
    assert headline_row(VAE) == {"bpd": 2.0, "fid": 60.0, "kid": 0.05, "precision": 0.7, "recall": 0.8,
                                 "copy_rate_pixel": 0.0}


def test_report_columns_group_every_headline_metric_in_table_order():
    keys = [k for k, _ in headline_metrics(VAE)]
    assert keys == ["test_elbo_bpd", "test_iwae8_bpd", "fid_domain", "kid_domain", "precision_domain",
                    "recall_domain", "copy_rate_domain", "copy_rate_pixel", "authenticity_pixel",
                    "data_copying_z_domain"]
    assert dict(headline_metrics(VAE))["precision_domain"] == "max"


def test_summary_columns_are_bits_per_dim_fid_and_pixel_copy_rate_exact_first():
    keys = {"test_bpd", *VAE}
    assert [k for k, _ in headline_metrics(keys, summary=True)] == [
        "test_bpd", "test_elbo_bpd", "test_iwae8_bpd", "fid_domain", "copy_rate_pixel"]


def test_ranking_metric_is_bits_per_dim_else_fid():
    assert ranking_metric(VAE) == ("test_iwae8_bpd", 2.0)
    assert ranking_metric({"fid_domain": 30.0, "kid_domain": 0.1}) == ("fid_domain", 30.0)
    assert ranking_metric({"kid_domain": 0.1}) is None


def test_reconstruction_bits_per_dim_is_its_own_column_and_never_ranks_as_a_likelihood():
    aae = {"test_recon_bpd": 0.9, "test_latent_mmd": 0.02, "fid_domain": 40.0}
    assert headline_row(aae) == {"recon": 0.9, "latent_mmd": 0.02, "fid": 40.0}
    assert ranking_metric(aae) == ("fid_domain", 40.0)  # not the reconstruction
    vae = {**VAE, "test_recon_bpd": 1.5}
    assert headline_row(vae)["bpd"] == 2.0 and headline_row(vae)["recon"] == 1.5
    assert ranking_metric(vae) == ("test_iwae8_bpd", 2.0)


def test_unknown_headline_names_the_known_ones():
    with pytest.raises(ValueError, match="no headline metric 'nope'; known: \\['bpd', 'recon', 'fid'"):
        headline("nope")


def test_atomic_file_keeps_the_old_content_when_writing_fails(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("first")
    with pytest.raises(RuntimeError, match="disk full"), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "first" and [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "version"
    with pytest.raises(RuntimeError, match="crash"), atomic_dir(target) as tmp:
        (tmp / "a.npy").write_text("partial")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "a.npy").write_text("one")
    with atomic_dir(target) as tmp:  # written meanwhile by another process: the first one stays
        (tmp / "a.npy").write_text("two")
    assert (target / "a.npy").read_text() == "one"
    with atomic_dir(target, overwrite=True) as tmp:  # a checkpoint replaces the older one
        (tmp / "a.npy").write_text("three")
    assert (target / "a.npy").read_text() == "three" and [p.name for p in tmp_path.iterdir()] == ["version"]

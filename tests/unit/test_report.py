"""The HTML report (rendered from run views) and the per-dataset caches behind the suite."""

import io
import re

import numpy as np
import pytest
from PIL import Image

from genlib import paths
from genlib.evaluate.cache import cached_arrays
from genlib.evaluate.suite import per_class_table
from genlib.report import RunView, headline_keys, render


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (4, 4), 128).save(out, format="PNG")
    return out.getvalue()


def _view(model, family, **metrics):
    return RunView(f"evaluate-{model}", f"id-{model}", {"genlib.model": model, "genlib.family": family},
                   metrics, {"quality.extractor": "domain-classifier-abc", "checkpoint": "/x"},
                   {"samples/final.png": _png()}, {"memorization/per_class.json": [{"class": 0, "samples": 3}]})


def test_report_marks_the_best_value_of_each_column_and_embeds_images():
    runs = [_view("vae", "vae", test_elbo_bpd=1.9, fid_domain=60.0, kid_domain=0.05, kid_domain_std=0.01,
                  recall_domain=0.4),
            _view("gan", "gan", fid_domain=35.0, kid_domain=0.02, kid_domain_std=0.005, recall_domain=0.6),
            _view("<b>odd</b>", "x", fid_domain=99.0)]
    page = render("digits & co", runs, ["intro line"])
    assert "<title>digits &amp; co</title>" in page and "&lt;b&gt;odd&lt;/b&gt;" in page  # escaped
    assert "<b>35.0000</b>" in page and "<b>60.0000</b>" not in page  # lower FID wins
    assert "<b>0.6000</b>" in page  # higher recall wins
    assert "<b>0.0200 ± 0.0050</b>" in page  # KID carries its std
    assert "<b>1.9000</b>" not in page  # a column with one value has no winner
    assert page.count("data:image/png;base64,") == 3
    assert "domain-classifier-abc" in page and "/x" not in page  # protocol params only
    header = re.search(r"<tr><th>model</th>.*?</tr>", page).group(0)
    assert header.index("test_elbo_bpd") < header.index("fid_domain") < header.index("kid_domain")


def test_headline_keys_order_and_directions():
    keys = headline_keys([RunView("r", "i", {}, {"copy_rate_pixel": 0.0, "test_bpd": 2.0, "data_copying_z_domain": 1.0,
                                                 "kid_domain_std": 0.1, "authenticity_pixel": 0.9}, {})])
    assert keys == [("test_bpd", "min"), ("copy_rate_pixel", "min"), ("authenticity_pixel", "max"),
                    ("data_copying_z_domain", None)]


def test_per_class_table_counts_shares_and_rates():
    train = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    assigned = np.array([0, 0, 0, 1])
    rows = per_class_table(assigned, train, copied=np.array([True, False, False, True]),
                           authentic=np.array([True, True, False, False]))
    assert [r["samples"] for r in rows] == [3, 1, 0]
    assert rows[0]["sample_share"] == 0.75 and rows[2]["train_share"] == 0.5
    assert rows[0]["copy_rate_pixel"] == pytest.approx(1 / 3) and rows[1]["authenticity_pixel"] == 0.0
    assert rows[2]["copy_rate_pixel"] is None  # no samples of class 2: no rate, rather than 0


def test_cached_arrays_computes_once_and_rejects_paths():
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(3)}

    first, again = cached_arrays("k-1", compute), cached_arrays("k-1", compute)
    assert len(calls) == 1 and np.array_equal(first["a"], again["a"])
    assert [p.name for p in (paths.home() / "features").iterdir()] == ["k-1.npz"]  # no temp file left
    with pytest.raises(ValueError, match="plain file names"):
        cached_arrays("../escape", compute)


def test_train_search_exact_or_approximate_with_its_recall():
    from genlib.evaluate.suite import train_search

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10, size=(20, 8))
    train = (centres[rng.integers(0, 20, 2000)] + rng.normal(size=(2000, 8))).astype(np.float32)
    queries = (centres[rng.integers(0, 20, 300)] + rng.normal(size=(300, 8))).astype(np.float32)
    exact, none = train_search(queries, train, "exact", 8)
    approx, check = train_search(queries, train, "ivf", 8)
    assert none == {} and 0.95 <= check["recall"] <= 1.0
    assert (approx.indices[:, 0] == exact.indices[:, 0]).mean() >= 0.95
    with pytest.raises(ValueError, match="eval.knn must be 'exact' or 'ivf'"):
        train_search(queries, train, "faiss", 8)

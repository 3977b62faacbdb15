"""Debiasing measured on outputs (genlib.evaluate.debias) and its side-by-side report section."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from genlib.evaluate.debias import classifier_check, rare_subgroup_scores
from genlib.report import RunView, render
from genlib.tracking import Tag


def _features(n_common, n_rare, rng, shift=6.0):
    return np.r_[rng.normal(0, 1, (n_common, 4)), rng.normal(shift, 1, (n_rare, 4))]


def test_rare_share_and_rare_quality_follow_the_generated_rare_part():
    rng = np.random.default_rng(0)
    f_val, rare_val = _features(150, 50, rng), np.r_[np.zeros(150, bool), np.ones(50, bool)]
    f_test, rare_test = _features(300, 100, rng), np.r_[np.zeros(300, bool), np.ones(100, bool)]
    rare_train = np.r_[np.zeros(98, bool), np.ones(2, bool)]
    with_rare = _features(400, 100, rng)  # a model that generates the rare part: 20 % of its samples
    without = _features(500, 0, rng)  # one that never does
    a = rare_subgroup_scores(with_rare, f_val, rare_val, f_test, rare_test, rare_train, "domain")
    b = rare_subgroup_scores(without, f_val, rare_val, f_test, rare_test, rare_train, "domain")
    assert a["rare_share_generated"] == pytest.approx(0.2, abs=0.02) and b["rare_share_generated"] < 0.02
    assert a["rare_share_train"] == b["rare_share_train"] == 0.02
    assert a["rare_classifier_balanced_accuracy"] > 0.95
    assert a["rare_recall_domain"] > 0.8 and b["rare_recall_domain"] < 0.1  # who covers the rare test images
    assert a["rare_fid_domain"] < 2.0 and "rare_fid_domain" not in b  # too few samples assigned rare for an FID
    with pytest.raises(ValueError, match="both rare and other images"):
        rare_subgroup_scores(with_rare, f_val, np.zeros(200, bool), f_test, rare_test, rare_train, "domain")


def test_the_classifier_check_trains_with_the_weights_it_is_given():
    digits = load_digits()
    x = torch.from_numpy(digits.images[:300].astype(np.uint8)).unsqueeze(1)
    y = digits.target[:300]
    weights = (y == 3) / (y == 3).sum()  # every draw a 3: the weighted classifier only ever sees 3s
    x_test, y_test = torch.from_numpy(digits.images[300:500].astype(np.uint8)).unsqueeze(1), digits.target[300:500]
    found = classifier_check(x, y, weights, x_test, y_test, y_test == 3, levels=17, classes=10, epochs=2, seeds=2)
    assert found["classifier_rare_accuracy_weighted"] == 1.0 and found["classifier_rare_accuracy_weighted_std"] == 0
    assert found["classifier_accuracy_weighted"] == pytest.approx((y_test == 3).mean())  # it says 3 to everything
    assert found["classifier_accuracy_uniform"] > 0.5  # uniform sampling learns every class
    with pytest.raises(ValueError, match="no rare image"):
        classifier_check(x, y, weights, x_test, y_test, np.zeros(200, bool), 17, 10, epochs=1, seeds=1)


def _view(model, metrics):
    return RunView(model, f"run-{model}", {Tag.MODEL: model, Tag.FAMILY: "vae"}, metrics, {})


def test_the_report_puts_each_model_beside_its_reweighted_self():
    base = _view("vae", {"rare_share_generated": 0.011, "rare_recall_domain": 0.25, "fid_domain": 9.0})
    weighted = _view("vae-reweighted", {"rare_share_generated": 0.052, "rare_recall_domain": 0.5, "fid_domain": 9.5})
    other = _view("gan", {"fid_domain": 7.0})
    check = RunView("reweight-knn", "rw", {}, {"classifier_rare_accuracy_uniform": 0.8,
                                               "classifier_rare_accuracy_uniform_std": 0.04,
                                               "classifier_rare_accuracy_weighted": 0.85,
                                               "classifier_accuracy_uniform": 0.95,
                                               "classifier_accuracy_weighted": 0.94}, {})
    page = render("t", [base, other, weighted], reweights=[check])
    section = page.split("Debiasing: without and with the weights")[1].split("Reweighting (DB-VAE)")[0]
    assert "<th>measure</th><th>vae</th><th>vae-reweighted</th>" in section
    assert "<td>rare_share_generated</td><td>0.0110</td><td>0.0520</td>" in section
    assert "<td>on the rare test images</td><td>0.8000 ± 0.0400</td><td>0.8500</td>" in section
    assert "gan" not in section and "fid_domain" not in section
    assert "Debiasing" not in render("t", [other])  # nothing flagged rare: no section

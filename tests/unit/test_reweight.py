import numpy as np
import pytest
import torch

from genlib.data import weights as wf
from genlib.evaluate import reweight as rw
from genlib.evaluate.reweight import ReweightConfig
from genlib.models import build_model
from genlib.models.baselines import CategoricalConfig
from genlib.models.vae import VAEConfig
from tests.families import TINY

METHOD_ARGS = {"max": {}, "product": {}, "gmm": {"n_components": 2}, "kde": {"bandwidth": 0.5}, "knn": {"k": 5},
               "elbo": {}}


def _losses(z):
    """A stand-in for per-sample negative ELBOs: −log N(z; 0, I) in nats (larger far from the bulk)."""
    return 0.5 * (z ** 2).sum(axis=1) + 0.5 * z.shape[1] * np.log(2 * np.pi)


def _weights(z, method, **kwargs):
    return rw.normalise(rw.log_weights(z, method, **{**METHOD_ARGS.get(method, {}), **kwargs}, losses=_losses(z)))


def _latents(n=200, d=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def _two_clusters(seed=0):
    """950 points around 0 and 50 around (8, 8), both N(·, I): the sparse cluster is rows 950..999."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, (950, 2)), rng.normal(8, 1, (50, 2))])


def _lab_probabilities(mu, bins=10, smoothing_fac=0.001):
    """A direct re-implementation of get_training_sample_probabilities in [2] (the MIT lab)."""
    training_sample_p = np.zeros(mu.shape[0])
    for i in range(mu.shape[1]):
        hist_density, bin_edges = np.histogram(mu[:, i], density=True, bins=bins)
        bin_edges[0], bin_edges[-1] = -np.inf, np.inf
        bin_idx = np.digitize(mu[:, i], bin_edges)
        smoothed = hist_density + smoothing_fac
        smoothed = smoothed / smoothed.sum()
        p = 1.0 / smoothed[bin_idx - 1]
        p = p / p.sum()
        training_sample_p = np.maximum(training_sample_p, p)
    return training_sample_p / training_sample_p.sum()


# --------------------------------------------------------------------------- densities and weights


def test_histogram_density_matches_numpy_histogram():
    z = _latents()
    log_q = rw.histogram_log_density(z, bins=7)
    assert log_q.shape == (200, 3) and np.isfinite(log_q).all()
    for i in range(3):
        density, edges = np.histogram(z[:, i], bins=7, density=True)
        which = np.clip(np.digitize(z[:, i], edges) - 1, 0, 6)
        np.testing.assert_allclose(np.exp(log_q[:, i]), density[which])
    np.testing.assert_allclose(rw.histogram_log_density(z, 7, alpha=0.01), np.log(np.exp(log_q) + 0.01))


def test_constant_dimension_is_harmless():
    z = np.c_[_latents(50, 1), np.ones(50)]
    w = rw.normalise(rw.log_weights(z, "product"))
    w1 = rw.normalise(rw.log_weights(z[:, :1], "product"))
    np.testing.assert_allclose(w, w1)  # a constant factor in every weight cancels


@pytest.mark.parametrize("method", rw.METHODS)
def test_weights_permute_with_the_samples(method):
    z = _latents()
    perm = np.random.default_rng(1).permutation(len(z))
    w, w_perm = _weights(z, method), _weights(z[perm], method)
    np.testing.assert_allclose(w_perm, w[perm], rtol=1e-6)
    assert w.sum() == pytest.approx(1.0) and (w > 0).all()


def test_weights_do_not_depend_on_labels():
    z = _two_clusters()
    labels = np.r_[np.zeros(950, int), np.ones(50, int)]
    w, log_density, _ = rw.estimate_weights(z)
    table = wf.weights_table(w, log_density, labels)
    np.testing.assert_array_equal(table["weight"], wf.weights_table(w, log_density)["weight"])
    assert "label" not in wf.weights_table(w, log_density).columns


def test_product_in_log_space_equals_direct_product():
    z, alpha = _latents(100, 5), 1e-3
    q = np.exp(rw.histogram_log_density(z, bins=10))
    direct = np.prod(1.0 / (q + alpha), axis=1)
    np.testing.assert_allclose(np.exp(rw.log_weights(z, "product", alpha=alpha)), direct, rtol=1e-10)
    np.testing.assert_allclose(rw.normalise(rw.log_weights(z, "product", alpha=alpha)), direct / direct.sum())


def test_many_dimensions_stay_finite_in_log_space():
    z = _latents(100, 2000, seed=2)
    q = np.exp(rw.histogram_log_density(z, bins=10))
    with np.errstate(over="ignore", under="ignore"):
        assert np.isinf(np.prod(1.0 / (q + 1e-3), axis=1)).all()  # the direct weights overflow
        assert (np.prod(q + 1e-3, axis=1) == 0).all()  # and the direct densities underflow
    for method in ("product", "max"):
        w = rw.normalise(rw.log_weights(z, method))
        assert np.isfinite(w).all() and (w > 0).all() and w.sum() == pytest.approx(1.0)


def test_lab_max_matches_the_lab():
    z = _latents(300, 6, seed=3)
    for alpha in (1e-3, 0.5):
        expected = _lab_probabilities(z, bins=10, smoothing_fac=alpha)
        np.testing.assert_allclose(rw.normalise(rw.log_weights(z, "max", bins=10, alpha=alpha)), expected,
                                   rtol=1e-10)
    lab = ReweightConfig(method="max", min_ess=None)  # the lab's rule, untempered
    np.testing.assert_allclose(rw.estimate_weights(z, lab).weights, _lab_probabilities(z))


@pytest.mark.parametrize("method", [*rw.METHODS, "knn+max", "knn+elbo"])
def test_sparse_cluster_gets_the_largest_weights(method):
    # The dense cluster's own tails are sparse too (and heavily weighted, rightly), so the claim
    # is about the clusters as wholes: 5% of the data gets over 25% of the mass.
    z = _two_clusters()
    w = _weights(z, method)
    sparse, dense = w[950:], w[:950]
    assert sparse.min() > np.median(dense)
    assert sparse.mean() > 5 * dense.mean()
    assert sparse.sum() > 0.25


def test_knn_density_equals_a_direct_computation():
    from scipy.special import gamma

    z = _latents(60, 3, seed=4)
    k, (n, d) = 4, z.shape
    dist = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)  # a sample is not its own neighbour
    r_k = np.sort(dist, axis=1)[:, k - 1]
    direct = k / ((n - 1) * np.pi ** (d / 2) / gamma(d / 2 + 1) * r_k ** d)
    np.testing.assert_allclose(np.exp(rw.knn_log_density(z, k)), direct, rtol=1e-5)
    np.testing.assert_allclose(rw.log_weights(z, "knn", k=k), -np.log(direct), rtol=1e-5)
    dup = np.r_[z, z[:1], z[:1], z[:1], z[:1]]  # four copies of one sample: r_4 = 0 there, floored
    assert np.isfinite(rw.knn_log_density(dup, k)).all()
    with pytest.raises(ValueError, match="needs more than 4 samples"):
        rw.knn_log_density(z[:4], k)


def test_joint_densities_equal_direct_computations():
    from scipy.special import logsumexp as lse
    from scipy.stats import multivariate_normal

    z = _two_clusters()[::10]  # 100 points, 2-d
    h, (n, d) = 0.5, z.shape
    sq = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)  # a Gaussian kernel on every sample, its own included
    direct_kde = lse(-sq / (2 * h * h), axis=1) - np.log(n) - 0.5 * d * np.log(2 * np.pi * h * h)
    np.testing.assert_allclose(rw.kde_log_density(z, h), direct_kde, rtol=1e-6)
    from sklearn.mixture import GaussianMixture

    canonical = z[np.lexsort(z.T[::-1])]
    fit = GaussianMixture(2, covariance_type="full", random_state=0).fit(canonical)
    direct_gmm = lse([np.log(w) + multivariate_normal(m, c).logpdf(z)
                      for w, m, c in zip(fit.weights_, fit.means_, fit.covariances_)], axis=0)
    np.testing.assert_allclose(rw.gmm_log_density(z, 2, seed=0), direct_gmm, rtol=1e-6)
    losses = _losses(z)
    np.testing.assert_array_equal(rw.log_weights(z, "elbo", losses=losses), losses)  # weight ∝ exp(−ELBO)


def test_latent_scalings():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(500, 3)) @ np.array([[3.0, 0, 0], [1.0, 0.5, 0], [0, 0, 2.0]])
    z = np.c_[z, np.full(500, 7.0)]  # a dead dimension (posterior collapse): dropped, not blown up
    np.testing.assert_array_equal(rw.scale_latents(z, "raw"), z)
    std = rw.scale_latents(z, "standardise")
    np.testing.assert_allclose(std, (z[:, :3] - z[:, :3].mean(0)) / z[:, :3].std(0))
    white = rw.scale_latents(z, "whiten")
    assert white.shape == (500, 3)
    np.testing.assert_allclose(np.cov(white, rowvar=False, bias=True), np.eye(3), atol=1e-10)
    # whitening is a rotation away from standardising when the dimensions are uncorrelated:
    # the k-NN density of whitened latents is the density of the standardised ones up to a constant
    iso = rng.normal(size=(300, 2)) * [2.0, 0.5]
    a, b = rw.knn_log_density(rw.scale_latents(iso, "whiten")), rw.knn_log_density(rw.scale_latents(iso, "standardise"))
    np.testing.assert_allclose(a - a.mean(), b - b.mean(), atol=0.05)


def test_combination_is_the_sum_of_standardised_signals():
    z = _two_clusters()
    parts = [rw.log_weights(z, "knn", k=5), rw.log_weights(z, "elbo", losses=_losses(z))]
    direct = sum((p - p.mean()) / p.std() for p in parts)
    np.testing.assert_allclose(rw.log_weights(z, "knn+elbo", k=5, losses=_losses(z)), direct)
    with pytest.raises(ValueError, match="'elbo' signal needs per-sample losses"):
        rw.log_weights(z, "knn+elbo")
    with pytest.raises(ValueError, match="1000 finite values"):
        rw.log_weights(z, "elbo", losses=np.zeros(3))
    with pytest.raises(ValueError, match=r"method='knn\+knn' is not allowed; expected one of \['max'.* joined by '\+'"):
        ReweightConfig(method="knn+knn")
    assert ReweightConfig(method="max+knn").signals == ("max", "knn")


def test_tempering_keeps_the_effective_sample_size():
    z = _two_clusters()
    log_w = rw.log_weights(z, "knn", k=5)
    raw = rw.normalise(log_w)
    assert rw.effective_sample_size(raw) < 0.2 * len(z)  # untempered, the sparse cluster takes most
    w, tau = rw.temper(log_w, 0.5)
    assert 0 < tau < 1 and rw.effective_sample_size(w) == pytest.approx(0.5 * len(z), rel=1e-3)
    np.testing.assert_allclose(w, rw.normalise(tau * log_w))  # a power of the untempered weights: same order
    assert rw.effective_sample_size(rw.normalise((tau + 2e-3) * log_w)) < 0.5 * len(z)  # τ is the largest
    assert rw.temper(log_w, None) == (pytest.approx(raw), 1.0)
    assert rw.temper(np.zeros(5), 0.99)[1] == 1.0  # uniform weights already have every sample
    zeroed, _ = rw.temper(np.r_[log_w[:-1], -np.inf], 0.5)
    assert zeroed[-1] == 0.0 and zeroed.sum() == pytest.approx(1.0)
    est = rw.estimate_weights(z, ReweightConfig(method="knn", k=5, min_ess=0.5))
    np.testing.assert_allclose(est.weights, w)
    assert est.tau == tau


def test_sample_losses_are_the_seeded_negative_elbo():
    torch.manual_seed(0)
    model = build_model(VAEConfig(**TINY["vae"]), (1, 8, 8), 17)
    images = torch.randint(0, 17, (10, 1, 8, 8), dtype=torch.uint8)
    model.train()  # as the training loop calls it: the mode and the global RNG must come back untouched
    state = torch.get_rng_state()
    losses = rw.sample_losses(model, images, seed=3)
    assert model.training and torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(losses, rw.sample_losses(model, images, seed=3))  # the same model, the same losses
    torch.manual_seed(3)
    model.eval()
    np.testing.assert_allclose(losses, -model.log_prob(images).double().numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="does not declare 'log_prob'"):
        from genlib.models.aae import AAEConfig

        rw.sample_losses(build_model(AAEConfig(**TINY["aae"]), (1, 8, 8), 17), images)


def test_alpha_flattens_the_weights():
    z = _two_clusters()
    ess = [rw.effective_sample_size(rw.normalise(rw.log_weights(z, "product", alpha=a))) for a in (0.0, 0.1, 100.0)]
    assert ess[0] < ess[1] < ess[2] and ess[2] == pytest.approx(1000, rel=1e-3)


def test_joint_density_log_p_is_reported():
    z = _two_clusters()
    w, log_density, _ = rw.estimate_weights(z, ReweightConfig(method="gmm", n_components=2, min_ess=None))
    assert log_density.shape == (1000,) and log_density[950:].mean() < log_density[:950].mean()
    np.testing.assert_allclose(w, rw.normalise(-log_density))  # α = 0 by default for joint densities


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"method='median' is not allowed; expected one of \['max'"):
        ReweightConfig(method="median")
    with pytest.raises(ValueError, match="alpha=-1.0 is not allowed; expected a number ≥ 0"):
        ReweightConfig(alpha=-1.0)
    with pytest.raises(ValueError, match="bandwidth='wide' is not allowed; expected a number > 0, 'scott' or 'silverman'"):
        ReweightConfig(bandwidth="wide")
    with pytest.raises(ValueError, match="non-finite"):
        rw.log_weights(np.array([[0.0], [np.nan]]))
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        rw.log_weights(np.zeros(5))
    with pytest.raises(ValueError, match="at least 10 samples"):
        rw.log_weights(_latents(5), "gmm")
    with pytest.raises(ValueError, match="NaN"):
        rw.normalise(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="every log weight"):
        rw.normalise(np.full(3, -np.inf))
    assert ReweightConfig(method="max").smoothing == 1e-3 and ReweightConfig(method="kde").smoothing == 0.0
    assert ReweightConfig(method="max+knn", alpha=None).params()["alpha"] is None  # each signal's own default
    assert ReweightConfig(method="gmm").params() == {"method": "gmm", "bins": 10, "alpha": 0.0, "k": 10,
                                                     "latents": "raw", "min_ess": 0.2, "n_components": 10,
                                                     "bandwidth": "scott", "seed": 0}


def test_normalise_is_stable():
    w = rw.normalise(np.array([1000.0, 1000.0, -np.inf, 999.0]))
    np.testing.assert_allclose(w, np.array([1, 1, 0, np.exp(-1)]) / (2 + np.exp(-1)))


# --------------------------------------------------------------------------- diagnostics and figures


def test_diagnostics():
    assert rw.effective_sample_size(np.full(10, 0.1)) == pytest.approx(10)
    assert rw.effective_sample_size(np.r_[1.0, np.zeros(9)]) == pytest.approx(1)
    stats = rw.diagnostics(np.r_[0.5, np.full(5, 0.1)])
    assert stats["ess_fraction"] == pytest.approx((1.0 / 0.3) / 6)
    assert stats["max_mean_ratio"] == pytest.approx(0.5 / (1 / 6))


def test_per_label_table():
    weights = np.array([0.1, 0.1, 0.2, 0.6])
    table = rw.per_label_table(weights, np.array([3, 3, 3, 7]))
    assert list(table.columns) == ["label", "count", "data_share", "weight_share", "mean_weight_ratio"]
    row = table.set_index("label").loc[7]
    assert row["count"] == 1 and row["data_share"] == 0.25
    assert row["weight_share"] == pytest.approx(0.6) and row["mean_weight_ratio"] == pytest.approx(2.4)
    assert table["weight_share"].sum() == pytest.approx(1.0)


def test_figures():
    rng = np.random.default_rng(0)
    w = rw.normalise(rng.normal(size=64))
    hist = rw.weight_histogram(w)
    assert hist.mode == "RGB" and hist.size[0] > 100
    images = rng.integers(0, 17, (64, 1, 8, 8), dtype=np.uint8)
    images[np.argmax(w)] = 16  # the heaviest image is all white: first tile of the "most" gallery
    galleries = rw.extreme_samples(torch.from_numpy(images), w, levels=17, k=4)
    assert set(galleries) == {"most_weighted", "least_weighted"}
    top_left = np.asarray(galleries["most_weighted"])[5:20, 5:20]
    assert (top_left == 255).all()
    uniform = rw.weight_histogram(np.full(8, 1 / 8))  # all weights equal: a degenerate range
    assert uniform.size == hist.size


# --------------------------------------------------------------------------- weights file


def test_parquet_round_trip(tmp_path):
    z = _two_clusters()
    labels = np.r_[np.zeros(950, int), np.ones(50, int)]
    w, log_density, _ = rw.estimate_weights(z)
    table = wf.weights_table(w, log_density, labels)
    meta = {"dataset_hash": "abc123", "vae_run_id": "r1", "split": "train", "params": ReweightConfig().params()}
    path = wf.write_weights(table, tmp_path / "sub" / "weights.parquet", meta)
    assert [p.name for p in path.parent.iterdir()] == ["weights.parquet"]  # no temporary file left
    back, meta_back = wf.read_weights(path)
    assert meta_back == meta
    assert list(back.columns) == ["index", "weight", "log_density", "label"]
    np.testing.assert_array_equal(back["weight"], w)
    np.testing.assert_array_equal(back["label"], labels)
    wf.write_weights(table.iloc[::-1], path, meta)  # rows in any order come back in sample order
    np.testing.assert_array_equal(wf.read_weights(path)[0]["weight"], w)


def _write_raw(path, frame, meta=True):
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    if meta:
        arrow = arrow.replace_schema_metadata({wf.META_KEY: b"{}"})
    pq.write_table(arrow, path)
    return path


def test_bad_weight_tables_are_rejected(tmp_path):
    import pandas as pd

    good = wf.weights_table(np.full(4, 0.25), np.zeros(4))
    cases = {
        "lacks column": good.drop(columns="log_density"),
        "non-finite": good.assign(weight=[0.5, np.nan, 0.25, 0.25]),
        "negative": good.assign(weight=[0.75, -0.25, 0.25, 0.25]),
        "sum to 2": good.assign(weight=[0.5, 0.5, 0.5, 0.5]),
        "0..3 once": good.assign(index=[0, 1, 1, 3]),
    }
    for message, frame in cases.items():
        with pytest.raises(ValueError, match=message):
            wf.read_weights(_write_raw(tmp_path / "bad.parquet", frame))
        with pytest.raises(ValueError, match=message):
            wf.write_weights(frame, tmp_path / "never.parquet", {})
    assert not (tmp_path / "never.parquet").exists()
    with pytest.raises(ValueError, match="without genlib weights metadata"):
        wf.read_weights(_write_raw(tmp_path / "plain.parquet", pd.DataFrame(good), meta=False))
    with pytest.raises(FileNotFoundError, match="no weights file"):
        wf.read_weights(tmp_path / "missing.parquet")
    with pytest.raises(ValueError, match="same"):
        wf.weights_table(np.full(4, 0.25), np.zeros(3))


# --------------------------------------------------------------------------- latents of a real model


def test_latent_means_of_a_tiny_vae():
    torch.manual_seed(0)
    model = build_model(VAEConfig(**TINY["vae"]), (1, 8, 8), 17)
    model.train()
    images = torch.randint(0, 17, (10, 1, 8, 8), dtype=torch.uint8)
    z = rw.latent_means(model, images, batch_size=3)
    assert z.shape == (10, TINY["vae"]["latent_dim"]) and z.dtype == np.float32
    model.eval()
    np.testing.assert_allclose(z, model.encode(images).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rw.latent_means(model, images.numpy()), z, rtol=1e-5, atol=1e-6)
    model.train()
    rw.latent_means(model, images)
    assert model.training  # given back in the mode it came in


def test_latent_means_of_a_conditional_vae_and_bad_models():
    model = build_model(VAEConfig(**TINY["vae"], conditional=True), (1, 8, 8), 17, num_classes=3)
    images, labels = torch.randint(0, 17, (6, 1, 8, 8), dtype=torch.uint8), torch.tensor([0, 1, 2, 0, 1, 2])
    assert rw.latent_means(model, images, labels=labels).shape == (6, 4)
    with pytest.raises(ValueError, match="needs labels"):
        rw.latent_means(model, images)
    with pytest.raises(ValueError, match="does not declare 'encode'"):
        rw.latent_means(build_model(CategoricalConfig(), (1, 8, 8), 17), images)
    with pytest.raises(ValueError, match="uint8"):
        rw.latent_means(model, images.float(), labels=labels)

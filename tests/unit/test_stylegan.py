"""The StyleGAN-style generator: modulated convolutions, truncation, style mixing, lazy R1."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genlib.config import TrainConfig
from genlib.models import build_model
from genlib.models.base import STYLE_MIX, TRUNCATE
from genlib.models.stylegan import ModulatedConv2d
from genlib.presets import config_from_dict


def _stylegan(size: int = 8, **params):
    cfg = config_from_dict({"model": {"family": "stylegan", "latent_dim": 8, "w_dim": 8, "mapping_layers": 2,
                                      "channel_base": 64, "max_channels": 16, **params}}).model
    torch.manual_seed(0)
    return build_model(cfg, (1, size, size), 17)


def test_a_modulated_convolution_is_a_per_sample_convolution_with_styled_demodulated_weights():
    torch.manual_seed(0)
    conv = ModulatedConv2d(3, 5, 3, w_dim=4)
    x, w = torch.randn(2, 3, 6, 6), torch.randn(2, 4)
    out = conv(x, w)
    style = conv.affine(w)
    for i in range(2):
        weight = conv.weight * conv.scale * style[i][None, :, None, None]
        weight = weight / weight.pow(2).sum(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()  # unit norm per output
        torch.testing.assert_close(out[i:i + 1], F.conv2d(x[i:i + 1], weight, padding=1))


def test_truncation_to_zero_gives_the_mean_latents_image_for_every_sample():
    model = _stylegan()
    model.sampler.w_avg.copy_(torch.randn(8))  # a running mean of w, as training leaves one
    images = model.sample(6, generator=torch.Generator().manual_seed(1), truncation=0.0)
    assert TRUNCATE in model.capabilities and all(torch.equal(images[0], image) for image in images)
    net = model.sampler.eval()
    mean_image = model.quantize(net.synthesize(net.w_avg.expand(1, net.num_layers, -1)))
    assert torch.equal(images[:1], mean_image)
    untruncated = model.sample(6, generator=torch.Generator().manual_seed(1))
    assert not all(torch.equal(untruncated[0], image) for image in untruncated)
    assert torch.equal(untruncated, model.sample(6, generator=torch.Generator().manual_seed(1), truncation=1.0))


def test_mixing_a_latent_with_itself_is_plain_sampling_and_the_grid_mixes_rows_and_columns():
    model = _stylegan()
    z = torch.randn(4, 8)
    plain = model.generate_from(z)
    for cutoff in (1, 2, 4):
        assert torch.equal(model.generate_from(z, z, cutoff), plain)
    grid = model.style_mix(rows=2, cols=3, cutoff=0, generator=torch.Generator().manual_seed(2))
    assert STYLE_MIX in model.capabilities and grid.shape == (12, 1, 8, 8) and not grid[0].any()
    tops, lefts = grid[1:4], grid[[4, 8]]
    assert torch.equal(grid[5:8], lefts[0:1].expand(3, -1, -1, -1))  # cutoff 0: every style is the row's
    cut = model.style_mix(rows=2, cols=3, cutoff=model.sampler.num_layers, generator=torch.Generator().manual_seed(2))
    assert torch.equal(cut[9:12], tops) and torch.equal(cut[1:4], tops)  # cutoff at the end: the column's
    # A real mix (cutoff 1: the 4×4 layer's style from the column's latent, the rest from the row's).
    net = model.sampler
    coarse, fine = torch.randn(1, 8), torch.randn(1, 8)
    ws = torch.cat([net.mapping(coarse)[:, None], net.mapping(fine)[:, None].expand(1, net.num_layers - 1, -1)], 1)
    mixed = model.generate_from(coarse, fine, cutoff=1)
    assert torch.equal(mixed, model.quantize(net.synthesize(ws)))
    assert not torch.equal(mixed, model.generate_from(coarse)) and not torch.equal(mixed, model.generate_from(fine))


def test_lazy_r1_is_gamma_over_two_times_the_squared_gradient_norm_at_the_real_images_weighted_by_its_interval():
    from genlib.models.base import Batch, TrainingContext

    # training_step asks for the penalty on every 4th discriminator step only, weighted ×4
    model = _stylegan(penalty_every=4, gp_weight=3.0)
    scales = []
    forward = model.forward
    model.forward = lambda phase, *args: scales.append(args[-1]) or forward(phase, *args) if phase == "d" \
        else forward(phase, *args)
    batch = Batch(torch.randint(0, 17, (4, 1, 8, 8), dtype=torch.uint8), None, torch.arange(4))
    optimizers = model.configure_optimizers(TrainConfig())
    for step in range(9):
        model.training_step(batch, optimizers, TrainingContext(step))
    assert scales == [4.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 4.0]

    model = _stylegan(penalty_every=4, gp_weight=3.0).eval()  # eval: the generator draws no noise
    x = torch.randint(0, 17, (6, 1, 8, 8), dtype=torch.uint8)
    z = torch.randn(6, 8)
    losses = {}
    for scale in (0.0, 4.0):
        torch.manual_seed(5)  # the same dequantisation noise
        losses[scale] = model("d", x, z, None, penalty_scale=scale)
    torch.manual_seed(5)
    real = model._dequantize(x).requires_grad_(True)
    grad, = torch.autograd.grad(model.discriminator(real).sum(), real)
    r1 = grad.flatten(1).pow(2).sum(1).mean()
    assert (losses[4.0] - losses[0.0]).item() == pytest.approx(4.0 * 3.0 / 2 * r1.item(), rel=1e-4)


def test_the_truncation_curve_scores_each_psi_against_the_test_split():
    from genlib.config import DataConfig
    from genlib.data.dataset import DatasetVersion
    from genlib.data.prepare import prepare
    from genlib.evaluate.extractor import Extractor
    from genlib.evaluate.fid import frechet_distance, gaussian_stats, precision_recall
    from genlib.evaluate.references import References
    from genlib.evaluate.suite import generate, truncation_curve
    from genlib.presets import load_config
    from genlib.tracking import TRUNCATION_CURVE

    version = DatasetVersion(prepare(DataConfig(source="digits")).path)
    refs = References(version, Extractor("pixels", "pixels", 64, lambda images: images.flatten(1).float(), {}))
    cfg = load_config("digits-quick", ["models=[]", "eval.n_generated=60", "eval.truncation=[0.5, 0]"])
    model = _stylegan(8).eval()
    model.sampler.w_avg.copy_(torch.randn(8))
    untruncated = {"fid_pixels": 9.0, "precision_pixels": 0.1, "recall_pixels": 0.2}
    scores = truncation_curve(model, cfg, refs, untruncated)
    rows = scores.tables[TRUNCATION_CURVE]
    assert rows[0] == {"psi": 1.0, "fid": 9.0, "precision": 0.1, "recall": 0.2}  # the evaluation's own point
    assert [row["psi"] for row in rows] == [1.0, 0.5, 0.0]
    mu, sigma, _ = refs.test_stats
    for row in rows[1:]:  # each point, computed directly from the same samples
        features = refs.extractor(generate(model, 60, cfg.train.seed + 1, truncation=row["psi"]))
        precision, recall = precision_recall(refs.test_features, features)
        fid = frechet_distance(*gaussian_stats(features), mu, sigma).value
        tag = f"psi{row['psi']:g}"
        assert scores.metrics[f"fid_pixels_{tag}"] == row["fid"] == pytest.approx(fid)
        assert (scores.metrics[f"precision_pixels_{tag}"], scores.metrics[f"recall_pixels_{tag}"]) == (precision, recall)
    assert scores.metrics["recall_pixels_psi0"] == 0.0  # ψ = 0: one image, repeated: no diversity at all
    assert scores.params == {"quality.truncation": "0.5, 0"}


def test_path_pairs_walk_z_and_w_and_the_path_length_is_the_trimmed_mean_squared_feature_step():
    from types import SimpleNamespace

    from genlib.evaluate.extractor import Extractor
    from genlib.evaluate.suite import path_length, trimmed_mean
    from genlib.presets import load_config

    model = _stylegan().eval()
    for space in model.path_spaces:
        same = model.path_pairs(3, 0.0, space, torch.Generator().manual_seed(0))
        near = model.path_pairs(3, 1e-2, space, torch.Generator().manual_seed(0))
        assert torch.equal(same[0], same[1]) and torch.equal(same[0], near[0])  # t is drawn the same way
        assert 0 < (near[1] - near[0]).abs().max() < 1 and near[0].dtype == torch.float32 and near[0].max() <= 16
    with pytest.raises(ValueError, match="walks paths in"):
        model.path_pairs(3, 0.0, "x")

    assert trimmed_mean(np.arange(101.0)) == pytest.approx(50.0)  # 0 and 100 are outside [p1, p99]
    step = torch.tensor([1.0, -1.0, 2.0, 0.5])  # one step along every path: ‖step‖² = 6.25

    class Straight:  # a "model" whose paths are straight lines in pixel space
        path_spaces = ("z",)
        device = torch.device("cpu")

        def path_pairs(self, n, epsilon, space, generator):
            a = 8 * torch.rand(n, 1, 2, 2, generator=generator)
            return a, a + epsilon * step.view(1, 1, 2, 2)

    refs = SimpleNamespace(extractor=Extractor("pixels", "pixels", 4, lambda x: x.flatten(1).float(), {}))
    cfg = load_config("digits-quick", ["models=[]", "eval.n_generated=300"])
    scores = path_length(Straight(), cfg, refs)
    assert scores.metrics["ppl_z_pixels"] == pytest.approx(6.25, rel=0.02)  # float32 images: ~1 % per pair

"""Progressive growing: the schedule, the fade-in, the minibatch standard deviation, and a run
resumed from a checkpoint in the middle of a fade."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from genlib.config import DataConfig
from genlib.data.dataset import DatasetVersion
from genlib.data.prepare import prepare
from genlib.models import build_model
from genlib.models.base import TrainingContext
from genlib.models.progan import growth, level_of_detail, minibatch_stddev
from genlib.presets import config_from_dict, load_config
from genlib.train.loop import Progress, _loaders, _train_epoch, resume_from, seed_epoch, write_checkpoint


def _progan(size: int = 8, **params):
    cfg = config_from_dict({"model": {"family": "progan", "latent_dim": 8, "channel_base": 64, "max_channels": 16,
                                      **params}}).model
    torch.manual_seed(0)
    return build_model(cfg, (1, size, size), 17)


def test_the_schedule_trains_each_level_then_fades_the_next_in_linearly():
    # 32×32 (final level 3): 10 images at 4×4, then per level a fade of 20 images and 10 alone.
    at = [level_of_detail(t, final_level=3, fade=20, stable=10) for t in (0, 9, 10, 15, 29, 30, 39, 40, 70, 89, 10**6)]
    assert at == [(0, 1.0), (0, 1.0), (1, 0.0), (1, 0.25), (1, 0.95), (1, 1.0), (1, 1.0), (2, 0.0), (3, 0.0),
                  (3, 0.95), (3, 1.0)]
    assert [growth(*lod) for lod in at] == [0, 0, 0, 0.25, 0.95, 1, 1, 1, 2, 2.95, 3]


def test_at_the_start_of_a_fade_the_new_block_changes_nothing():
    model = _progan(16)
    z = torch.randn(5, 8)
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    for net in (model.generator, model.discriminator):
        net.set_level_of_detail(1, 1.0)
    g_before, d_before = model.generator(z), model.discriminator(x)
    for net in (model.generator, model.discriminator):
        net.set_level_of_detail(2, 0.0)
    g_fading = model.generator(z)
    assert g_fading.shape == (5, 1, 16, 16)
    torch.testing.assert_close(g_fading, F.interpolate(g_before, scale_factor=2, mode="nearest"))
    # D at 16×16 with α = 0 sees only the half-resolution path: the 8×8 discriminator of the average-pooled image.
    torch.testing.assert_close(model.discriminator(F.interpolate(x, scale_factor=2, mode="nearest")), d_before)


def test_during_a_fade_the_generator_and_the_real_images_blend_linearly_in_alpha():
    model = _progan(16)
    z = torch.randn(5, 8)
    outputs = {}
    for alpha in (0.0, 0.3, 1.0):
        model.generator.set_level_of_detail(2, alpha)
        outputs[alpha] = model.generator(z)
    torch.testing.assert_close(outputs[0.3], 0.7 * outputs[0.0] + 0.3 * outputs[1.0])
    x = torch.randint(0, 17, (5, 1, 16, 16), dtype=torch.uint8)
    reals = {}
    for alpha in (0.0, 0.3, 1.0):
        model.discriminator.set_level_of_detail(2, alpha)
        model.generator.set_level_of_detail(2, alpha)
        torch.manual_seed(1)  # the same dequantisation noise
        reals[alpha] = model._dequantize(x)
    torch.testing.assert_close(reals[0.3], 0.7 * reals[0.0] + 0.3 * reals[1.0])
    torch.testing.assert_close(reals[0.0], F.interpolate(F.avg_pool2d(reals[1.0], 2), scale_factor=2, mode="nearest"))


def test_minibatch_stddev_appends_each_groups_mean_standard_deviation():
    x = torch.randn(6, 3, 2, 2)
    out = minibatch_stddev(x, group_size=4)  # 6 images: groups of 3 (the largest size ≤ 4 dividing 6)
    assert out.shape == (6, 4, 2, 2) and torch.equal(out[:, :3], x)
    for member in range(2):  # images 0, 2, 4 form one group, 1, 3, 5 the other
        group = x[member::2]
        expected = (group.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        assert torch.allclose(out[member::2, 3], expected.expand(3, 2, 2))


def test_images_progan_cannot_grow_to_and_conditional_progan_are_refused():
    with pytest.raises(ValueError, match="square images with a side of 4·2"):
        _progan(12)
    with pytest.raises(ValueError, match="conditional"):
        config_from_dict({"model": {"family": "progan", "conditional": True}})


def test_a_run_resumed_in_the_middle_of_a_fade_continues_as_if_it_never_stopped(tmp_path):
    """Epochs of 1150 digits; 8×8 fades in over 1600 images after 800 at 4×4, so epoch 1 ends mid-fade.
    One run trains 3 epochs; another stops after epoch 1, and a new process state (a model built from
    another seed) resumes from its checkpoint: α, the images seen and epochs 2 and 3 must be identical."""
    cfg = load_config("digits-quick", ["models=[]", "train.batch_size=128", "model={family: progan, latent_dim: 8, "
                                       "channel_base: 64, max_channels: 16, fade_images: 1600, stable_images: 800}"])
    version = DatasetVersion(prepare(DataConfig(source="digits")).path)
    device = torch.device("cpu")

    def build(seed):
        torch.manual_seed(seed)
        model = build_model(cfg.model, version.shape, version.levels, version.num_classes)
        model.bind_runner(model)
        return model, model.configure_optimizers(cfg.train)

    def epoch(model, optimizers, progress, n):  # the loop's epoch, on one rank
        loader, _ = _loaders(cfg, version, 0, 1, None)
        loader.sampler.set_epoch(n - 1)
        seed_epoch(cfg.train.seed, 0, n)
        model.train()
        metrics, context, _ = _train_epoch(model, loader, optimizers,
                                           TrainingContext(progress.step, progress.images_seen, 1, n), device)
        progress.step, progress.images_seen, progress.epoch = context.step, context.images_seen, n
        return metrics

    model, optimizers = build(cfg.train.seed)
    progress = Progress()
    through = [epoch(model, optimizers, progress, n) for n in (1, 2, 3)]

    stopped, stopped_optimizers = build(cfg.train.seed)
    stopped_progress = Progress()
    first = epoch(stopped, stopped_optimizers, stopped_progress, 1)
    assert first == through[0]
    level, alpha = stopped.level_of_detail()
    assert level == 1 and 0.1 < alpha < 0.9  # stopped in the middle of 8×8's fade-in
    path = write_checkpoint(tmp_path / "ckpt", stopped, stopped_optimizers, stopped_progress, cfg, first)

    resumed, resumed_optimizers = build(seed=123)
    restored, optimizer_states, _ = resume_from(path, resumed)
    for name, opt in resumed_optimizers.items():
        opt.load_state_dict(optimizer_states[name])
    assert dataclasses.asdict(restored) == dataclasses.asdict(stopped_progress)
    assert resumed.level_of_detail() == (level, alpha) and int(resumed.images_seen) == restored.images_seen
    after = [epoch(resumed, resumed_optimizers, restored, n) for n in (2, 3)]
    assert after == through[1:]  # the same losses, growth and resolution, epoch by epoch
    assert restored.images_seen == progress.images_seen and resumed.level_of_detail() == model.level_of_detail()
    for a, b in zip(resumed.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)

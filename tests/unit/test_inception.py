"""The FID Inception-v3: published weight layout, weight look-up and checks, FID's block quirks."""

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genlib import paths
from genlib.config import DataConfig
from genlib.data.dataset import DatasetVersion
from genlib.data.prepare import prepare
from genlib.evaluate import inception
from genlib.evaluate.features import EXTRACTORS
from genlib.evaluate.inception import FIDInceptionV3, InceptionA, InceptionC, InceptionE, load_inception

# --------------------------------------------------------------------------- the published layout, from the tables
# Written from the architecture tables (torchvision's Inception3 names, pytorch-fid's FID variant), not
# from the module. pytorch-fid's file holds BatchNorm's num_batches_tracked too: its issue #34 shows
# PyTorch 0.4.0 refusing exactly those keys ("Unexpected key(s) ... Conv2d_1a_3x3.bn.num_batches_tracked").


def _conv(name, cout, cin, kh, kw=None):
    keys = {f"{name}.conv.weight": (cout, cin, kh, kw or kh)}
    keys.update({f"{name}.bn.{p}": (cout,) for p in ("weight", "bias", "running_mean", "running_var")})
    keys[f"{name}.bn.num_batches_tracked"] = ()
    return keys


def _block_a(m, cin, pool):  # 35×35; out 64 + 64 + 96 + pool
    return {**_conv(f"{m}.branch1x1", 64, cin, 1), **_conv(f"{m}.branch5x5_1", 48, cin, 1),
            **_conv(f"{m}.branch5x5_2", 64, 48, 5), **_conv(f"{m}.branch3x3dbl_1", 64, cin, 1),
            **_conv(f"{m}.branch3x3dbl_2", 96, 64, 3), **_conv(f"{m}.branch3x3dbl_3", 96, 96, 3),
            **_conv(f"{m}.branch_pool", pool, cin, 1)}


def _block_b(m, cin):  # 35 → 17; out 384 + 96 + cin
    return {**_conv(f"{m}.branch3x3", 384, cin, 3), **_conv(f"{m}.branch3x3dbl_1", 64, cin, 1),
            **_conv(f"{m}.branch3x3dbl_2", 96, 64, 3), **_conv(f"{m}.branch3x3dbl_3", 96, 96, 3)}


def _block_c(m, cin, c7):  # 17×17; out 4 × 192
    return {**_conv(f"{m}.branch1x1", 192, cin, 1), **_conv(f"{m}.branch7x7_1", c7, cin, 1),
            **_conv(f"{m}.branch7x7_2", c7, c7, 1, 7), **_conv(f"{m}.branch7x7_3", 192, c7, 7, 1),
            **_conv(f"{m}.branch7x7dbl_1", c7, cin, 1), **_conv(f"{m}.branch7x7dbl_2", c7, c7, 7, 1),
            **_conv(f"{m}.branch7x7dbl_3", c7, c7, 1, 7), **_conv(f"{m}.branch7x7dbl_4", c7, c7, 7, 1),
            **_conv(f"{m}.branch7x7dbl_5", 192, c7, 1, 7), **_conv(f"{m}.branch_pool", 192, cin, 1)}


def _block_d(m, cin):  # 17 → 8; out 320 + 192 + cin
    return {**_conv(f"{m}.branch3x3_1", 192, cin, 1), **_conv(f"{m}.branch3x3_2", 320, 192, 3),
            **_conv(f"{m}.branch7x7x3_1", 192, cin, 1), **_conv(f"{m}.branch7x7x3_2", 192, 192, 1, 7),
            **_conv(f"{m}.branch7x7x3_3", 192, 192, 7, 1), **_conv(f"{m}.branch7x7x3_4", 192, 192, 3)}


def _block_e(m, cin):  # 8×8; out 320 + 2 × 384 + 2 × 384 + 192 = 2048
    return {**_conv(f"{m}.branch1x1", 320, cin, 1), **_conv(f"{m}.branch3x3_1", 384, cin, 1),
            **_conv(f"{m}.branch3x3_2a", 384, 384, 1, 3), **_conv(f"{m}.branch3x3_2b", 384, 384, 3, 1),
            **_conv(f"{m}.branch3x3dbl_1", 448, cin, 1), **_conv(f"{m}.branch3x3dbl_2", 384, 448, 3),
            **_conv(f"{m}.branch3x3dbl_3a", 384, 384, 1, 3), **_conv(f"{m}.branch3x3dbl_3b", 384, 384, 3, 1),
            **_conv(f"{m}.branch_pool", 192, cin, 1)}


PUBLISHED = {
    **_conv("Conv2d_1a_3x3", 32, 3, 3), **_conv("Conv2d_2a_3x3", 32, 32, 3), **_conv("Conv2d_2b_3x3", 64, 32, 3),
    **_conv("Conv2d_3b_1x1", 80, 64, 1), **_conv("Conv2d_4a_3x3", 192, 80, 3),
    **_block_a("Mixed_5b", 192, 32), **_block_a("Mixed_5c", 256, 64), **_block_a("Mixed_5d", 288, 64),
    **_block_b("Mixed_6a", 288),
    **_block_c("Mixed_6b", 768, 128), **_block_c("Mixed_6c", 768, 160), **_block_c("Mixed_6d", 768, 160),
    **_block_c("Mixed_6e", 768, 192),
    **_block_d("Mixed_7a", 768), **_block_e("Mixed_7b", 1280), **_block_e("Mixed_7c", 2048),
    "fc.weight": (1008, 2048), "fc.bias": (1008,),
}


def test_module_reproduces_the_published_state_dict_layout():
    net = FIDInceptionV3()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == PUBLISHED
    assert len(PUBLISHED) == 566  # 94 conv+BN units × 6 + fc's 2
    # torchvision's Inception3 has 27,161,264 parameters; without AuxLogits (3,326,696) and with
    # 1008 instead of 1000 classes (+8 × 2049) that is the FID variant's count.
    assert sum(p.numel() for p in net.parameters()) == 27_161_264 - 3_326_696 + 8 * 2049 == 23_850_960
    assert net.eval()(torch.zeros(1, 3, 75, 75)).shape == (1, 2048)  # 75×75: the smallest input it takes


def _published_format(drop=()):
    """A plain dict of tensors with the published keys; values need only be valid (var > 0)."""
    state = {k: torch.zeros(s, dtype=torch.int64 if k.endswith("num_batches_tracked") else torch.float32)
             for k, s in PUBLISHED.items() if not any(d in k for d in drop)}
    return {k: v + 1 if k.endswith("running_var") else v for k, v in state.items()}


@pytest.mark.parametrize("drop", [(), ("num_batches_tracked",)], ids=["as-published", "without-step-counters"])
def test_a_file_in_the_published_format_loads(tmp_path, drop):
    torch.save(_published_format(drop), tmp_path / "w.pth")
    net = load_inception(tmp_path / "w.pth")
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert torch.equal(net.Mixed_7c.branch_pool.bn.running_var, torch.ones(192))


def test_a_file_with_other_keys_or_shapes_is_refused(tmp_path):
    state = _published_format()
    state["AuxLogits.fc.weight"] = torch.zeros(1008, 768)
    del state["Mixed_6e.branch_pool.conv.weight"]
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"missing \['Mixed_6e.branch_pool.conv.weight'\].*AuxLogits"):
        load_inception(tmp_path / "w.pth")
    state = _published_format()
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's ImageNet head, not the TF graph's
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(RuntimeError, match="size mismatch for fc.weight"):
        load_inception(tmp_path / "w.pth")


# --------------------------------------------------------------------------- FID's departures from torchvision


def _pooled(block, x):
    """What the block's pool branch feeds its 1×1 conv, for input ``x``."""
    seen = {}
    block.branch_pool.register_forward_pre_hook(lambda m, args: seen.update(pool=args[0]))
    block(x)
    return seen["pool"]


@pytest.mark.parametrize("block", [InceptionA(4, 8), InceptionC(4, 8), InceptionE(4)], ids=["A", "C", "E"])
@torch.no_grad()
def test_average_pools_ignore_the_padding(block):
    x = torch.ones(1, 4, 5, 5)
    assert torch.equal(_pooled(block.eval(), x), x)  # TF's rule; counting the padded zeros would give 4/9 in the corners
    assert F.avg_pool2d(x, 3, 1, 1)[0, 0, 0, 0] == pytest.approx(4 / 9)


@torch.no_grad()
def test_the_last_block_max_pools_and_the_others_average(inception_weights_file):
    net = load_inception(inception_weights_file[0])  # He-scaled random weights: activations stay O(1)
    torch.manual_seed(0)
    blocks = {name: getattr(net, name) for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c",
                                                    "Mixed_6d", "Mixed_6e", "Mixed_7b", "Mixed_7c")}
    seen = {}
    for name, block in blocks.items():
        block.register_forward_pre_hook(lambda m, args, name=name: seen.update({name: args[0]}))
        block.branch_pool.register_forward_pre_hook(lambda m, args, name=name: seen.update({name + ".pool": args[0]}))
    net(torch.rand(1, 3, 299, 299) * 2 - 1)
    for name in blocks:
        x, pooled = seen[name], seen[name + ".pool"]
        max_pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        avg_pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        expected, other = (max_pooled, avg_pooled) if name == "Mixed_7c" else (avg_pooled, max_pooled)
        assert torch.allclose(pooled, expected, rtol=1e-5, atol=1e-6 * x.abs().max()), name
        assert not torch.allclose(pooled, other, rtol=1e-2), name  # the check can tell them apart
    assert seen["Mixed_7c"].shape == (1, 2048, 8, 8)


# --------------------------------------------------------------------------- preprocessing and features


def test_preprocessing_is_pytorch_fids():
    grey = torch.tensor([[0, 16], [8, 16]], dtype=torch.uint8).reshape(1, 1, 2, 2)
    x = inception.preprocess(grey, levels=17)
    assert x.shape == (1, 3, 299, 299)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey repeated
    assert x[0, 0, 0, 0] == -1 and x[0, 0, 0, -1] == 1 and x[0, 0, -1, 0] == 0  # corners keep their values
    flat = inception.preprocess(torch.full((2, 3, 8, 8), 255, dtype=torch.uint8), levels=256)
    assert torch.allclose(flat, torch.ones(2, 3, 299, 299))
    with pytest.raises(ValueError, match="grey or RGB"):
        inception.preprocess(torch.zeros(1, 2, 8, 8, dtype=torch.uint8), levels=256)


def test_extractor_gives_2048_finite_features_of_digits(inception_weights):
    version = DatasetVersion(prepare(DataConfig(source="digits")).path)
    extractor = EXTRACTORS.get("inception-v3-fid")(version)
    images = torch.from_numpy(np.array(version.images("test")[:4])).permute(0, 3, 1, 2)  # (4, 1, 8, 8)
    feats = extractor(images)
    assert feats.shape == (4, 2048) == (len(images), extractor.dims) and np.isfinite(feats).all()
    assert (feats >= 0).all() and np.ptp(feats, axis=0).max() > 0  # post-ReLU means; images differ
    assert extractor.preprocessing.startswith("inception-v3-fid-2015-12-05-") and "bilinear299" in extractor.preprocessing
    assert extractor.info["weights_sha256"] == inception.WEIGHTS_SHA256


# --------------------------------------------------------------------------- finding and checking the weights


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache, so that a real one on this machine cannot leak in."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints" / inception.WEIGHTS_FILE


def test_the_published_checksum_is_enforced(inception_weights_file, monkeypatch):
    path, _ = inception_weights_file
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(path))  # a file whose sha256 is not the published one
    version = DatasetVersion(prepare(DataConfig(source="digits")).path)
    with pytest.raises(ValueError, match=f"sha256 checksum is .*, expected {inception.WEIGHTS_SHA256}"):
        EXTRACTORS.get("inception-v3-fid")(version)


def test_missing_weights_offline_say_where_to_put_them(torch_home):
    ours = paths.downloads_dir() / inception.WEIGHTS_FILE
    with pytest.raises(FileNotFoundError) as err:
        inception.weights_path()
    for where in (str(ours), str(torch_home), inception.WEIGHTS_ENV, inception.WEIGHTS_URL):
        assert where in str(err.value)
    assert not ours.exists()


def test_a_missing_file_named_by_the_env_var_is_an_error(torch_home, monkeypatch, tmp_path):
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(FileNotFoundError, match=f"{inception.WEIGHTS_ENV}=.*nowhere.pth is not a file"):
        inception.weights_path()


def test_lookup_order_env_then_genlib_then_torch_hub(inception_weights_file, torch_home, monkeypatch, tmp_path):
    path, sha256 = inception_weights_file
    monkeypatch.setattr(inception, "WEIGHTS_SHA256", sha256)
    torch_home.parent.mkdir(parents=True)
    shutil.copy(path, torch_home)
    assert inception.weights_path() == torch_home  # where pytorch-fid users already have it
    ours = paths.downloads_dir() / inception.WEIGHTS_FILE
    ours.parent.mkdir(parents=True)
    shutil.copy(path, ours)
    assert inception.weights_path() == ours
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(path))
    assert inception.weights_path() == path
    monkeypatch.delenv(inception.WEIGHTS_ENV)
    ours.write_bytes(b"truncated")  # a corrupt cache is reported, not used and not skipped
    with pytest.raises(ValueError, match="checksum"):
        inception.weights_path()
    ours.unlink()
    torch_home.write_bytes(b"truncated")
    with pytest.raises(ValueError, match="checksum"):
        inception.weights_path()

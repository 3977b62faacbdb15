import json
import os

import numpy as np
import pytest

from genlib import paths
from genlib.config import DataConfig
from genlib.data import prepare as prepare_module
from genlib.data.dataset import DatasetVersion
from genlib.data.prepare import prepare, verify_version


def test_prepare_writes_a_complete_version():
    prepared = prepare(DataConfig(source="digits"))
    assert not prepared.cache_hit
    manifest = json.loads((prepared.path / "manifest.json").read_text())
    assert manifest["shape"] == [8, 8, 1] and manifest["levels"] == 17 and manifest["num_classes"] == 10
    assert sum(manifest["splits"].values()) == 1797
    assert manifest["splits"]["test"] == pytest.approx(0.2 * 1797, abs=10)
    assert prepared.path.name == f"digits-{manifest['content_hash'][:12]}"
    verify_version(prepared.path)
    for f in prepared.path.iterdir():
        assert not os.access(f, os.W_OK) or os.geteuid() == 0  # read-only files (root may still write)
        assert f.stat().st_mode & 0o222 == 0


def test_same_inputs_same_hash_cache_hit():
    first = prepare(DataConfig(source="digits"))
    second = prepare(DataConfig(source="digits"))
    assert second.cache_hit and second.path == first.path
    other_seed = prepare(DataConfig(source="digits", seed=1))
    assert other_seed.content_hash != first.content_hash and not other_seed.cache_hit


def test_splits_are_stratified_disjoint_and_complete():
    version = DatasetVersion(prepare(DataConfig(source="digits")).path)
    counts = {s: np.bincount(version.labels(s), minlength=10) for s in ("train", "val", "test")}
    total = sum(counts.values())
    assert (total == np.bincount(__import__("sklearn.datasets").datasets.load_digits().target)).all()
    for split, fraction in (("test", 0.2), ("val", 0.1)):
        assert np.allclose(counts[split] / total, fraction, atol=0.02)


def test_dataset_reads_memory_mapped():
    version = DatasetVersion(prepare(DataConfig(source="digits")).path)
    assert isinstance(version.images("train"), np.memmap)
    ds = version.dataset("test")
    x, label, index = ds[3]
    assert x.shape == (1, 8, 8) and x.dtype.is_floating_point is False and 0 <= label < 10 and index == 3
    assert len(ds) == version.manifest["splits"]["test"]
    with pytest.raises(ValueError, match=r"unknown split 'dev'; known: \['train', 'val', 'test'\]"):
        version.dataset("dev")


def test_failed_write_leaves_nothing(monkeypatch):
    calls = {"n": 0}
    real_save = np.save

    def flaky_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(prepare_module.np, "save", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        prepare(DataConfig(source="digits"))
    assert list(paths.datasets_dir().iterdir()) == []


def test_bad_input_writes_nothing(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.full((10, 4, 4), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        prepare(DataConfig(source="npz", path=str(bad)))
    assert not paths.datasets_dir().exists() or list(paths.datasets_dir().iterdir()) == []


def test_bad_fractions_and_tiny_data(tmp_path):
    with pytest.raises(ValueError, match=r"test_fraction=0.5 is not allowed; expected val_fraction \+ test_fraction < 1"):
        DataConfig(source="digits", val_fraction=0.5, test_fraction=0.5)
    tiny = tmp_path / "tiny.npz"
    np.savez(tiny, images=np.zeros((2, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="split 'val' of source 'npz' is empty"):
        prepare(DataConfig(source="npz", path=str(tiny)))


def test_official_test_split_is_kept(tmp_path, monkeypatch):
    from genlib.data import sources
    from tests.unit.formats import md5, write_mnist_folder

    files = write_mnist_folder(tmp_path / "m", n_train=50, n_test=20)
    monkeypatch.setattr(sources, "_MNIST_MD5", tuple(md5(f) for f in files))
    prepared = prepare(DataConfig(source="mnist", path=str(tmp_path / "m"), val_fraction=0.2))
    assert prepared.manifest["splits"] == {"train": 40, "val": 10, "test": 20}


def test_induced_imbalance_thins_one_class_in_train_only():
    whole = DatasetVersion(prepare(DataConfig(source="digits")).path)
    thin = DatasetVersion(prepare(DataConfig(source="digits", rare_class=3, rare_keep=0.1)).path)
    assert thin.content_hash != whole.content_hash
    before, after = (np.bincount(v.labels("train"), minlength=10) for v in (whole, thin))
    assert after[3] == round(0.1 * before[3]) and (np.delete(after, 3) == np.delete(before, 3)).all()
    for split in ("val", "test"):
        assert (thin.labels(split) == whole.labels(split)).all()
    with pytest.raises(ValueError, match="rare_class=12 has no training images; classes present"):
        prepare(DataConfig(source="digits", rare_class=12, rare_keep=0.1))
    with pytest.raises(ValueError, match=r"rare_keep=0.0 is not allowed; expected a number in \(0, 1\]"):
        DataConfig(source="digits", rare_class=3, rare_keep=0.0)


def test_styles_are_the_transformations_they_name():
    from genlib.config import STYLE_NAMES
    from genlib.data.styles import STYLES, slant, thick

    assert tuple(STYLES) == STYLE_NAMES
    x = np.zeros((1, 5, 5, 1), dtype=np.uint8)
    x[0, 2, 2, 0] = 9
    bold = thick(x, 17)[0, :, :, 0]
    assert bold.dtype == np.uint8 and (bold[2:4, 2:4] == 9).all() and bold.sum() == 4 * 9  # a 2×2 pen
    line = np.zeros((1, 5, 5, 1), dtype=np.uint8)
    line[0, :, 2, 0] = 16  # an upright stroke in the middle column
    np.testing.assert_array_equal(slant(line, 17, shear=0.0), line)
    leaning = slant(line, 17, shear=1.0)[0, :, :, 0]
    assert [int(np.argmax(row)) for row in leaning] == [4, 3, 2, 1, 0]  # the top moved right, the bottom left
    digits = np.random.default_rng(0).integers(0, 17, (4, 8, 8, 1), dtype=np.uint8)
    for style in STYLES.values():
        out = style(digits, 17)
        assert out.shape == digits.shape and out.dtype == np.uint8 and out.max() <= 16


def test_a_rare_style_is_drawn_on_a_share_of_every_class_and_flagged():
    whole = DatasetVersion(prepare(DataConfig(source="digits")).path)
    styled = DatasetVersion(prepare(DataConfig(source="digits", style="thick", style_share=0.04)).path)
    assert styled.content_hash != whole.content_hash and whole.rare("train") is None
    for split, share in (("train", 0.04), ("val", 0.5), ("test", 0.5)):
        rare, labels = styled.rare(split), styled.labels(split)
        assert rare.dtype == bool and (labels == whole.labels(split)).all()
        for c in range(10):  # the same share of each class, rounded
            assert rare[labels == c].sum() == round(share * (labels == c).sum())
        changed = (np.array(styled.images(split)) != np.array(whole.images(split))).any(axis=(1, 2, 3))
        assert (changed <= rare).all() and changed[rare].mean() > 0.95  # exactly the flagged images are restyled
    assert styled.manifest["rare"]["train"] == styled.rare("train").sum()


def test_a_rare_combination_flags_one_class_in_the_style():
    cfg = DataConfig(source="digits", style="slant", style_share=0.5, style_class=7, style_class_share=0.15)
    version = DatasetVersion(prepare(cfg).path)
    rare, labels = version.rare("train"), version.labels("train")
    assert (labels[rare] == 7).all() and rare.sum() == round(0.15 * (labels == 7).sum())
    assert 0.01 <= rare.mean() <= 0.05
    thin = DatasetVersion(prepare(DataConfig(source="digits", rare_class=3, rare_keep=0.1)).path)
    np.testing.assert_array_equal(thin.rare("test"), thin.labels("test") == 3)  # a rare class is flagged too,
    assert not list(thin.path.glob("*_rare.npy"))  # from its labels: its content (and hash) are as before
    assert thin.manifest["rare"]["train"] == thin.rare("train").sum() == 13


def test_bad_rarity_settings_are_refused_and_leave_nothing(genlib_home):
    with pytest.raises(ValueError, match="style='thick' is not allowed; expected no style together with rare_class=3"):
        DataConfig(source="digits", rare_class=3, style="thick")
    with pytest.raises(ValueError, match="style_class=7 is not allowed; expected a style to combine with"):
        DataConfig(source="digits", style_class=7)
    with pytest.raises(ValueError, match="style='bold' is not allowed; expected one of \\[None, 'thick', 'slant'\\]"):
        DataConfig(source="digits", style="bold")
    with pytest.raises(ValueError, match=r"style_eval_share=1.0 is not allowed; expected a number in \(0, 1\)"):
        DataConfig(source="digits", style="thick", style_eval_share=1.0)
    with pytest.raises(ValueError, match="data.style_class=12 has no training images"):
        prepare(DataConfig(source="digits", style="thick", style_class=12))
    with pytest.raises(ValueError, match="leaves no rare training image"):
        prepare(DataConfig(source="digits", style="thick", style_share=0.0))
    datasets = genlib_home / "datasets"
    assert not datasets.exists() or not any(datasets.iterdir())  # no version, whole or half-written


def test_digits_upsample_to_an_image_size_keeping_labels_and_levels():
    small = DatasetVersion(prepare(DataConfig(source="digits")).path)
    big = DatasetVersion(prepare(DataConfig(source="digits", image_size=32)).path)
    assert big.shape == (1, 32, 32) and big.levels == 17 and big.content_hash != small.content_hash
    x8, x32 = np.array(small.images("train")), np.array(big.images("train"))
    assert (big.labels("train") == small.labels("train")).all() and x32.max() <= 16
    # Each 4×4 block averages back to about its source pixel (bilinear blurs a little across blocks):
    # the same digits, four times larger.
    blocks = x32[..., 0].reshape(len(x32), 8, 4, 8, 4).astype(float).mean(axis=(2, 4))
    assert np.corrcoef(blocks.ravel(), x8[..., 0].ravel().astype(float))[0, 1] > 0.95
    fine = DatasetVersion(prepare(DataConfig(source="digits", image_size=16, levels=256)).path)
    assert fine.levels == 256 and np.array(fine.images("test")).max() == 255

"""Samples of any generator read for an audit (genlib/data/samples.py): what fits, and clear errors."""

import numpy as np
import pytest
from PIL import Image

from genlib.data.samples import read_samples

SHAPE, LEVELS = (1, 8, 8), 17


def _pngs(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


def test_a_folder_of_pngs_is_read_sorted_and_quantised_when_asked(tmp_path):
    rng = np.random.default_rng(0)
    levels = rng.integers(0, LEVELS, size=(5, 8, 8)).astype(np.uint8)
    folder = _pngs(tmp_path / "pngs", np.rint(levels * 255.0 / 16).astype(np.uint8))  # 0..255, as files
    with pytest.raises(ValueError, match=r"hold values up to \d+; the dataset has 17 levels \(0..16\): pass --quantise"):
        read_samples(folder, SHAPE, LEVELS)
    images, done = read_samples(folder, SHAPE, LEVELS, quantise=True)
    assert images.shape == (5, 1, 8, 8) and np.array_equal(images[:, 0], levels)
    assert done == {"audit.quantise": "round(v·16/255): 256 → 17 levels"}


def test_samples_of_another_size_need_resize_and_mixed_sizes_name_the_file(tmp_path):
    folder = _pngs(tmp_path / "big", np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(ValueError, match=r"are 16×16; the dataset's images are 8×8: pass --resize"):
        read_samples(folder, SHAPE, LEVELS)
    images, done = read_samples(folder, SHAPE, LEVELS, resize=True)
    assert images.shape == (3, 1, 8, 8) and done["audit.resize"].startswith("bicubic to 8×8")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folder / "zz-odd.png")
    with pytest.raises(ValueError, match=r"zz-odd.png: 10×10 differs from .*000.png \(16×16\)"):
        read_samples(folder, SHAPE, LEVELS)


def test_unreadable_empty_and_missing_samples_are_refused_by_name(tmp_path):
    folder = _pngs(tmp_path / "broken", np.zeros((2, 8, 8), np.uint8))
    (folder / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"bad.png: unreadable image"):
        read_samples(folder, SHAPE, LEVELS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no PNG or JPEG files found"):
        read_samples(tmp_path / "empty", SHAPE, LEVELS)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        read_samples(tmp_path / "nowhere", SHAPE, LEVELS)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="expected a folder of PNG/JPEG files or an .npz file"):
        read_samples(tmp_path / "x.txt", SHAPE, LEVELS)


def test_npz_in_every_layout_genlib_sample_writes_and_bad_arrays(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, LEVELS, size=(4, 1, 8, 8)).astype(np.uint8)
    for name, array in [("nchw", images), ("nhwc", images.transpose(0, 2, 3, 1)), ("nhw", images[:, 0])]:
        np.savez(tmp_path / f"{name}.npz", images=array, levels=LEVELS)  # `genlib sample -o x.npz` stores NCHW
        found, done = read_samples(tmp_path / f"{name}.npz", SHAPE, LEVELS)
        assert np.array_equal(found, images) and done == {}, name
    np.savez(tmp_path / "rgb.npz", images=rng.integers(0, 17, size=(2, 3, 8, 8)))
    with pytest.raises(ValueError, match="have 3 channel"):
        read_samples(tmp_path / "rgb.npz", SHAPE, LEVELS)
    np.savez(tmp_path / "floats.npz", images=rng.random((2, 8, 8)))
    with pytest.raises(ValueError, match="non-integer"):
        read_samples(tmp_path / "floats.npz", SHAPE, LEVELS)
    np.savez(tmp_path / "two.npz", a=images, b=images)
    with pytest.raises(ValueError, match=r"no 'images' or 'samples' array"):
        read_samples(tmp_path / "two.npz", SHAPE, LEVELS)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable .npz"):
        read_samples(tmp_path / "junk.npz", SHAPE, LEVELS)

import numpy as np
import pytest
from PIL import Image

from genlib.config import DataConfig
from genlib.data import sources
from genlib.data.download import fetch
from genlib.data.sources import load_source, read_idx
from tests.unit.formats import md5, write_cifar_tarball, write_idx, write_mnist_folder


def test_digits_is_real_sklearn_data():
    data = load_source(DataConfig(source="digits"))
    assert data.images.shape == (1797, 8, 8, 1) and data.images.dtype == np.uint8
    assert data.levels == 17 and data.images.max() == 16
    assert sorted(np.unique(data.labels)) == list(range(10))


def test_unknown_source_lists_known():
    with pytest.raises(ValueError, match=r"unknown dataset source 'imagenet'; known: \[.*'digits'"):
        load_source(DataConfig(source="imagenet"))


# --------------------------------------------------------------------------- IDX / MNIST


def test_mnist_reads_idx_files_with_checksums(tmp_path, monkeypatch):
    files = write_mnist_folder(tmp_path / "mnist", n_train=30, n_test=10)
    monkeypatch.setattr(sources, "_MNIST_MD5", tuple(md5(f) for f in files))
    data = load_source(DataConfig(source="mnist", path=str(tmp_path / "mnist")))
    assert data.images.shape == (40, 28, 28, 1) and data.levels == 256
    assert data.test_mask.sum() == 10 and not data.test_mask[:30].any()
    assert np.array_equal(data.labels[:30], np.arange(30) % 10)


def test_mnist_wrong_checksum_is_rejected(tmp_path):
    write_mnist_folder(tmp_path / "mnist")  # not the published files
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: md5 checksum is .*expected f68b3c2d"):
        load_source(DataConfig(source="mnist", path=str(tmp_path / "mnist")))


def test_mnist_offline_says_where_to_put_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"could not download .*train-images-idx3-ubyte.gz.*Put the file at "):
        load_source(DataConfig(source="mnist", path=str(tmp_path / "empty")))


def test_idx_header_disagreeing_with_data(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros((5, 4, 4)), shape=(6, 4, 4))
    with pytest.raises(ValueError, match=r"x.gz: IDX header says shape \(6, 4, 4\) \(96 bytes\) but the file holds 80"):
        read_idx(path)


def test_idx_truncated_gzip(tmp_path):
    good = write_idx(tmp_path / "good.gz", np.zeros((50, 28, 28)))
    bad = tmp_path / "bad.gz"
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ValueError, match="bad.gz: not a readable gzip file"):
        read_idx(bad)


def test_idx_bad_magic(tmp_path):
    import gzip

    path = tmp_path / "junk.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ValueError, match="bad magic number"):
        read_idx(path)


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar_tarball(tmp_path, monkeypatch):
    archive = write_cifar_tarball(tmp_path / "cifar-10-python.tar.gz", per_batch=4)
    monkeypatch.setattr(sources, "_CIFAR_MD5", md5(archive))
    data = load_source(DataConfig(source="cifar10", path=str(tmp_path)))
    assert data.images.shape == (24, 32, 32, 3) and data.test_mask.sum() == 4


def test_cifar_truncated_archive(tmp_path, monkeypatch):
    archive = write_cifar_tarball(tmp_path / "cifar-10-python.tar.gz", per_batch=50)
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) // 2])
    monkeypatch.setattr(sources, "_CIFAR_MD5", md5(archive))
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz: truncated or corrupt tar.gz archive"):
        load_source(DataConfig(source="cifar10", path=str(tmp_path)))


# --------------------------------------------------------------------------- image folder


def _png(path, size=(8, 8), mode="L", value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_folder_class_subfolders_become_labels(tmp_path):
    for i in range(3):
        _png(tmp_path / "cats" / f"{i}.png", value=10 * i)
        _png(tmp_path / "dogs" / f"{i}.jpg", value=200)
    data = load_source(DataConfig(source="folder", path=str(tmp_path)))
    assert data.images.shape == (6, 8, 8, 1)
    assert list(data.labels) == [0, 0, 0, 1, 1, 1] and data.class_names == ("cats", "dogs")


def test_folder_mixed_sizes_need_resize(tmp_path):
    _png(tmp_path / "a.png", (8, 8))
    _png(tmp_path / "b.png", (10, 12), mode="RGB")
    with pytest.raises(ValueError, match=r"b.png: size \(10, 12\) differs .* set data.image_size"):
        load_source(DataConfig(source="folder", path=str(tmp_path)))
    data = load_source(DataConfig(source="folder", path=str(tmp_path), image_size=16))
    assert data.images.shape == (2, 16, 16, 3)  # one RGB image makes the set RGB


def test_folder_unreadable_and_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no PNG or JPEG images found"):
        load_source(DataConfig(source="folder", path=str(tmp_path / "empty")))
    _png(tmp_path / "imgs" / "ok.png")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="broken.png: unreadable image"):
        load_source(DataConfig(source="folder", path=str(tmp_path / "imgs")))


def test_folder_missing_path(tmp_path):
    with pytest.raises(ValueError, match="set data.path"):
        load_source(DataConfig(source="folder"))
    with pytest.raises(ValueError, match="does not exist"):
        load_source(DataConfig(source="folder", path=str(tmp_path / "nope")))


# --------------------------------------------------------------------------- npz


def test_npz_arrays(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.arange(4 * 5 * 5).reshape(4, 5, 5) % 4, labels=np.array([0, 1, 0, 1]))
    data = load_source(DataConfig(source="npz", path=str(path), levels=4))
    assert data.images.shape == (4, 5, 5, 1) and data.levels == 4 and list(data.labels) == [0, 1, 0, 1]


@pytest.mark.parametrize("images, message", [
    (np.full((3, 4, 4), np.nan), "NaN or infinite"),
    (np.full((3, 4, 4), 300), r"values span \[300, 300\], outside \[0, 255\]"),
    (np.full((3, 4, 4), -1), "outside"),
    (np.full((3, 4, 4), 0.5), "non-integer values"),
    (np.zeros((3, 4)), "must be \\(N, H, W\\)"),
])
def test_npz_bad_arrays(tmp_path, images, message):
    path = tmp_path / "bad.npz"
    np.savez(path, images=images)
    with pytest.raises(ValueError, match=message):
        load_source(DataConfig(source="npz", path=str(path)))


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="x.npz: not a readable .npz file"):
        load_source(DataConfig(source="npz", path=str(path)))


# --------------------------------------------------------------------------- downloads


def test_fetch_downloads_verifies_and_caches(tmp_path, monkeypatch):
    monkeypatch.delenv("GENLIB_OFFLINE")
    src = tmp_path / "remote.bin"
    src.write_bytes(b"x" * 1000)
    dest = tmp_path / "cache" / "remote.bin"
    assert fetch(src.as_uri(), f"md5:{md5(src)}", dest) == dest
    assert dest.read_bytes() == src.read_bytes()
    src.unlink()  # a second fetch is served from the cache
    assert fetch(src.as_uri(), f"md5:{md5(dest)}", dest) == dest


def test_fetch_bad_checksum_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("GENLIB_OFFLINE")
    src = tmp_path / "remote.bin"
    src.write_bytes(b"payload")
    dest = tmp_path / "cache" / "remote.bin"
    with pytest.raises(ValueError, match="sha256 checksum is .* expected 00"):
        fetch(src.as_uri(), "sha256:" + "0" * 64, dest)
    assert list((tmp_path / "cache").iterdir()) == []


def test_fetch_unreachable_host_explains(tmp_path, monkeypatch):
    monkeypatch.delenv("GENLIB_OFFLINE")
    dest = tmp_path / "file.gz"
    with pytest.raises(FileNotFoundError, match=r"could not download http://127.0.0.1:9/file.gz .*Put the file at"):
        fetch("http://127.0.0.1:9/file.gz", "md5:" + "0" * 32, dest)
    assert not dest.exists()

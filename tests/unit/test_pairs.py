"""Two-domain dataset versions: paired and unpaired sources, their layout, and the bad input they refuse."""

import numpy as np
import pytest
from PIL import Image

from genlib import paths
from genlib.config import DataConfig
from genlib.data import prepare as prepare_module
from genlib.data.dataset import DatasetVersion
from genlib.data.pairs import bold, outline
from genlib.data.prepare import prepare, verify_version
from genlib.models.base import Batch


def _nothing_written() -> bool:
    root = paths.datasets_dir()
    return not root.exists() or list(root.iterdir()) == []


def test_a_paired_version_keeps_pairs_together_in_every_split():
    prepared = prepare(DataConfig(source="digits-edges", image_size=16))
    version = DatasetVersion(prepared.path)
    assert version.kind == "paired" and version.shape == (1, 16, 16) and version.source_spec == ((1, 16, 16), 17)
    a, b = version.domain("a"), version.domain("b")
    assert a.manifest["splits"] == b.manifest["splits"] == version.manifest["splits"]
    assert sum(a.manifest["splits"].values()) == 1797
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a.images(split), outline(np.array(b.images(split)), 17))  # aligned pairs
        np.testing.assert_array_equal(a.labels(split), b.labels(split))
    np.testing.assert_array_equal(version.truth("a2b"), b.images("test"))
    verify_version(prepared.path)
    assert prepare(DataConfig(source="digits-edges", image_size=16)).cache_hit


def test_an_unpaired_version_draws_its_domains_from_disjoint_images_and_keeps_the_truth_aside():
    version = DatasetVersion(prepare(DataConfig(source="digits-bold", image_size=16)).path)
    a, b = version.domain("a"), version.domain("b")
    assert version.kind == "unpaired"
    assert sum(a.manifest["splits"].values()) + sum(b.manifest["splits"].values()) == 1797
    plain_a = np.concatenate([np.array(a.images(s)) for s in ("train", "val", "test")]).reshape(-1, 256)
    plain_b = np.array(version.truth("b2a")).reshape(-1, 256)  # B's test images before they were made bold
    np.testing.assert_array_equal(bold(plain_b.reshape(-1, 16, 16, 1), 17), b.images("test"))
    np.testing.assert_array_equal(version.truth("a2b"), bold(np.array(a.images("test")), 17))
    assert not {row.tobytes() for row in plain_a} & {row.tobytes() for row in plain_b}  # nothing is paired
    assert not (version.path / "a" / "truth_a2b_test.npy").exists()  # the truth is not part of a domain


def test_verify_version_covers_the_kept_aside_truth(tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prepare(DataConfig(source="digits-bold", image_size=16)).path, copy)
    verify_version(copy)
    truth = copy / "truth_a2b_test.npy"
    truth.chmod(0o644)
    values = np.load(truth)
    values[0, 0, 0, 0] = 16 - values[0, 0, 0, 0]
    np.save(truth, values)
    with pytest.raises(ValueError, match="content hash is .*, manifest says"):
        verify_version(copy)


def test_a_two_domain_dataset_is_refused_by_the_audit_before_a_run_opens(tmp_path):
    from genlib.presets import load_config
    from genlib.stages.audit import audit

    version = prepare(DataConfig(source="digits-edges", image_size=16)).path
    with pytest.raises(ValueError, match=r"holds paired data \(two domains\): audit against one of them, --dataset"):
        audit(load_config("digits-quick"), tmp_path / "samples.npz", version)
    assert not (paths.home() / "mlflow.db").exists()


def test_a_two_domain_dataset_yields_both_images_and_refuses_one_domain_reads():
    version = DatasetVersion(prepare(DataConfig(source="digits-bold", image_size=16)).path)
    train = version.dataset("train")
    sizes = [version.domain(d).manifest["splits"]["train"] for d in "ab"]
    assert len(train) == max(sizes)
    batch = Batch.from_loader(next(iter(__import__("torch").utils.data.DataLoader(train, batch_size=4))))
    assert batch.x.shape == batch.source.shape == (4, 1, 16, 16) and batch.labels is not None
    np.testing.assert_array_equal(batch.source[0, 0].numpy(), version.domain("a").images("train")[0, :, :, 0])
    with pytest.raises(ValueError, match="holds unpaired data: its images are in its domains"):
        version.images("train")
    with pytest.raises(ValueError, match="unknown domain 'c'"):
        version.domain("c")


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def test_a_paired_folder_matches_files_by_name(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(12):
        _png(tmp_path / "A" / f"{i:02d}.png", rng.integers(0, 256, (8, 8)))
        _png(tmp_path / "B" / f"{i:02d}.png", np.full((8, 8), i))
    version = DatasetVersion(prepare(DataConfig(source="paired-folder", path=str(tmp_path), val_fraction=0.25,
                                                test_fraction=0.25)).path)
    a, b = version.domain("a"), version.domain("b")
    for split in ("train", "val", "test"):  # B's value names the file; A's image is the one of that name
        for image_a, image_b in zip(a.images(split), b.images(split)):
            i = int(image_b[0, 0, 0])
            np.testing.assert_array_equal(image_a[..., 0], np.asarray(Image.open(tmp_path / "A" / f"{i:02d}.png")))


def test_side_by_side_pairs_are_split_in_halves(tmp_path):
    for i in range(10):
        _png(tmp_path / f"{i}.png", np.concatenate([np.full((6, 6), i), np.full((6, 6), 100 + i)], axis=1))
    version = DatasetVersion(prepare(DataConfig(source="paired-folder", path=str(tmp_path), val_fraction=0.2,
                                                test_fraction=0.2)).path)
    a, b = (np.array(version.domain(d).images("train")) for d in "ab")
    assert a.shape[1:] == (6, 6, 1) and (b == a + 100).all()


@pytest.mark.parametrize("layout, message", [
    ("unmatched", r"1 unmatched file names: .*A/07\.png has no partner"),
    ("empty", r"B: no PNG or JPEG images \(domain is empty\)"),
    ("mixed", r"size \(9, 9\) differs from .*; set data.image_size"),
    ("one-folder", "found A/ but not B/"),
    ("odd-width", "a side-by-side pair is two images of one width"),
])
def test_bad_paired_folders_name_the_file_and_write_nothing(tmp_path, layout, message):
    if layout == "odd-width":
        _png(tmp_path / "x.png", np.zeros((4, 9)))
    else:
        for i in range(8):
            _png(tmp_path / "A" / f"{i:02d}.png", np.zeros((9, 9) if layout == "mixed" and i == 5 else (8, 8)))
            if layout not in ("empty", "one-folder") and not (layout == "unmatched" and i == 7):
                _png(tmp_path / "B" / f"{i:02d}.png", np.zeros((8, 8)))
        if layout == "empty":
            (tmp_path / "B").mkdir()
    with pytest.raises(ValueError, match=message):
        prepare(DataConfig(source="paired-folder", path=str(tmp_path)))
    assert _nothing_written()


def test_an_unpaired_folder_takes_domains_of_any_size(tmp_path):
    for i in range(10):
        _png(tmp_path / "A" / f"{i}.png", np.zeros((8, 8)))
    for i in range(25):
        _png(tmp_path / "B" / f"sub/{i}.png", np.full((8, 8), 200))
    version = DatasetVersion(prepare(DataConfig(source="unpaired-folder", path=str(tmp_path))).path)
    assert sum(version.domain("a").manifest["splits"].values()) == 10
    assert sum(version.domain("b").manifest["splits"].values()) == 25
    with pytest.raises(ValueError, match="an unpaired set needs the folders A/ and B/"):
        prepare(DataConfig(source="unpaired-folder", path=str(tmp_path / "A")))


def test_npz_pairs_and_their_bad_input(tmp_path):
    rng = np.random.default_rng(0)
    good = tmp_path / "pairs.npz"
    np.savez(good, a=rng.integers(0, 4, (20, 4, 4)), b=rng.integers(0, 4, (20, 4, 4)), labels=np.arange(20) % 2)
    version = DatasetVersion(prepare(DataConfig(source="paired-npz", path=str(good), levels=4)).path)
    assert version.kind == "paired" and version.num_classes == 2
    np.savez(tmp_path / "uneven.npz", a=np.zeros((20, 4, 4)), b=np.zeros((15, 4, 4)))
    with pytest.raises(ValueError, match="needs as many 'a' as 'b' images, got 20 and 15"):
        prepare(DataConfig(source="paired-npz", path=str(tmp_path / "uneven.npz")))
    assert DatasetVersion(prepare(DataConfig(source="unpaired-npz", path=str(tmp_path / "uneven.npz"))).path).kind \
        == "unpaired"
    np.savez(tmp_path / "one.npz", a=np.zeros((20, 4, 4)))
    with pytest.raises(ValueError, match=r"needs arrays 'a' and 'b'; missing \['b'\]"):
        prepare(DataConfig(source="unpaired-npz", path=str(tmp_path / "one.npz")))
    np.savez(tmp_path / "sizes.npz", a=np.zeros((20, 4, 4)), b=np.zeros((20, 6, 6)))
    with pytest.raises(ValueError, match=r"domain A's images are \(4, 4\), domain B's \(6, 6\)"):
        prepare(DataConfig(source="unpaired-npz", path=str(tmp_path / "sizes.npz")))


def test_a_failed_two_domain_write_leaves_nothing(monkeypatch):
    calls = {"n": 0}
    real_save = np.save

    def flaky_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # in domain B (its train labels), after domain A's six arrays and manifest were written
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(prepare_module.np, "save", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        prepare(DataConfig(source="digits-edges", image_size=16))
    assert _nothing_written()


def test_a_rarity_is_refused_for_two_domains():
    with pytest.raises(ValueError, match="source 'digits-edges' is paired \\(two domains\\): leave them unset"):
        prepare(DataConfig(source="digits-edges", style="thick"))
    assert _nothing_written()


def test_swap_domains_exchanges_a_and_b_and_their_truth():
    plain = DatasetVersion(prepare(DataConfig(source="digits-bold", image_size=16)).path)
    swapped = DatasetVersion(prepare(DataConfig(source="digits-bold", image_size=16, swap_domains=True)).path)
    np.testing.assert_array_equal(swapped.domain("a").images("train"), plain.domain("b").images("train"))
    np.testing.assert_array_equal(swapped.truth("b2a"), plain.truth("a2b"))
    with pytest.raises(ValueError, match="source 'digits' has one image set"):
        prepare(DataConfig(source="digits", swap_domains=True))

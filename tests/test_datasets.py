"""IDX parsing, checks, lookup order and the shipped sample of ferrograd.datasets."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from ferrograd import datasets
from ferrograd.datasets import (
    MNIST,
    DatasetError,
    IdxFile,
    find_data_dir,
    load_fashion_mnist,
    load_mnist,
    load_mnist_sample,
    parse_idx,
    read_idx,
    sample_dir,
)

FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
# Class counts of the first 5,000 training / 1,000 test labels (the shipped sample).
SAMPLE_TRAIN_COUNTS = [479, 563, 488, 493, 535, 434, 501, 550, 462, 495]
SAMPLE_TEST_COUNTS = [85, 126, 116, 107, 110, 87, 87, 99, 89, 94]


def idx(arr: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else (0x803 if arr.ndim == 3 else 0x801)
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


@pytest.fixture
def labels3() -> tuple[bytes, IdxFile]:
    data = idx(np.array([3, 1, 4], dtype=np.uint8))
    spec = IdxFile("lab", "labels", 3, frozenset([hashlib.sha256(data).hexdigest()]))
    return data, spec


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No FERROGRAD_DATA and an empty user cache, so lookups see only what a test sets."""
    monkeypatch.delenv("FERROGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


# --------------------------------------------------------------------- parsing and checks


def test_parse_images_and_labels_exact_values():
    imgs = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    out = parse_idx(idx(imgs))
    assert out.shape == (2, 28, 28) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, imgs)
    np.testing.assert_array_equal(parse_idx(idx(np.array([9, 0, 7]))), [9, 0, 7])


def test_gzip_and_raw_files_read_the_same(tmp_path, labels3):
    data, spec = labels3
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "a.gz").write_bytes(gzip.compress(data))
    np.testing.assert_array_equal(read_idx(tmp_path / "a", spec), [3, 1, 4])
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz", spec), [3, 1, 4])


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: b"", "empty"),
        (lambda d: d[:5], "too short"),
        (lambda d: d[:9], "truncated"),
        (lambda d: d + b"\x00", "too long"),
        (lambda d: (0x0802).to_bytes(4, "big") + d[4:], "wrong magic number 0x00000802"),
    ],
)
def test_malformed_idx_names_file_and_expectation(tmp_path, labels3, mutate, match):
    data, spec = labels3
    path = tmp_path / "lab"
    path.write_bytes(mutate(data))
    with pytest.raises(DatasetError, match=match) as info:
        read_idx(path, spec)
    assert str(path) in str(info.value)


def test_truncated_header():
    with pytest.raises(DatasetError, match=r"<bytes>: truncated header \(12 of 16 bytes\)"):
        parse_idx((0x0803).to_bytes(4, "big") + bytes(8))


def test_image_magic_where_labels_expected(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(idx(np.zeros((1, 28, 28), dtype=np.uint8)))
    with pytest.raises(DatasetError, match=r"expected 0x00000801 \(labels\)"):
        read_idx(path, MNIST.files[3])


def test_wrong_count(tmp_path):
    data = idx(np.array([1, 2], dtype=np.uint8))
    path = tmp_path / "lab"
    path.write_bytes(data)
    spec = IdxFile("lab", "labels", 3, frozenset([hashlib.sha256(data).hexdigest()]))
    with pytest.raises(DatasetError, match="declares 2 labels; expected 3"):
        read_idx(path, spec)


def test_checksum_mismatch_says_which(tmp_path, labels3):
    data, spec = labels3
    bad = data[:-1] + b"\x05"  # same shape, one label changed
    path = tmp_path / "lab.gz"
    path.write_bytes(gzip.compress(bad))
    with pytest.raises(DatasetError, match="checksum mismatch") as info:
        read_idx(path, spec)
    msg = str(info.value)
    assert hashlib.sha256(bad).hexdigest() in msg and next(iter(spec.sha256)) in msg
    assert str(path) in msg
    np.testing.assert_array_equal(read_idx(path, spec, checksums=False), [3, 1, 5])


def test_published_gz_checksum_is_accepted(tmp_path, labels3):
    data, _ = labels3
    gz = gzip.compress(data)
    spec = IdxFile(
        "lab", "labels", 3, frozenset(["0" * 64]), frozenset([hashlib.sha256(gz).hexdigest()])
    )
    (tmp_path / "lab.gz").write_bytes(gz)
    np.testing.assert_array_equal(read_idx(tmp_path / "lab.gz", spec), [3, 1, 4])


@pytest.mark.parametrize("cut", [10, 400])
def test_corrupt_or_truncated_gzip(tmp_path, labels3, cut):
    data, spec = labels3
    noise = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    gz = bytearray(gzip.compress(data + noise))
    path = tmp_path / "lab.gz"
    if cut == 10:
        gz[12:20] = b"\xff" * 8  # garbage in the deflate stream
        path.write_bytes(bytes(gz))
    else:
        path.write_bytes(bytes(gz[:cut]))  # stream ends early
    with pytest.raises(DatasetError, match="corrupt or truncated gzip") as info:
        read_idx(path, spec)
    assert str(path) in str(info.value)


def test_directory_in_place_of_file(tmp_path, labels3):
    (tmp_path / "lab.gz").mkdir()
    with pytest.raises(DatasetError, match="is a directory"):
        read_idx(tmp_path / "lab.gz", labels3[1])


def test_permission_denied_is_oserror_with_path(tmp_path, labels3, monkeypatch):
    path = tmp_path / "lab"
    path.write_bytes(labels3[0])

    def denied(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(datasets, "open", denied, raising=False)
    with pytest.raises(PermissionError, match="Permission denied") as info:
        read_idx(path, labels3[1])
    assert info.value.filename == str(path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads mode-000 files")
def test_permission_denied_real_file(tmp_path, labels3):
    path = tmp_path / "lab"
    path.write_bytes(labels3[0])
    path.chmod(0)
    with pytest.raises(PermissionError) as info:
        read_idx(path, labels3[1])
    assert info.value.filename == str(path)


# --------------------------------------------------------------------- lookup order


def _fake_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for spec in MNIST.files:
        (folder / f"{spec.name}.gz").write_bytes(b"")
    return folder


def test_lookup_order(clean_env, monkeypatch):
    tmp = clean_env
    explicit, env, cache = tmp / "explicit", tmp / "env", tmp / "cache" / "ferrograd" / "mnist"
    for d in (explicit, env, cache):
        _fake_dataset(d)
    monkeypatch.setenv("FERROGRAD_DATA", str(env))
    assert find_data_dir(MNIST, explicit) == explicit
    assert find_data_dir(MNIST) == env
    monkeypatch.delenv("FERROGRAD_DATA")
    assert find_data_dir(MNIST) == cache
    # an incomplete folder is skipped
    (explicit / "t10k-labels-idx1-ubyte.gz").unlink()
    assert find_data_dir(MNIST, explicit) == cache
    # FERROGRAD_DATA may hold one folder per dataset
    _fake_dataset(tmp / "root" / "mnist")
    monkeypatch.setenv("FERROGRAD_DATA", str(tmp / "root"))
    assert find_data_dir(MNIST) == tmp / "root" / "mnist"


def test_missing_data_dir_is_an_error(clean_env):
    with pytest.raises(DatasetError, match="no such directory"):
        find_data_dir(MNIST, clean_env / "nope")
    (clean_env / "file").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"data_dir=.*file: is not a directory"):
        find_data_dir("mnist", clean_env / "file")


def test_not_found_without_download(clean_env):
    with pytest.raises(DatasetError, match=r"FERROGRAD_DATA.*dataset='sample'"):
        load_mnist(download_ok=False)


def test_bad_arguments():
    with pytest.raises(TypeError, match="float32 or float64"):
        load_mnist_sample(dtype=np.int32)
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_mnist(dataset="cifar")


# --------------------------------------------------------------------- the shipped sample


def test_sample_shapes_labels_and_license():
    (x, t), (xt, tt) = load_mnist_sample()
    assert x.shape == (5000, 784) and xt.shape == (1000, 784)
    assert x.dtype == np.float32 and t.dtype == np.uint8
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert t[:10].tolist() == FIRST_TRAIN_LABELS and tt[:10].tolist() == FIRST_TEST_LABELS
    assert np.bincount(t, minlength=10).tolist() == SAMPLE_TRAIN_COUNTS
    assert np.bincount(tt, minlength=10).tolist() == SAMPLE_TEST_COUNTS
    text = (sample_dir().parent / "README-MNIST.txt").read_text()
    assert "CC BY-SA 3.0" in text and "LeCun" in text and "Cortes" in text and "Burges" in text
    size = sum(p.stat().st_size for p in sample_dir().iterdir())
    assert size < 1_500_000


def test_sample_formats():
    (x, t), _ = load_mnist(False, False, True, dataset="sample", dtype=np.float64)
    assert x.shape == (5000, 1, 28, 28) and x.dtype == np.uint8
    assert t.shape == (5000, 10) and t.dtype == np.float64
    np.testing.assert_array_equal(t.argmax(axis=1)[:10], FIRST_TRAIN_LABELS)
    np.testing.assert_array_equal(t.sum(axis=1), 1.0)
    (xn, _), _ = load_mnist(dataset="sample", dtype=np.float64)
    np.testing.assert_array_equal(xn, x.reshape(5000, -1) / 255.0)
    (x32, _), _ = load_mnist(dataset="sample")
    # bit for bit the book's x.astype(np.float32) / 255.0
    np.testing.assert_array_equal(x32, x.reshape(5000, -1).astype(np.float32) / 255.0)


def test_scaled_pixels_are_numpys_division_for_every_byte():
    from ferrograd import _core

    values = np.arange(256, dtype=np.uint8)
    cube = np.stack([values.reshape(16, 16)] * 3)  # (3, 16, 16), shape kept
    for dtype in (np.float32, np.float64):
        got = _core.scaled_pixels(cube, np.dtype(dtype).name)
        assert got.shape == cube.shape and got.dtype == dtype and got.flags.c_contiguous
        want = cube.astype(dtype) / dtype(255)
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
        # a strided view is read in its own order
        strided = cube[:, ::-2, 1::3]
        np.testing.assert_array_equal(
            _core.scaled_pixels(strided, np.dtype(dtype).name), strided.astype(dtype) / 255
        )
    assert _core.scaled_pixels(values, "float32")[[0, 1, 255]].tolist() == [
        0.0,
        float(np.float32(1) / np.float32(255)),
        1.0,
    ]
    with pytest.raises(TypeError, match="dtype must be 'float32' or 'float64', got 'float16'"):
        _core.scaled_pixels(values, "float16")
    with pytest.raises(TypeError):
        _core.scaled_pixels(values.astype(np.int16), "float32")


# --------------------------------------------------------------------- full MNIST


def test_full_mnist(mnist_dir, clean_env):
    (x, t), (xt, tt) = load_mnist(data_dir=mnist_dir, download_ok=False)
    assert x.shape == (60000, 784) and xt.shape == (10000, 784) and x.dtype == np.float32
    assert t.tolist()[:10] == FIRST_TRAIN_LABELS and tt.tolist()[:10] == FIRST_TEST_LABELS
    # The classic normalisation constants of MNIST: mean 0.1307, std 0.3081.
    assert abs(float(x.mean(dtype=np.float64)) - 0.1307) < 5e-5
    assert abs(float(x.std(dtype=np.float64)) - 0.3081) < 5e-5
    assert np.bincount(t, minlength=10).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    # The sample is the head of the full set, pixel for pixel.
    (xs, _), (_, tts) = load_mnist_sample()
    np.testing.assert_array_equal(xs, x[:5000])
    np.testing.assert_array_equal(tts, tt[:1000])


FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not FASHION_SYSTEM_DIR.is_dir(),
    reason="Debian package dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_from_debian_package(clean_env):
    (x, t), (xt, tt) = load_fashion_mnist(download_ok=False)
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    # Fashion-MNIST is exactly balanced: 6,000 / 1,000 per class.
    assert np.bincount(t, minlength=10).tolist() == [6000] * 10
    assert np.bincount(tt, minlength=10).tolist() == [1000] * 10


# --------------------------------------------------------------------- known files, wrong place


def _copy_sample(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for spec in MNIST.files:
        name = f"{spec.name}.gz"
        (folder / name).write_bytes((sample_dir() / name).read_bytes())
    return folder


def test_the_sample_where_the_full_set_is_expected(clean_env, monkeypatch):
    folder = _copy_sample(clean_env / "copy")
    with pytest.raises(
        DatasetError,
        match=r"data_dir=.*copy holds the shipped MNIST sample \(5,000 training and 1,000 test "
        r"images\), not the full MNIST: load it with dataset='sample' \(--dataset sample\)",
    ):
        load_mnist(data_dir=folder)
    # one file of it among full ones: named by what it is, not "corrupt"
    with pytest.raises(
        DatasetError,
        match=r"train-images-idx3-ubyte.gz: is the shipped MNIST sample's train-images-idx3-ubyte "
        r"\(5,000 images\), not the full MNIST file train-images-idx3-ubyte \(60,000 images\)",
    ):
        read_idx(folder / "train-images-idx3-ubyte.gz", MNIST.files[0])
    # as $FERROGRAD_DATA, it is passed over; with nothing else, the same words
    monkeypatch.setenv("FERROGRAD_DATA", str(folder))
    with pytest.raises(DatasetError, match=r"FERROGRAD_DATA=.* holds the shipped MNIST sample.*"
                       r"or unset FERROGRAD_DATA to download MNIST into"):  # fmt: skip
        find_data_dir(MNIST)
    assert all((folder / f"{s.name}.gz").exists() for s in MNIST.files)  # nothing deleted


def test_a_misnamed_file_is_named_by_what_it_is(tmp_path):
    specs = datasets._sample_specs()
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes((sample_dir() / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(
        DatasetError,
        match=r"is the shipped MNIST sample's train-labels-idx1-ubyte \(5,000 labels\), not "
        r"t10k-labels-idx1-ubyte \(1,000 labels\): the file is misnamed",
    ):
        read_idx(path, specs[3])


def test_an_unknown_file_still_says_checksum_mismatch(tmp_path, labels3):
    data, spec = labels3
    path = tmp_path / "lab"
    path.write_bytes(data[:-1] + b"\x09")
    with pytest.raises(
        DatasetError, match=r"checksum mismatch: .* no file of MNIST, Fashion-MNIST"
    ):
        read_idx(path, spec)


@pytest.fixture
def other_dataset(monkeypatch, tmp_path) -> tuple[Path, datasets.DatasetSpec]:
    """A folder of small files registered as Fashion-MNIST's, under MNIST's file names."""
    folder = tmp_path / "fashion"
    folder.mkdir()
    files = []
    for k, spec in enumerate(MNIST.files):
        shape = (3, 28, 28) if spec.kind == "images" else (3,)
        data = idx(np.full(shape, k + 1, dtype=np.uint8))
        (folder / spec.name).write_bytes(data)
        sums = frozenset([hashlib.sha256(data).hexdigest()])
        files.append(IdxFile(spec.name, spec.kind, 3, sums))
    fake = datasets.DatasetSpec("fashion-mnist", "Fashion-MNIST", tuple(files))  # type: ignore[arg-type]
    monkeypatch.setitem(datasets.DATASETS, "fashion-mnist", fake)
    return folder, fake


def test_the_other_dataset_in_an_mnist_folder(clean_env, other_dataset):
    folder, _ = other_dataset
    with pytest.raises(
        DatasetError,
        match=r"data_dir=.*fashion holds the Fashion-MNIST files, not MNIST's \(they are valid: "
        r"keep them\)\. For MNIST, point data_dir \(--data-dir\) to a folder with the MNIST "
        r"files, or to a parent folder with mnist/ and fashion-mnist/ subfolders",
    ):
        load_mnist(data_dir=folder)
    with pytest.raises(
        DatasetError,
        match=r"is Fashion-MNIST's train-images-idx3-ubyte \(3 images\), not MNIST's "
        r"train-images-idx3-ubyte: a valid Fashion-MNIST file, keep it",
    ):
        read_idx(folder / "train-images-idx3-ubyte", MNIST.files[0])
    (x, t), _ = load_mnist(data_dir=folder, dataset="fashion-mnist", normalize=False)
    assert x.shape == (3, 784) and t.tolist() == [2, 2, 2]


def test_ferrograd_data_set_for_one_dataset_is_passed_over_for_the_other(
    clean_env, other_dataset, monkeypatch
):
    folder, _ = other_dataset
    monkeypatch.setenv("FERROGRAD_DATA", str(folder))
    # a parent folder with one folder per dataset is fine, in any order of lookup
    root = clean_env / "root"
    _copy_sample(root / "mnist")
    (root / "fashion-mnist").symlink_to(folder)
    cache = clean_env / "cache" / "ferrograd" / "mnist"
    _fake_dataset(cache)
    assert find_data_dir(MNIST) == cache  # FERROGRAD_DATA holds Fashion-MNIST: looked further
    cache.joinpath("train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=r"FERROGRAD_DATA=.*fashion holds the Fashion-MNIST "
                       r"files.*point FERROGRAD_DATA \(or data_dir, --data-dir\) to a folder"):  # fmt: skip
        load_mnist()
    monkeypatch.setenv("FERROGRAD_DATA", str(root))
    assert find_data_dir(datasets.DATASETS["fashion-mnist"]) == root / "fashion-mnist"


def test_full_mnist_where_fashion_mnist_is_asked_for(mnist_dir, clean_env):
    with pytest.raises(
        DatasetError,
        match=r"holds the MNIST files, not Fashion-MNIST's \(they are valid: keep them\)",
    ):
        load_fashion_mnist(data_dir=mnist_dir)
    with pytest.raises(
        DatasetError,
        match=r"is MNIST's t10k-labels-idx1-ubyte \(10,000 labels\), not Fashion-MNIST's "
        r"t10k-labels-idx1-ubyte: a valid MNIST file, keep it",
    ):
        read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", datasets.FASHION_MNIST.files[3])


def test_files_named_as_kaggle_spells_them(mnist_dir, clean_env):
    """train-images.idx3-ubyte (a dot before idx), as the Kaggle copy names them."""
    folder = clean_env / "kaggle"
    folder.mkdir()
    for spec in MNIST.files:
        dotted = spec.name.replace("-idx", ".idx")
        (folder / f"{dotted}.gz").symlink_to(mnist_dir / f"{spec.name}.gz")
    assert find_data_dir(MNIST, folder) == folder
    (_, t), (_, tt) = load_mnist(data_dir=folder, download_ok=False)
    assert t[:10].tolist() == FIRST_TRAIN_LABELS and tt[:10].tolist() == FIRST_TEST_LABELS

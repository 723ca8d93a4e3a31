"""Data loading: IDX parsing and its errors, file discovery, and the seeded stratified splits."""

import gzip
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from suite import data
from suite.data import DataError, find_idx_files, load_splits, read_idx

TRAIN_PER_CLASS = [20 + 2 * c for c in range(10)]  # unequal, to test proportional stratification
TEST_PER_CLASS = 4


def idx_bytes(array: np.ndarray, dtype_code: int = 0x08) -> bytes:
    """An IDX file holding `array` (as unsigned bytes) under the given dtype code."""
    header = struct.pack(">BBBB", 0, 0, dtype_code, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_file(path: Path, payload: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def labelled_images(per_class: list[int], first_id: int, seed: int) -> tuple[np.ndarray, ...]:
    """Shuffled images whose pixels (0,0),(0,1) encode a unique id and row 1 encodes the label."""
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(10), per_class))
    images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    ids = first_id + np.arange(len(labels))
    images[:, 0, 0], images[:, 0, 1] = ids % 256, ids // 256
    images[:, 1, :] = (labels * 25)[:, None]
    return images, labels.astype(np.uint8)


def write_idx_tree(folder: Path, gz: bool = True) -> dict[str, np.ndarray]:
    """The four IDX files of a small fake data set in `folder`; returns the arrays written."""
    train_x, train_y = labelled_images(TRAIN_PER_CLASS, first_id=0, seed=1)
    test_x, test_y = labelled_images([TEST_PER_CLASS] * 10, first_id=1000, seed=2)
    arrays = {
        "train_images": train_x,
        "train_labels": train_y,
        "test_images": test_x,
        "test_labels": test_y,
    }
    for key, array in arrays.items():
        write_file(folder / data.IDX_NAMES[key], idx_bytes(array), gz)
    return arrays


def ids(split: data.Split) -> np.ndarray:
    pixels = torch.round(split.x[:, 0, 0, :2] * 255).to(torch.int64).numpy()
    return pixels[:, 0] + 256 * pixels[:, 1]


def class_counts(split: data.Split) -> list[int]:
    return torch.bincount(split.y, minlength=10).tolist()


def image_keys(split: data.Split) -> set[bytes]:
    return {row.tobytes() for row in (split.x * 255).round().to(torch.uint8).numpy()}


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips(tmp_path, gz):
    array = np.arange(3 * 5 * 7, dtype=np.uint8).reshape(3, 5, 7)
    path = write_file(tmp_path / "x-idx3-ubyte", idx_bytes(array), gz)
    got = read_idx(path)
    assert got.dtype == np.uint8 and got.shape == (3, 5, 7)
    np.testing.assert_array_equal(got, array)


def corrupt_variants() -> list:
    """(file bytes, file name, expected message) for each way an IDX file can be broken."""
    good = idx_bytes(np.ones((4, 28, 28), dtype=np.uint8))
    flipped = bytearray(gzip.compress(good))
    flipped[len(flipped) // 2] ^= 0xFF
    raw, gz = "train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"
    return [
        pytest.param(b"\x08\x03" + good[2:], raw, "bad magic number 0803", id="bad-magic"),
        pytest.param(b"", raw, "bad magic number none", id="empty"),
        pytest.param(good[:2] + b"\x0d" + good[3:], raw, "dtype code 0x0d", id="float-dtype"),
        pytest.param(good[:-10], raw, "truncated: header shape", id="truncated"),
        pytest.param(good[:9], raw, "truncated inside the IDX header", id="short-header"),
        pytest.param(good + b"\x00", raw, "has trailing bytes", id="trailing"),
        pytest.param(gzip.compress(good)[:-20], gz, "gzip stream is corrupt", id="gz-cut"),
        pytest.param(bytes(flipped), gz, "gzip stream is corrupt", id="gz-flipped"),
        pytest.param(gzip.compress(good[:-10]), gz, "truncated: header", id="gz-truncated-idx"),
        pytest.param(  # 2**64 bytes: the old reader's int64 product wrapped to 0, then reshape crashed
            struct.pack(">BBBB4I", 0, 0, 8, 4, *[65536] * 4), raw, "over the", id="dims-overflow"
        ),
        pytest.param(
            gzip.compress(struct.pack(">BBBB3I", 0, 0, 8, 3, 200_000, 28, 28)),
            gz,
            "declares 156,800,000 data bytes, over the 67,108,864-byte cap",
            id="over-cap",
        ),
    ]


@pytest.mark.parametrize(("payload", "name", "message"), corrupt_variants())
def test_read_idx_rejects_corrupt_files(tmp_path, payload, name, message):
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(DataError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_gzip_bomb_fails_fast_without_inflating(tmp_path):
    """4 digits followed by 32 MB of zeros (32 KB compressed): the reader stops one byte past the
    declared data instead of inflating it all (the old one held the whole stream in memory)."""
    good = idx_bytes(np.ones((4, 28, 28), dtype=np.uint8))
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    zeros = bytes(1 << 20)
    bomb = packer.compress(good) + b"".join(packer.compress(zeros) for _ in range(32))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bomb + packer.flush())
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="has trailing bytes") as err:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20 and "\n" not in str(err.value)


def test_find_idx_files_torchvision_layout_with_mixed_compression(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    for i, name in enumerate(data.IDX_NAMES.values()):
        write_file(raw / name, b"x", gz=i % 2 == 0)
    write_idx_tree(tmp_path)  # a complete flat set too: the torchvision folder wins
    found = find_idx_files("mnist", tmp_path)
    assert set(found) == {"train_images", "train_labels", "test_images", "test_labels"}
    assert found["train_images"] == raw / "train-images-idx3-ubyte.gz"
    assert found["train_labels"] == raw / "train-labels-idx1-ubyte"


def test_find_idx_files_flat_root_and_fashion_folder(tmp_path):
    write_idx_tree(tmp_path / "flat", gz=False)
    assert find_idx_files("mnist", tmp_path / "flat")["test_labels"] == (
        tmp_path / "flat" / "t10k-labels-idx1-ubyte"
    )
    write_idx_tree(tmp_path / "tv" / "FashionMNIST" / "raw")
    assert find_idx_files("fashion-mnist", tmp_path / "tv")["test_images"] == (
        tmp_path / "tv" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    )


def test_fashion_mnist_falls_back_to_the_debian_folder(tmp_path, monkeypatch):
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    write_idx_tree(debian)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    for root in (None, tmp_path / "empty"):
        assert find_idx_files("fashion-mnist", root)["train_labels"].parent == debian
    with pytest.raises(DataError):
        find_idx_files("mnist", tmp_path / "empty")


def test_missing_files_error_names_paths_and_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    partial = tmp_path / "MNIST" / "raw"
    write_file(partial / "train-images-idx3-ubyte", b"x", gz=True)
    with pytest.raises(DataError) as err:
        find_idx_files("mnist", tmp_path)
    message = str(err.value)
    assert "\n" not in message and message.startswith("mnist:")
    assert str(partial) in message and str(tmp_path) in message
    assert "t10k-labels-idx1-ubyte" in message
    assert f"{partial} lacks train-labels-idx1-ubyte, t10k-images" in message
    assert "suite data download mnist --root DIR" in message

    with pytest.raises(DataError, match="data.root is not set"):
        load_splits("mnist", None, None, 10, 0)
    with pytest.raises(DataError) as err:
        find_idx_files("fashion-mnist", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert str(tmp_path / "no-debian") in message
    assert "apt-get install dataset-fashion-mnist or pass data.root" in message


def test_load_splits_on_an_idx_tree(tmp_path):
    arrays = write_idx_tree(tmp_path / "MNIST" / "raw")
    splits = load_splits("mnist", tmp_path, train_samples=None, val_samples=51, split_seed=3)
    assert splits.dataset == "mnist" and splits.source == str(tmp_path / "MNIST" / "raw")
    n_train = sum(TRAIN_PER_CLASS)
    assert (len(splits.train.y), len(splits.val.y), len(splits.test.y)) == (n_train - 51, 51, 40)
    for split in (splits.train, splits.val, splits.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 28, 28)
        assert split.x.min() >= 0 and split.x.max() <= 1
        np.testing.assert_array_equal(split.y.numpy(), split.x[:, 0, 1, 0].mul(255 / 25).round())

    np.testing.assert_array_equal(ids(splits.test), 1000 + np.arange(40))  # official, in order
    torch.testing.assert_close(splits.test.x[:, 0], torch.from_numpy(arrays["test_images"]) / 255)
    train_ids, val_ids = set(ids(splits.train)), set(ids(splits.val))
    assert not train_ids & val_ids and train_ids | val_ids == set(range(n_train))

    shares = 51 * np.array(TRAIN_PER_CLASS) / n_train  # 3.52, 3.87, 4.22, ..., 6.33, 6.68
    assert np.all(np.abs(np.array(class_counts(splits.val)) - shares) < 1)
    # floors sum to 45; the 6 left over go to the largest remainders (classes 7, 4, 1, 9, 6, 3)
    assert class_counts(splits.val) == [3, 4, 4, 5, 5, 5, 6, 6, 6, 7]

    again = load_splits("mnist", tmp_path, train_samples=None, val_samples=51, split_seed=3)
    other = load_splits("mnist", tmp_path, train_samples=None, val_samples=51, split_seed=4)
    torch.testing.assert_close(again.val.x, splits.val.x, rtol=0, atol=0)
    torch.testing.assert_close(again.train.y, splits.train.y, rtol=0, atol=0)
    assert set(ids(other.val)) != val_ids


def test_load_splits_train_subset_is_stratified_and_excludes_val(tmp_path):
    write_idx_tree(tmp_path)
    splits = load_splits("fashion-mnist", tmp_path, train_samples=100, val_samples=30, split_seed=0)
    assert (len(splits.train.y), len(splits.val.y)) == (100, 30)
    assert not set(ids(splits.train)) & set(ids(splits.val))
    n_train = sum(TRAIN_PER_CLASS)
    for split, n in ((splits.train, 100), (splits.val, 30)):
        counts = np.array(class_counts(split))
        assert counts.sum() == n
        assert np.all(np.abs(counts - n * np.array(TRAIN_PER_CLASS) / n_train) < 1)


def test_load_splits_rejects_mismatched_counts_and_oversized_requests(tmp_path):
    arrays = write_idx_tree(tmp_path)
    with pytest.raises(DataError, match=r"val_samples 200 \+ train_samples 200 exceeds the 290"):
        load_splits("mnist", tmp_path, train_samples=200, val_samples=200, split_seed=0)
    with pytest.raises(DataError, match="val_samples 290 \\+ train_samples at least 1"):
        load_splits("mnist", tmp_path, train_samples=None, val_samples=290, split_seed=0)
    with pytest.raises(DataError, match="train_samples ≥ 1"):
        load_splits("mnist", tmp_path, train_samples=0, val_samples=10, split_seed=0)

    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_file(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(arrays["test_labels"][:-1]), gz=True)
    with pytest.raises(DataError) as err:
        load_splits("mnist", tmp_path, train_samples=None, val_samples=10, split_seed=0)
    assert "holds 40 images" in str(err.value) and "holds 39 labels" in str(err.value)
    assert str(labels) in str(err.value)


@pytest.mark.parametrize("part", ["test", "train"])
def test_an_empty_split_in_the_files_is_refused(tmp_path, part):
    write_idx_tree(tmp_path)
    empty = {"images": np.zeros((0, 28, 28), np.uint8), "labels": np.zeros(0, np.uint8)}
    prefix = "t10k" if part == "test" else "train"
    for kind, array in empty.items():
        name = f"{prefix}-{kind}-idx{array.ndim}-ubyte"
        write_file(tmp_path / name, idx_bytes(array), gz=True)
    with pytest.raises(DataError, match=f"holds no {part} digits") as err:
        load_splits("mnist", tmp_path, train_samples=None, val_samples=0, split_seed=0)
    assert str(tmp_path / f"{prefix}-labels-idx1-ubyte.gz") in str(err.value)


def test_unknown_dataset_is_refused():
    with pytest.raises(DataError, match="choose one of mnist-5k, mnist, fashion-mnist"):
        load_splits("cifar10", None, None, 10, 0)


def test_mnist_5k_splits(mnist5k_splits):
    splits = mnist5k_splits
    assert splits.dataset == "mnist-5k" and splits.source.endswith("mnist_5k.csv.gz")
    assert class_counts(splits.test) == [100] * 10
    assert class_counts(splits.val) == [50] * 10
    assert class_counts(splits.train) == [350] * 10
    keys = [image_keys(s) for s in (splits.train, splits.val, splits.test)]
    assert sum(map(len, keys)) == len(set.union(*keys)) == 5000  # disjoint, all 5,000 digits
    for split in (splits.train, splits.val, splits.test):
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (1, 28, 28)
        assert split.x.min() == 0 and split.x.max() == 1

    again = load_splits("mnist-5k", None, None, 500, 0)
    torch.testing.assert_close(again.test.x, splits.test.x, rtol=0, atol=0)
    torch.testing.assert_close(again.val.x, splits.val.x, rtol=0, atol=0)
    other = load_splits("mnist-5k", Path("/ignored"), 1000, 200, 1)
    assert image_keys(other.test) != keys[2]
    assert class_counts(other.train) == [100] * 10 and class_counts(other.val) == [20] * 10
    assert not image_keys(other.train) & image_keys(other.test)


def test_mnist_5k_oversized_request_names_the_numbers():
    with pytest.raises(DataError) as err:
        load_splits("mnist-5k", None, train_samples=3600, val_samples=500, split_seed=0)
    message = str(err.value)
    assert "val_samples 500 + train_samples 3,600 exceeds the 4,000 digits left" in message


@pytest.mark.skipif(
    not data.DEBIAN_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist is not installed"
)
def test_fashion_mnist_from_the_debian_folder():
    splits = load_splits("fashion-mnist", None, train_samples=1000, val_samples=500, split_seed=0)
    assert splits.source == str(data.DEBIAN_FASHION_MNIST)
    assert class_counts(splits.test) == [1000] * 10
    assert class_counts(splits.val) == [50] * 10
    assert class_counts(splits.train) == [100] * 10
    assert not image_keys(splits.train) & image_keys(splits.val)
    assert splits.test.x.min() == 0 and splits.test.x.max() == 1

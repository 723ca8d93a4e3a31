"""Shared fixtures: real mnist-5k digits and a quickly trained tiny model."""

import contextlib
import os
from collections.abc import Iterator

import pytest
import setuptools  # noqa: F401  (before anything loads the stdlib's distutils; see below)
import torch

# torch.compile imports setuptools, whose distutils shim refuses to load once a test has pulled in
# the standard library's distutils; importing setuptools first installs the shim for the session.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
TEST_DEVICE = os.environ.get("SUITE_TEST_DEVICE", "cpu")


def pytest_configure(config):
    config.addinivalue_line("markers", "device: runs on SUITE_TEST_DEVICE (the `device` fixture)")
    if TEST_DEVICE not in ("cpu", "cuda"):
        raise pytest.UsageError(f"SUITE_TEST_DEVICE={TEST_DEVICE!r}: choose cpu or cuda")
    if TEST_DEVICE == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("SUITE_TEST_DEVICE=cuda but no CUDA device is visible")


def pytest_collection_modifyitems(items):
    """Mark every test that takes the `device` fixture, so `-m device` selects the GPU check's set."""
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device of tests that allow one: SUITE_TEST_DEVICE (cpu or cuda), CPU by default, so the
    same tests run on a GPU machine (bench/gpu_check.sh) and never need one here."""
    return torch.device(TEST_DEVICE)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (the attack tests opt in with `pytestmark`). Attack loops run
    many small ops; on a busy 2-core machine two torch threads spin against each other (measured: a
    tiny-net forward+backward 1.5 ms with one thread, up to 145 ms with two)."""
    with torch_threads(1):
        yield


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist5k_splits():
    """mnist-5k split as the suite splits it (train 3,500 / val 500 / test 1,000)."""
    from suite.data import load_splits

    return load_splits("mnist-5k", root=None, train_samples=None, val_samples=500, split_seed=0)


@pytest.fixture(scope="session")
def trained_tiny(mnist5k_splits):
    """The `tiny` net trained 4 epochs with Adam on mnist-5k (≈ 95% test accuracy), in eval mode."""
    from suite.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny", dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = mnist5k_splits.train.x, mnist5k_splits.train.y
    g = torch.Generator().manual_seed(0)
    with torch_threads(1):  # the same weights whichever test asks first (sums split by thread)
        for _ in range(4):
            for idx in torch.randperm(len(x), generator=g).split(64):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    return model.eval()

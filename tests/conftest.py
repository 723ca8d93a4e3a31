"""Shared fixtures: real mnist-5k digits and a quickly trained tiny model."""

import os

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (the attack tests opt in with `pytestmark`). Attack loops run
    many small ops; on a busy 2-core machine two torch threads spin against each other (measured: a
    tiny-net forward+backward 1.5 ms with one thread, up to 145 ms with two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
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
    for _ in range(4):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()

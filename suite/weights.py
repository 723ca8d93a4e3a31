"""A model's weights as the store keeps them: a plain `state_dict` file, written from the CPU and
read back with `weights_only=True` (nothing in a store can run code here) into the registry's
architecture, refused in one line when it is not that architecture's finite weights."""

import pickle
from pathlib import Path

import torch

from suite.errors import StoreError
from suite.models import MODELS, build_model


class NonFiniteModel(StoreError):
    """A stored model whose weights hold NaN or infinity: never reused (the caller retrains)."""


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write `model`'s parameters and buffers, on the CPU, to `path`."""
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)


def load_weights(path: Path, arch: str | None, dropout: str, where: str) -> torch.nn.Module:
    """`arch` (a registry name) built with `dropout` (its logged text) and filled from `path`, in
    eval mode on the CPU; StoreError naming `where` for unknown settings or bytes that are not that
    architecture's weights, NonFiniteModel for weights holding NaN or infinity."""
    if arch not in MODELS or not _is_probability(dropout):
        raise StoreError(f"{where}: unknown model settings {arch!r}, dropout {dropout!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(arch, dropout=float(dropout))
        model.load_state_dict(state)
    except (pickle.UnpicklingError, RuntimeError, ValueError, TypeError, EOFError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise StoreError(
            f"{where}: its model is not plain {arch} weights ({reason}); not loaded, "
            "rerun with --force to retrain"
        ) from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise NonFiniteModel(
            f"{where}: its stored weights are not all finite ({bad[0]}"
            f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); not reused"
        )
    return model.eval()


def _is_probability(text: str) -> bool:
    try:
        return 0.0 <= float(text) < 1.0
    except ValueError:
        return False

"""Resolve a manifest's device setting to a torch device."""

import torch

from suite.errors import ManifestError


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when present, else CPU; `cuda` without a GPU is a user error, not a crash."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ManifestError(
            "experiment.device: 'cuda' asked for but no CUDA device is visible; "
            "use device = 'auto' or 'cpu'"
        )
    return torch.device(name)

"""Where tensors live: a manifest's device setting resolved, and the device a model computes on.

The rule that keeps the suite device-correct: a model is moved to the experiment's device in one
place (`Context.place`), when it is built or loaded; every function that takes a model then runs it
on the model's own device (`model_device`) and moves its inputs there, never to a device passed
beside the model. A model and a device argument that disagree cannot happen, because no function
takes both.
"""

import itertools

import torch
from torch import nn

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


def model_device(model: nn.Module) -> torch.device:
    """The device `model` computes on: that of its first parameter or buffer (CPU if it has none)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if first is None else first.device

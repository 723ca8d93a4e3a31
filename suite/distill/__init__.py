"""Dataset distillation: learn a few images per class that train a network like the full set does.

Methods: `dd` (Wang et al. 2018), `dc` (gradient matching, Zhao et al. 2021, optionally with DSA),
`dm` (distribution matching, Zhao & Bilen 2023), and the real-image baselines `random` and
`herding`. Pure torch; progress leaves only through `on_step`.
"""

from typing import Any, Literal

import torch
from pydantic import BaseModel

from suite.data import NUM_CLASSES
from suite.distill.common import DistillMethod, DistillResult, RealData, StepCallback
from suite.distill.coreset import HERDING, RANDOM, HerdingParams, RandomParams
from suite.distill.dc import DC, DCParams
from suite.distill.dd import DD, DDParams
from suite.distill.dm import DM, DMParams
from suite.distill.evaluate import RECIPES, EvalRecipe, train_on_synthetic
from suite.errors import TrainingError
from suite.models import ConvNet

__all__ = [
    "METHOD_PARAMS",
    "HERDING_METHOD",
    "RANDOM_METHOD",
    "REAL_IMAGE_METHODS",
    "RECIPES",
    "ConvNet",
    "DCParams",
    "DDParams",
    "DMParams",
    "DistillMethod",
    "DistillResult",
    "EvalRecipe",
    "HerdingParams",
    "RandomParams",
    "distill",
    "distill_method",
    "train_on_synthetic",
]

_METHODS: dict[str, DistillMethod[Any]] = {m.name: m for m in (DD, DC, DM, RANDOM, HERDING)}
METHOD_PARAMS: dict[str, type[BaseModel]] = {name: m.params for name, m in _METHODS.items()}
REAL_IMAGE_METHODS = frozenset({RANDOM.name, HERDING.name})  # coresets: real images, none learned
RANDOM_METHOD = RANDOM.name  # the same-size control of a learned set
HERDING_METHOD = HERDING.name  # and the best same-size real set


def distill_method(method: str) -> DistillMethod[Any]:
    """The registry entry of `method`; a KeyError that lists the known methods for any other."""
    if method not in _METHODS:
        raise KeyError(f"unknown distillation method {method!r}; known: {', '.join(_METHODS)}")
    return _METHODS[method]


def distill(
    method: str,
    params: BaseModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    ipc: int,
    init: Literal["real", "noise"],
    seed: int,
    device: torch.device | str = "cpu",
    on_step: StepCallback | None = None,
    compile: bool = False,
) -> DistillResult:
    """Distil (x [N, 1, 28, 28] in [0, 1], y int64 in 0..9) to ipc images per class.

    Learned images are optimised in the data's standardised space and mapped back to pixels,
    clamped to [0, 1]; `random` and `herding` return training images unchanged (they ignore
    `init`). `on_step(iteration, total_iterations, loss)` follows every iteration. One seed fixes
    every draw (real batches, inits, networks, augmentations): CPU runs repeat bit for bit.
    `compile` lets a method run its networks through `torch.compile` where that pays (DM).
    """
    entry = distill_method(method)
    if not isinstance(params, entry.params):
        raise TypeError(f"{method} needs {entry.params.__name__}, got {type(params).__name__}")
    _check_data(x, y, ipc)
    generator = torch.Generator().manual_seed(seed)
    real = RealData(x, y, torch.device(device), generator, compile=compile)
    report = on_step or (lambda i, n, loss: None)
    return entry.run(params=params, real=real, ipc=ipc, init=init, on_step=report)


def _check_data(x: torch.Tensor, y: torch.Tensor, ipc: int) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28) or len(x) != len(y):
        raise ValueError(
            f"distill needs x [N, 1, 28, 28] and y [N]; got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if ipc < 1:
        raise TrainingError(f"distill: ipc must be ≥ 1 (got {ipc})")
    counts = torch.bincount(y, minlength=NUM_CLASSES)
    if len(counts) > NUM_CLASSES or int(y.min()) < 0:
        raise ValueError(f"distill needs labels in 0..{NUM_CLASSES - 1}; got {y.min()}..{y.max()}")
    short = [c for c in range(NUM_CLASSES) if counts[c] < ipc]
    if short:
        c = short[0]
        raise TrainingError(
            f"distill: class {c} has {int(counts[c])} training images, fewer than ipc={ipc}; "
            "lower ipc or train on more samples"
        )

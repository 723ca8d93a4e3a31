"""Dataset distillation: learn a few images per class that train a network like the full set does.

Methods: `dd` (Wang et al. 2018), `dc` (gradient matching, Zhao et al. 2021, optionally with DSA),
`dm` (distribution matching, Zhao & Bilen 2023), and the real-image baselines `random` and
`herding`. Pure torch; progress leaves only through `on_step`.
"""

from typing import Literal

import torch
from pydantic import BaseModel

from suite.data import NUM_CLASSES
from suite.distill.common import (
    DistillResult,
    RealData,
    StepCallback,
    synthetic_labels,
)
from suite.distill.convnet import ConvNet
from suite.distill.coreset import HerdingParams, RandomParams, select_herding, select_random
from suite.distill.dc import DCParams, run_dc
from suite.distill.dd import DDParams, run_dd
from suite.distill.dm import DMParams, run_dm
from suite.distill.evaluate import RECIPES, EvalRecipe, train_on_synthetic
from suite.errors import TrainingError

__all__ = [
    "METHOD_PARAMS",
    "RECIPES",
    "ConvNet",
    "DCParams",
    "DDParams",
    "DMParams",
    "DistillResult",
    "EvalRecipe",
    "HerdingParams",
    "RandomParams",
    "distill",
    "train_on_synthetic",
]

METHOD_PARAMS: dict[str, type[BaseModel]] = {
    "dd": DDParams,
    "dc": DCParams,
    "dm": DMParams,
    "random": RandomParams,
    "herding": HerdingParams,
}


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
) -> DistillResult:
    """Distil (x [N, 1, 28, 28] in [0, 1], y int64 in 0..9) to ipc images per class.

    Learned images are optimised in the data's standardised space and mapped back to pixels,
    clamped to [0, 1]; `random` and `herding` return training images unchanged (they ignore
    `init`). `on_step(iteration, total_iterations, loss)` follows every iteration. One seed fixes
    every draw (real batches, inits, networks, augmentations): CPU runs repeat bit for bit.
    """
    if method not in METHOD_PARAMS:
        raise KeyError(f"unknown distillation method {method!r}; known: {', '.join(METHOD_PARAMS)}")
    if not isinstance(params, METHOD_PARAMS[method]):
        raise TypeError(
            f"{method} needs {METHOD_PARAMS[method].__name__}, got {type(params).__name__}"
        )
    _check_data(x, y, ipc)
    real = RealData(x, y, torch.device(device), torch.Generator().manual_seed(seed))
    labels = synthetic_labels(ipc)
    if isinstance(params, RandomParams | HerdingParams):
        select = select_random if isinstance(params, RandomParams) else select_herding
        return DistillResult(x[select(params, real, ipc)].clone().cpu(), labels, [], None)
    report = on_step or (lambda i, n, loss: None)
    lrs = None
    if isinstance(params, DDParams):
        syn, curve, lrs = run_dd(params, real, ipc, init, report)
    elif isinstance(params, DCParams):
        syn, curve = run_dc(params, real, ipc, init, report)
    else:
        syn, curve = run_dm(params, real, ipc, init, report)
    return DistillResult(real.to_pixels(syn), labels, curve, lrs)


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

"""What the distillation methods share: the result, the real data by class, seeded inits, checks."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Generic, Literal, Protocol, TypeVar

import torch
from pydantic import AfterValidator, BaseModel

from suite.data import NUM_CLASSES
from suite.distill.dsa import check_strategy
from suite.errors import TrainingError
from suite.models import ConvNet

StepCallback = Callable[[int, int, float], None]
Init = Literal["real", "noise"]
DSAStrategy = Annotated[str, AfterValidator(check_strategy)]


@dataclass
class DistillResult:
    """A synthetic set: `x_syn` [ipc·10, 1, 28, 28] in [0, 1] on the CPU, `y_syn` int64 class-sorted
    with ipc per class, the method's objective per iteration, and dd's learned step sizes."""

    x_syn: torch.Tensor
    y_syn: torch.Tensor
    loss_curve: list[float]
    lrs: torch.Tensor | None

    @classmethod
    def learned(
        cls,
        real: "RealData",
        syn: torch.Tensor,
        ipc: int,
        curve: list[float],
        lrs: torch.Tensor | None = None,
    ) -> "DistillResult":
        """A learned set: `syn`, standardised and class-sorted (ipc per class), back in pixels."""
        return cls(real.to_pixels(syn), synthetic_labels(ipc), curve, lrs)

    @classmethod
    def chosen(cls, real: "RealData", idx: torch.Tensor, ipc: int) -> "DistillResult":
        """A coreset: the training images at `idx` (class-sorted, ipc per class), unchanged."""
        return cls(real.pixels[idx].clone().cpu(), synthetic_labels(ipc), [], None)


class RealData:
    """The training images standardised by their own pixel mean and std (the papers learn in the
    normalised space), kept on `device`, with seeded sampling by class; `pixels` are the images as
    given (a coreset returns them unchanged). `compile` lets a method run its networks through
    `torch.compile` where that pays (the run's setting, not the method's: results stay the same)."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        device: torch.device,
        generator: torch.Generator,
        *,
        compile: bool = False,
    ) -> None:
        self.pixels = x
        self.compile = compile
        self.mean, self.std = x.mean().item(), x.std().item()
        self.x = ((x - self.mean) / self.std).to(device)
        self.y = y.to(device)
        self.by_class = [torch.nonzero(y.cpu() == c).flatten() for c in range(NUM_CLASSES)]
        self.device = device
        self.generator = generator

    def of_class(self, c: int, n: int) -> torch.Tensor:
        """`n` random images of class `c` without replacement (all if the class is smaller)."""
        idx = self.by_class[c]
        pick = idx[torch.randperm(len(idx), generator=self.generator)[:n]]
        return self.x[pick.to(self.device)]

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` random images of any class, with their labels."""
        pick = torch.randperm(len(self.y), generator=self.generator)[:n].to(self.device)
        return self.x[pick], self.y[pick]

    def to_pixels(self, z: torch.Tensor) -> torch.Tensor:
        """Map standardised images back to pixels, clamped to [0, 1], on the CPU."""
        return (z.detach() * self.std + self.mean).clamp(0.0, 1.0).cpu()


P = TypeVar("P", bound=BaseModel)
P_contra = TypeVar("P_contra", bound=BaseModel, contravariant=True)


class Distiller(Protocol[P_contra]):
    """The one signature of every distillation method: the real data in, ipc images per class out
    (`init` and `on_step` mean nothing to a method that learns nothing: the coresets)."""

    def __call__(
        self, *, params: P_contra, real: RealData, ipc: int, init: Init, on_step: StepCallback
    ) -> DistillResult: ...


@dataclass(frozen=True)
class DistillMethod(Generic[P]):
    """One method of the distillation registry: the manifest's `method`, its settings model and its
    function."""

    name: str
    params: type[P]
    run: Distiller[P]


def synthetic_labels(ipc: int) -> torch.Tensor:
    """[0]*ipc + [1]*ipc + … + [9]*ipc."""
    return torch.arange(NUM_CLASSES).repeat_interleave(ipc)


def initial_images(real: RealData, ipc: int, init: Init) -> torch.Tensor:
    """Class-sorted starting images in the standardised space: random real ones or N(0, 1) noise."""
    if init == "real":
        return torch.cat([real.of_class(c, ipc) for c in range(NUM_CLASSES)]).clone()
    shape = (NUM_CLASSES * ipc, 1, 28, 28)
    return torch.randn(shape, generator=real.generator).to(real.device)


def fresh_convnet(width: int, depth: int, real: RealData) -> ConvNet:
    """A ConvNet with a new random init drawn from the run's generator (global RNG untouched)."""
    seed = int(torch.randint(2**62, (1,), generator=real.generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ConvNet(width=width, depth=depth)
    return net.to(real.device)


def check_finite(method: str, loss: float, iteration: int, fix: str) -> None:
    """Raise TrainingError naming the iteration where the objective stopped being a number."""
    if not math.isfinite(loss):
        raise TrainingError(f"{method}: loss became {loss} at iteration {iteration}; {fix}")

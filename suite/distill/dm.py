"""Distribution matching (Zhao & Bilen, WACV 2023, "Dataset Condensation with Distribution
Matching").

Each iteration draws a fresh randomly initialised ConvNet and, class by class, matches the mean
embedding of a real batch and of the synthetic images, both under the same DSA draw:
L = Σ_c ‖mean ψ(A(x_real_c)) − mean ψ(A(x_syn_c))‖². Only the synthetic images are learned, with
SGD (momentum 0.5) as in the paper code; the curve logs L / 10.
"""

import warnings
from collections.abc import Iterator
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from suite.data import NUM_CLASSES
from suite.distill import dsa
from suite.distill.common import (
    DistillMethod,
    DistillResult,
    DSAStrategy,
    Init,
    RealData,
    StepCallback,
    check_finite,
    fresh_convnet,
    initial_images,
)
from suite.distill.dsa import DEFAULT_STRATEGY
from suite.limits import MAX_STEPS
from suite.models import ConvNet


class DMParams(BaseModel):
    """DM settings; defaults are the paper's (20,000 iterations: hours on a GPU, days on a CPU)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    UNHASHED_AT: ClassVar[dict[str, object]] = {
        "real_bf16": False
    }  # float32 embedding: DM as it ran before

    iterations: int = Field(default=20000, gt=0, le=MAX_STEPS)
    lr_img: float = Field(default=1.0, gt=0)
    batch_real: int = Field(default=256, gt=0, le=65536)
    dsa: bool = True
    dsa_strategy: DSAStrategy = DEFAULT_STRATEGY
    net_width: int = Field(default=128, gt=0, le=1024)
    net_depth: int = Field(default=3, ge=1, le=5)
    real_bf16: bool = Field(
        default=False,
        description="embed the real batch under bfloat16 autocast (bench/dm_iteration.py)",
    )


COMPILE_MIN_ITERATIONS = 200
"""Below this many iterations DM runs eagerly: compiling costs about a minute on a CPU, which a
few hundred iterations at paper size pay back (bench/dm_iteration.py)."""


def run_dm(
    *, params: DMParams, real: RealData, ipc: int, init: Init, on_step: StepCallback
) -> DistillResult:
    """Learn ipc·10 standardised images by distribution matching; returns them and the curve."""
    curve: list[float] = []
    final = None
    for it, value, images in dm_iterations(params, real, ipc, init):
        curve.append(value)
        on_step(it, params.iterations, value)
        final = images
    assert final is not None  # DMParams.iterations > 0
    return DistillResult.learned(real, final.detach(), ipc, curve)


def dm_iterations(
    params: DMParams, real: RealData, ipc: int, init: Init
) -> Iterator[tuple[int, float, torch.Tensor]]:
    """DM's loop, one (iteration, objective / 10, the synthetic images) after each update: the
    images are the live standardised tensor (clone to keep a snapshot)."""
    syn = initial_images(real, ipc, init).requires_grad_(True)
    optimizer = torch.optim.SGD([syn], lr=params.lr_img, momentum=0.5)
    compiled = real.compile and params.iterations >= COMPILE_MIN_ITERATIONS
    matcher = Matcher(params, real, compiled=compiled)
    for it in range(1, params.iterations + 1):
        matcher.redraw(real)
        x_real, x_syn = draw_batches(params, real, syn, ipc)
        loss = matcher.loss(x_real, x_syn)
        value = loss.item() / NUM_CLASSES
        check_finite("dm", value, it, f"lower lr_img (got {params.lr_img})")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        yield it, value, syn


def draw_batches(
    params: DMParams, real: RealData, syn: torch.Tensor, ipc: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One iteration's per-class real batch and synthetic images, both under that class's DSA draw
    (drawn in the paper code's order: the class's real batch, then its augmentation)."""
    reals, syns = [], []
    for c in range(NUM_CLASSES):
        x_real, x_syn = real.of_class(c, params.batch_real), syn[c * ipc : (c + 1) * ipc]
        if params.dsa:
            aug = dsa.sample(params.dsa_strategy, 1, x_real.shape[-1], real.generator)
            x_real, x_syn = dsa.apply(x_real, aug), dsa.apply(x_syn, aug)
        reals.append(x_real)
        syns.append(x_syn)
    return reals, syns


class Matcher:
    """DM's objective on one ConvNet that each iteration redraws in place (the paper's fresh
    random network, the same draw as `fresh_convnet`), so a compiled embedding is built once.

    The real images run class by class with no autograd record (under bfloat16 autocast with
    `params.real_bf16`, class means in float32): a class's batch stays in cache, where one batch
    of every class (2,560 images at the paper's size) ran slower. The synthetic images of all
    classes run as one forward and backward.
    `compiled` runs both through `torch.compile` (the real side in channels-last memory, where
    oneDNN's convolutions are fastest); the sums are the same to float rounding. Compiling is
    only a speed-up: where it fails (no C++ compiler, a broken toolchain) the matcher warns once
    and runs eagerly, with the same results."""

    def __init__(self, params: DMParams, real: RealData, *, compiled: bool) -> None:
        self.params = params
        self.net = ConvNet(width=params.net_width, depth=params.net_depth).to(real.device)
        self.net.requires_grad_(False)
        self.compiled = self.channels_last = compiled
        if compiled:
            self.net = self.net.to(memory_format=torch.channels_last)
            self._real = torch.compile(self._embed_real, dynamic=False)
            self._syn = torch.compile(self.net.embed, dynamic=False)
        else:
            self._real, self._syn = self._embed_real, self.net.embed

    def redraw(self, real: RealData) -> None:
        """New random weights, drawn from the run's generator as `fresh_convnet` draws them."""
        fresh = fresh_convnet(self.params.net_width, self.params.net_depth, real)
        with torch.no_grad():
            for mine, new in zip(self.net.parameters(), fresh.parameters(), strict=True):
                mine.copy_(new)

    def loss(self, x_real: list[torch.Tensor], x_syn: list[torch.Tensor]) -> torch.Tensor:
        """Σ_c ‖mean ψ(x_real_c) − mean ψ(x_syn_c)‖², differentiable in the synthetic images."""
        try:
            return self._loss(x_real, x_syn)
        except Exception as exc:  # a failed compilation; eager code raising again is not caught
            if not self.compiled:
                raise
            warnings.warn(
                f"dm: torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                "running eagerly (experiment.compile = false skips the attempt)",
                stacklevel=2,
            )
            self.compiled = False
            self._real, self._syn = self._embed_real, self.net.embed
            return self._loss(x_real, x_syn)

    def _loss(self, x_real: list[torch.Tensor], x_syn: list[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            target = torch.stack([self._real(self._layout(x)).float().mean(0) for x in x_real])
        mean_syn = _class_means(self._syn(torch.cat(x_syn)), [len(x) for x in x_syn])
        return (target - mean_syn).pow(2).sum()

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _embed_real(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, torch.bfloat16, enabled=self.params.real_bf16):
            return self.net.embed(x)


def _class_means(emb: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """[classes, features]: the mean embedding of each class's consecutive rows."""
    return torch.stack([part.mean(0) for part in emb.split(sizes)])


DM = DistillMethod(name="dm", params=DMParams, run=run_dm)

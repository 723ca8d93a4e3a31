"""Distribution matching (Zhao & Bilen, WACV 2023, "Dataset Condensation with Distribution
Matching").

Each iteration draws a fresh randomly initialised ConvNet and, class by class, matches the mean
embedding of a real batch and of the synthetic images, both under the same DSA draw:
L = Σ_c ‖mean ψ(A(x_real_c)) − mean ψ(A(x_syn_c))‖². Only the synthetic images are learned, with
SGD (momentum 0.5) as in the paper code; the curve logs L / 10.
"""

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


class DMParams(BaseModel):
    """DM settings; defaults are the paper's (20,000 iterations: hours on a GPU, days on a CPU)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int = Field(default=20000, gt=0, le=MAX_STEPS)
    lr_img: float = Field(default=1.0, gt=0)
    batch_real: int = Field(default=256, gt=0, le=65536)
    dsa: bool = True
    dsa_strategy: DSAStrategy = DEFAULT_STRATEGY
    net_width: int = Field(default=128, gt=0, le=1024)
    net_depth: int = Field(default=3, ge=1, le=5)


def run_dm(
    *, params: DMParams, real: RealData, ipc: int, init: Init, on_step: StepCallback
) -> DistillResult:
    """Learn ipc·10 standardised images by distribution matching; returns them and the curve."""
    syn = initial_images(real, ipc, init).requires_grad_(True)
    optimizer = torch.optim.SGD([syn], lr=params.lr_img, momentum=0.5)
    curve: list[float] = []
    for it in range(1, params.iterations + 1):
        net = fresh_convnet(params.net_width, params.net_depth, real).requires_grad_(False)
        loss = syn.new_zeros(())
        for c in range(NUM_CLASSES):
            x_real, x_syn = real.of_class(c, params.batch_real), syn[c * ipc : (c + 1) * ipc]
            if params.dsa:
                aug = dsa.sample(params.dsa_strategy, 1, x_real.shape[-1], real.generator)
                x_real, x_syn = dsa.apply(x_real, aug), dsa.apply(x_syn, aug)
            with torch.no_grad():
                target = net.embed(x_real).mean(0)
            loss = loss + (target - net.embed(x_syn).mean(0)).pow(2).sum()
        value = loss.item() / NUM_CLASSES
        check_finite("dm", value, it, f"lower lr_img (got {params.lr_img})")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(value)
        on_step(it, params.iterations, value)
    return DistillResult.learned(real, syn.detach(), ipc, curve)


DM = DistillMethod(name="dm", params=DMParams, run=run_dm)

"""Dataset distillation (Wang, Zhu, Torralba & Efros 2018, "Dataset Distillation"), random init.

The synthetic set is cut into `inner_steps` batches (ipc / inner_steps images per class each).
From a freshly sampled init θ₀, the unrolled inner loop takes one gradient step per batch,
θ ← θ − η_i ∇ℓ, and repeats the sequence `epochs` times, each step i with its own learned η_i
(T = inner_steps · epochs of them, kept positive through a softplus as in the paper code). The
outer loss is the cross-entropy of θ_T on a real batch, averaged over `nets_per_iteration` inits;
it is back-propagated through all T steps into the images and the η_i. The outer optimiser is
Adam (betas 0.5, 0.999) as in the paper code, whose rate the code halves in steps; here it halves
every tenth of the iterations.
"""

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.func import functional_call
from torch.nn import functional as F

from suite.data import NUM_CLASSES
from suite.distill.common import (
    DistillMethod,
    DistillResult,
    Init,
    RealData,
    StepCallback,
    check_finite,
    fresh_convnet,
    initial_images,
    synthetic_labels,
)
from suite.errors import TrainingError
from suite.limits import MAX_EPOCHS, MAX_NETS, MAX_STEPS


class DDParams(BaseModel):
    """DD settings; `inner_steps` unset → ipc steps of one image per class (the paper's MNIST
    set-up: 10 steps × 3 epochs, step sizes initialised to 0.02)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int = Field(default=2000, gt=0, le=MAX_STEPS)
    inner_steps: int | None = Field(default=None, gt=0, le=MAX_STEPS)
    epochs: int = Field(default=3, gt=0, le=MAX_EPOCHS)
    init_lr: float = Field(default=0.02, gt=0)
    lr_img: float = Field(default=0.01, gt=0)
    batch_real: int = Field(default=1024, gt=0, le=65536)
    nets_per_iteration: int = Field(default=1, gt=0, le=MAX_NETS)
    net_width: int = Field(default=128, gt=0, le=1024)
    net_depth: int = Field(default=3, ge=1, le=5)


def run_dd(
    *, params: DDParams, real: RealData, ipc: int, init: Init, on_step: StepCallback
) -> DistillResult:
    """Learn ipc·10 standardised images and T step sizes; returns the images, the loss curve and
    the step sizes."""
    steps = params.inner_steps or ipc
    if ipc % steps:
        raise TrainingError(
            f"dd: ipc={ipc} is not a multiple of inner_steps={steps}; "
            "choose inner_steps dividing ipc (each step uses ipc/inner_steps images per class)"
        )
    per_step = ipc // steps
    batches = [
        torch.tensor(
            [c * ipc + s * per_step + j for c in range(NUM_CLASSES) for j in range(per_step)]
        )
        for s in range(steps)
    ]
    labels = synthetic_labels(ipc).to(real.device)
    syn = initial_images(real, ipc, init).requires_grad_(True)
    inverse_softplus = params.init_lr + math.log(-math.expm1(-params.init_lr))
    raw_lrs = torch.full((steps * params.epochs,), inverse_softplus, device=real.device)
    raw_lrs.requires_grad_(True)
    optimizer = torch.optim.Adam([syn, raw_lrs], lr=params.lr_img, betas=(0.5, 0.999))
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=max(1, params.iterations // 10), gamma=0.5
    )
    curve: list[float] = []
    for it in range(1, params.iterations + 1):
        lrs = F.softplus(raw_lrs)
        loss = syn.new_zeros(())
        for _ in range(params.nets_per_iteration):
            net = fresh_convnet(params.net_width, params.net_depth, real)
            theta = {name: p.detach().requires_grad_(True) for name, p in net.named_parameters()}
            for i, lr in enumerate(lrs):
                idx = batches[i % steps].to(real.device)
                inner = F.cross_entropy(functional_call(net, theta, (syn[idx],)), labels[idx])
                grads = torch.autograd.grad(inner, list(theta.values()), create_graph=True)
                theta = {
                    name: p - lr * g for (name, p), g in zip(theta.items(), grads, strict=True)
                }
            x_real, y_real = real.batch(params.batch_real)
            loss = loss + F.cross_entropy(functional_call(net, theta, (x_real,)), y_real)
        loss = loss / params.nets_per_iteration
        value = loss.item()
        check_finite(
            "dd", value, it, f"lower lr_img ({params.lr_img}) or init_lr ({params.init_lr})"
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        curve.append(value)
        on_step(it, params.iterations, value)
    return DistillResult.learned(real, syn.detach(), ipc, curve, F.softplus(raw_lrs).detach().cpu())


DD = DistillMethod(name="dd", params=DDParams, run=run_dd)

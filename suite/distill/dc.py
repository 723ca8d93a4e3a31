"""Gradient matching (Zhao, Mopuri & Bilen, ICLR 2021, "Dataset Condensation with Gradient
Matching"), optionally with DSA (Zhao & Bilen, ICML 2021).

Algorithm 1 of the paper: for each of `iterations` fresh ConvNet inits, repeat `outer_loops` times
(a) for every class, the distance between the network's gradient on a real batch and on the class's
synthetic images, summed over classes, takes one SGD step on the synthetic images; (b) the network
trains `inner_loops` epochs on the whole synthetic set. The distance is the paper's layer-wise
Σ_layers Σ_output-nodes (1 − cos) between gradient rows; bias and norm parameters are left out,
as in the paper code. With `dsa`, real and synthetic batches share one augmentation draw per class
and step, and the network updates see per-image DSA.
"""

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F

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
    synthetic_labels,
)
from suite.distill.dsa import DEFAULT_STRATEGY
from suite.limits import MAX_STEPS

# The paper code's (outer_loop, inner_loop) per ipc (`get_loops`).
PAPER_LOOPS: dict[int, tuple[int, int]] = {
    1: (1, 1),
    10: (10, 50),
    20: (20, 25),
    30: (30, 20),
    40: (40, 15),
    50: (50, 10),
}


class DCParams(BaseModel):
    """DC/DSA settings; defaults are the paper's. `outer_loops`/`inner_loops` unset → the paper's
    table for the largest tabulated ipc not above the requested one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int = Field(default=1000, gt=0, le=MAX_STEPS)
    outer_loops: int | None = Field(default=None, gt=0, le=MAX_STEPS)
    inner_loops: int | None = Field(default=None, ge=0, le=MAX_STEPS)
    lr_img: float = Field(default=0.1, gt=0)
    lr_net: float = Field(default=0.01, gt=0)
    batch_real: int = Field(default=256, gt=0, le=65536)
    batch_train: int = Field(default=256, gt=0, le=65536)
    dsa: bool = False
    dsa_strategy: DSAStrategy = DEFAULT_STRATEGY
    net_width: int = Field(default=128, gt=0, le=1024)
    net_depth: int = Field(default=3, ge=1, le=5)

    def loops(self, ipc: int) -> tuple[int, int]:
        """(outer, inner) for this ipc."""
        paper = PAPER_LOOPS[max(k for k in PAPER_LOOPS if k <= ipc)]
        outer = self.outer_loops if self.outer_loops is not None else paper[0]
        inner = self.inner_loops if self.inner_loops is not None else paper[1]
        return outer, inner


def gradient_distance(g_syn: list[torch.Tensor], g_real: list[torch.Tensor]) -> torch.Tensor:
    """Σ over weight tensors of Σ over output nodes of 1 − cos(row_syn, row_real)."""
    total = g_syn[0].new_zeros(())
    for gs, gr in zip(g_syn, g_real, strict=True):
        if gr.dim() == 1:
            continue
        gs, gr = gs.flatten(1), gr.flatten(1)
        cos = (gs * gr).sum(-1) / (gs.norm(dim=-1) * gr.norm(dim=-1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


def run_dc(
    *, params: DCParams, real: RealData, ipc: int, init: Init, on_step: StepCallback
) -> DistillResult:
    """Learn ipc·10 standardised images by gradient matching; returns them and the loss curve
    (the matching distance per class and outer loop, averaged over each iteration)."""
    outer, inner = params.loops(ipc)
    syn = initial_images(real, ipc, init).requires_grad_(True)
    labels = synthetic_labels(ipc).to(real.device)
    optimizer = torch.optim.SGD([syn], lr=params.lr_img, momentum=0.5)
    curve: list[float] = []
    for it in range(1, params.iterations + 1):
        net = fresh_convnet(params.net_width, params.net_depth, real)
        net_optimizer = torch.optim.SGD(net.parameters(), lr=params.lr_net, momentum=0.5)
        weights = list(net.parameters())
        total = 0.0
        for ol in range(outer):
            loss = syn.new_zeros(())
            for c in range(NUM_CLASSES):
                x_real, x_syn = real.of_class(c, params.batch_real), syn[c * ipc : (c + 1) * ipc]
                if params.dsa:
                    aug = dsa.sample(params.dsa_strategy, 1, x_real.shape[-1], real.generator)
                    x_real, x_syn = dsa.apply(x_real, aug), dsa.apply(x_syn, aug)
                g_real = torch.autograd.grad(_class_loss(net, x_real, c), weights)
                g_syn = torch.autograd.grad(_class_loss(net, x_syn, c), weights, create_graph=True)
                loss = loss + gradient_distance(list(g_syn), [g.detach() for g in g_real])
            total += loss.item()
            check_finite(
                "dc", total, it, f"lower lr_img ({params.lr_img}) or lr_net ({params.lr_net})"
            )
            optimizer.zero_grad()
            syn.grad = torch.autograd.grad(loss, syn)[0]
            optimizer.step()
            if ol < outer - 1:
                _train_net(net, net_optimizer, syn.detach(), labels, inner, params, real)
        value = total / (NUM_CLASSES * outer)
        curve.append(value)
        on_step(it, params.iterations, value)
    return DistillResult.learned(real, syn.detach(), ipc, curve)


def _class_loss(net: nn.Module, x: torch.Tensor, c: int) -> torch.Tensor:
    return F.cross_entropy(net(x), torch.full((x.shape[0],), c, device=x.device))


def _train_net(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    params: DCParams,
    real: RealData,
) -> None:
    """The inner loop: `epochs` epochs of SGD on the (frozen) synthetic set."""
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=real.generator).split(params.batch_train):
            xb = x[idx.to(x.device)]
            if params.dsa:
                xb = dsa.augment(xb, params.dsa_strategy, real.generator)
            loss = F.cross_entropy(net(xb), y[idx.to(x.device)])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


DC = DistillMethod(name="dc", params=DCParams, run=run_dc)

"""Carlini & Wagner (2017) L0 attack, batched over samples with per-sample pixel masks.

Repeat: solve an L2 problem (‖x' − x‖²₂ + c · max(f6(x'), −κ), Adam in tanh space) in which only
the still-allowed pixels may move, warm-started from the last success and stopped at its first
adversarial; then freeze the allowed pixels with the smallest |∇f6| · |δ| (a few per round, as
the paper's code does). A solve that fails doubles c, keeping its Adam state; past the largest c
the sample stops and returns its last success. Frozen pixels equal the clean input exactly.

Warm starts are the paper code's (l0_attack.py): each shrinking-mask solve starts from the
previous adversarial with a fresh Adam state, and c carries over. Deviations from that code:
success is margin < −κ (κ = 0 by default; the code hard-wires a 0.01 margin); a pixel's
usefulness is |δ| · |∇f6| as the paper's text says (the code takes the gradient of the whole loss
in tanh space, which at a success is the distance term alone); and the stall rule below. Against
ART and FMN at L0: `bench/attack_vs_art.py`, measurements in `docs/attacks.md`.

Reference: N. Carlini, D. Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P
2017; github.com/carlini/nn_robust_attacks (l0_attack.py).
"""

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from suite.attacks.common import (
    L0_TOLERANCE,
    AttackKind,
    Found,
    TargetingParams,
    adam_step,
    from_tanh_space,
    margin_and_grad,
    rows,
)
from suite.attacks.search import (
    SearchState,
    accept,
    raise_const,
    retire_finished,
    solve_over,
    start,
)
from suite.limits import MAX_STEPS


class CWL0Params(TargetingParams):
    """Defaults are those of the paper's code (l0_attack.py). Its only early exit is a solve's first
    success; we also give up a c early once its loss has stalled (fell by less than 0.01% over
    100 iterations, the paper's L2 abort rule at 1,000 iterations) where that code would run on
    to max_iterations."""

    max_iterations: int = Field(1000, ge=1, le=MAX_STEPS)
    lr: float = Field(1e-2, gt=0)
    initial_const: float = Field(1e-3, gt=0)
    largest_const: float = Field(2e6, gt=0)
    const_factor: float = Field(2.0, gt=1)
    confidence: float = Field(0.0, ge=0)
    abort_early: bool = Field(
        True, description="stop a solve at its first success; give up a c whose loss stalls"
    )
    abort_window: int = Field(
        100, ge=1, le=MAX_STEPS, description="iterations between stall checks"
    )
    abort_tolerance: float = Field(
        1e-4, gt=0, lt=1, description="a loss that fell by less than this fraction stalls"
    )

    @property
    def stall_check(self) -> bool:
        """The early abort also gives up a stalled c (no cost in median L0: module docstring)."""
        return self.abort_early


@dataclass
class _State(SearchState):
    allowed: Tensor  # bool mask of pixels the attack may still change


def cw_l0(
    *,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    params: CWL0Params,
    seed: int,
    keys: np.ndarray,
) -> Found:
    """Run the attack on a batch; `target` None means untargeted. Nothing is drawn at random
    (`seed` and `keys` are unused)."""
    targeted = target is not None
    out = Found.start(x)
    s = start(
        _State,
        x,
        target if targeted else y,
        params.initial_const,
        allowed=torch.ones_like(x, dtype=torch.bool),
    )
    for i in itertools.count(1):
        free, dx_dw = from_tanh_space(s.w)
        x_adv = torch.where(s.allowed, free, s.x)
        mgn, mgn_grad = margin_and_grad(model, x_adv, s.cls, targeted)

        with torch.no_grad():
            s.grad_evals += s.active.long()
            delta = x_adv - s.x
            hinge = (mgn + params.confidence).clamp_min(0)
            loss = delta.flatten(1).square().sum(1) + s.const * hinge
            may_stop = params.abort_early or (s.it == params.max_iterations - 1)
            solved = (mgn + params.confidence < 0) & may_stop & s.active

            grad = 2 * delta + rows((s.const * (hinge > 0)).float()) * mgn_grad
            s.w, s.m, s.v, s.t = adam_step(s.w, grad * dx_dw * s.allowed, s.m, s.v, s.t, params.lr)

            failed = ~solved & solve_over(s, loss, params)
            done = _shrink(s, solved, x_adv, delta, mgn_grad) | raise_const(s, failed, params)
            s = retire_finished(out, s, done, i, params)
            if not len(s.idx):
                return out


def _shrink(s: _State, solved: Tensor, x_adv: Tensor, delta: Tensor, mgn_grad: Tensor) -> Tensor:
    """Accept the solved rows' images, freeze some of their pixels, restart them; rows now done.
    The freezing rule runs on every row and is kept for the solved ones: picking those rows out
    would make the host wait for the device at every iteration."""
    frozen = freeze_least_useful(s.allowed, delta.abs() * mgn_grad.abs(), delta)
    s.allowed = torch.where(rows(solved), frozen, s.allowed)
    accept(s, solved, x_adv)
    return solved & ~s.allowed.flatten(1).any(1)


def freeze_least_useful(allowed: Tensor, usefulness: Tensor, delta: Tensor) -> Tensor:
    """The paper's code's freezing rule, per row: walk the allowed pixels from least useful up,
    freezing each; stop after ⌈0.3·√(pixels changed)⌉ of them or after one with usefulness
    > 0.01."""
    score = torch.where(allowed, usefulness, torch.inf).flatten(1)
    order = torch.argsort(score, dim=1, stable=True)
    ranked = score.gather(1, order)
    n_changed = (delta.abs() > L0_TOLERANCE).flatten(1).sum(1)
    budget = (0.3 * n_changed.double().sqrt()).ceil().long().clamp_min(1)
    big = ranked > 0.01
    first_big = torch.where(big.any(1), big.long().argmax(1), score.shape[1])
    count = torch.minimum(budget, first_big + 1)
    count = torch.minimum(count, allowed.flatten(1).sum(1))
    freeze_ranked = torch.arange(score.shape[1], device=score.device) < count[:, None]
    freeze = torch.zeros_like(freeze_ranked).scatter(1, order, freeze_ranked)
    return allowed & ~freeze.view_as(allowed)


CW_L0 = AttackKind(name="cw-l0", params=CWL0Params, attack=cw_l0, minimal_norm="l0")

"""Carlini & Wagner (2017) L∞ attack, batched over samples.

For a bound τ, minimise c · max(f6(x'), −κ) + Σᵢ max(0, |x'ᵢ − xᵢ| − τ) with Adam in tanh space,
warm-started from the last success. A solve succeeds as soon as the loss is ~0 and x' is
adversarial; then τ ← min(τ, ‖x' − x‖∞) · 0.9 and the sample solves again. A solve that fails
doubles c (keeping its Adam state, as the paper's code does); past the largest c the sample stops
and keeps its last success. Each sample runs its own schedule in one shared batch.

Warm starts are the paper code's (li_attack.py): each τ solve starts from the previous solution
with a fresh Adam state, and c carries over from one τ to the next; the paper's first-success exit
(`abort_early`) stays on. A deviation, off by default: the stall rule (`give_up_stalled`, give up
a c early). Against ART's `CarliniLInfMethod` and what the stall rule costs: `bench/attack_vs_art.py`,
with its measurements in `docs/attacks.md`.

Reference: N. Carlini, D. Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P
2017; github.com/carlini/nn_robust_attacks (li_attack.py).
"""

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from suite.attacks.common import (
    AttackKind,
    Found,
    TargetingParams,
    adam_step,
    from_tanh_space,
    margin_and_grad,
    per_sample,
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


class CWLinfParams(TargetingParams):
    """Defaults are those of the paper's code (li_attack.py). Its only early exit is a solve's first
    success; `give_up_stalled` also gives up a c once its loss has stalled (fell by less than
    0.01% over 100 iterations, the paper's L2 abort rule at 1,000 iterations) where that code
    would run on to max_iterations."""

    max_iterations: int = Field(1000, ge=1, le=MAX_STEPS)
    lr: float = Field(5e-3, gt=0)
    initial_const: float = Field(1e-5, gt=0)
    largest_const: float = Field(20.0, gt=0)
    const_factor: float = Field(2.0, gt=1)
    decrease_factor: float = Field(0.9, gt=0, lt=1)
    initial_tau: float = Field(1.0, gt=0)
    smallest_tau: float = Field(1 / 256, gt=0)
    confidence: float = Field(0.0, ge=0)
    abort_early: bool = Field(True, description="stop a solve at its first success (the paper's)")
    give_up_stalled: bool = Field(
        False, description="give up a c whose loss stalls (+1.3% median L∞: module docstring)"
    )
    abort_window: int = Field(
        100, ge=1, le=MAX_STEPS, description="iterations between stall checks"
    )
    abort_tolerance: float = Field(
        1e-4, gt=0, lt=1, description="a loss that fell by less than this fraction stalls"
    )

    @property
    def stall_check(self) -> bool:
        """Only `give_up_stalled` ends a stalled solve; the first-success exit is separate."""
        return self.give_up_stalled


@dataclass
class _State(SearchState):
    tau: Tensor  # the bound of the current solve


def cw_linf(
    *,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    params: CWLinfParams,
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
        tau=per_sample(x, params.initial_tau),
    )
    for i in itertools.count(1):
        x_adv, dx_dw = from_tanh_space(s.w)
        mgn, mgn_grad = margin_and_grad(model, x_adv, s.cls, targeted)

        with torch.no_grad():
            s.grad_evals += s.active.long()
            delta = x_adv - s.x
            excess = (delta.abs() - rows(s.tau)).clamp_min(0)
            hinge = (mgn + params.confidence).clamp_min(0)
            loss = s.const * hinge + excess.flatten(1).sum(1)
            may_stop = params.abort_early or (s.it == params.max_iterations - 1)
            solved = (mgn + params.confidence < 0) & (loss < 1e-4 * s.const) & may_stop & s.active

            grad = rows((s.const * (hinge > 0)).float()) * mgn_grad
            grad = (grad + delta.sign() * (excess > 0)) * dx_dw
            s.w, s.m, s.v, s.t = adam_step(s.w, grad, s.m, s.v, s.t, params.lr)

            failed = ~solved & solve_over(s, loss, params)
            done = _tighten(s, solved, x_adv, delta, params) | raise_const(s, failed, params)
            s = retire_finished(out, s, done, i, params)
            if not len(s.idx):
                return out


def _tighten(s: _State, solved: Tensor, x_adv: Tensor, delta: Tensor, p: CWLinfParams) -> Tensor:
    """Accept the solved rows' images, shrink their τ, restart them from there; rows now done."""
    actual = delta.abs().flatten(1).amax(1)
    s.tau = torch.where(solved, torch.minimum(s.tau, actual) * p.decrease_factor, s.tau)
    accept(s, solved, x_adv)
    return solved & (s.tau <= p.smallest_tau)


CW_LINF = AttackKind(name="cw-linf", params=CWLinfParams, attack=cw_linf, minimal_norm="linf")

"""Fast Minimum-Norm (FMN), a minimum-norm attack at L2 (`fmn`) and at L∞ (`fmn-linf`).

Pintor, Roli, Brendel & Biggio, "Fast Minimum-norm Adversarial Attacks through Adaptive Norm
Constraints", NeurIPS 2021; the procedure of adv-lib 0.2.8's `fmn` (the implementation its authors
point to), at L2. Like DDN each step moves δ along the normalised gradient of the logit margin
(step size cosine-annealed) and rescales δ onto the sphere of radius ε; unlike DDN, ε shrinks to
at most the smallest adversarial norm seen while x + δ is adversarial, and before the first
adversarial it is a linear estimate of the distance to the boundary, ‖δ‖ + |margin| / ‖∇margin‖.
γ, the factor that moves ε, is cosine-annealed too. The smallest adversarial seen is kept.

At L∞ (adv-lib's `norm=float('inf')`): the norm tracked is L∞, the boundary estimate divides the
margin by the gradient's dual (L1) norm, the step is still along the L2-normalised gradient, and
δ is clipped into the L∞ ball of radius ε instead of rescaled onto the L2 sphere: the suite's
cheap minimal-L∞ attack.

One deviation, `boundary_overshoot` (2; 1 is the paper's): before the first adversarial, ε is
‖δ‖ + 2·|margin| / ‖∇margin‖, since the linear estimate approaches the boundary from inside and on
some digits never crosses it. What it and FMN's place in the L2 best-of measured:
`bench/l2_ensemble_vs_fmn.py`, measurements in `docs/attacks.md`.
"""

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from suite.attacks.common import (
    AttackKind,
    Found,
    TargetingParams,
    cosine,
    margin_and_grad,
    per_sample,
    rows,
    step_onto_sphere,
)
from suite.limits import MAX_STEPS


class FMNParams(TargetingParams):
    """Defaults are the paper's (adv-lib's) L2 settings except `boundary_overshoot`."""

    steps: int = Field(1000, ge=1, le=MAX_STEPS)
    max_step: float = Field(1.0, gt=0, description="step size at the start of the cosine schedule")
    min_step: float = Field(0.01, gt=0, description="step size at its end")
    gamma: float = Field(0.05, gt=0, lt=1, description="ε's factor at the start of its schedule")
    min_gamma: float = Field(0.001, gt=0, lt=1, description="ε's factor at its end")
    boundary_overshoot: float = Field(
        2.0,
        ge=1,
        description="before the first adversarial, ε = ‖δ‖ + this × the linear boundary distance "
        "(1: the paper's, which found nothing on 7% of digits)",
    )


def fmn(
    *,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    params: FMNParams,
    seed: int,
    keys: np.ndarray,
) -> Found:
    """Minimise the L2 norm on a batch; `target` None means untargeted. Every sample takes `steps`
    gradient evaluations. Nothing is drawn at random (`seed` and `keys` are unused)."""
    return _fmn(model, x, y, target, params, "l2")


def fmn_linf(
    *,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    params: FMNParams,
    seed: int,
    keys: np.ndarray,
) -> Found:
    """`fmn` minimising the L∞ norm (module docstring)."""
    return _fmn(model, x, y, target, params, "linf")


_NORM_P = {"l2": (2.0, 2.0), "linf": (float("inf"), 1.0)}  # the norm's p and its dual's p


def _fmn(
    model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, params: FMNParams, norm: str
) -> Found:
    """The FMN loop of the module docstring in `norm` ("l2" or "linf")."""
    targeted = target is not None
    cls = target if targeted else y
    p, dual = _NORM_P[norm]
    out = Found.start(x)
    delta = torch.zeros_like(x)
    eps = per_sample(x, float("inf"))
    largest = torch.maximum(x, 1 - x).flatten(1).norm(p=p, dim=1)
    best = largest.clone()
    found = per_sample(x, False, torch.bool)
    for i in range(params.steps):
        step = cosine(params.max_step, params.min_step, i, params.steps)
        gamma = cosine(params.gamma, params.min_gamma, i, params.steps)
        mgn, mgn_grad = margin_and_grad(model, x + delta, cls, targeted)
        with torch.no_grad():
            is_adv = mgn < 0
            size = delta.flatten(1).norm(p=p, dim=1)
            better = is_adv & (size < best)
            out.x_adv = torch.where(rows(better), x + delta, out.x_adv)
            best = torch.where(better, size, best)
            found |= is_adv

            to_boundary = mgn.abs() / mgn_grad.flatten(1).norm(p=dual, dim=1).clamp_min(1e-12)
            not_yet = size + params.boundary_overshoot * to_boundary
            eps = torch.where(
                is_adv,
                torch.minimum(eps * (1 - gamma), best),
                torch.where(found, eps * (1 + gamma), not_yet),
            )
            eps = torch.minimum(eps, largest)
            if norm == "l2":
                delta = step_onto_sphere(x, delta, -mgn_grad, step, eps)
            else:
                delta = _step_into_box(x, delta, -mgn_grad, step, eps)
    out.grad_evals += params.steps
    return out


def _step_into_box(x: Tensor, delta: Tensor, grad: Tensor, step: float, eps: Tensor) -> Tensor:
    """FMN's L∞ move: `step` along the L2-normalised `grad`, clip δ into [−ε, ε] per sample, then
    clip x + δ to [0, 1]."""
    delta = delta + step * grad / rows(grad.flatten(1).norm(dim=1).clamp_min(1e-12))
    delta = torch.maximum(torch.minimum(delta, rows(eps)), -rows(eps))
    return (x + delta).clamp(0, 1) - x


FMN = AttackKind(name="fmn", params=FMNParams, attack=fmn, minimal_norm="l2")
FMN_LINF = AttackKind(name="fmn-linf", params=FMNParams, attack=fmn_linf, minimal_norm="linf")

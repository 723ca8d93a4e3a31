"""Fixed-budget attacks on the softmax cross-entropy: PGD (L∞, L2; Madry et al. 2018) and FGSM
(Goodfellow et al. 2015), each at a list of ε.

ε values are tried from the smallest up; a sample leaves the batch at its first adversarial, so
its returned image belongs to the smallest ε that succeeded and larger ε cost it nothing.
"""

from typing import Annotated, ClassVar

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from suite.attacks.common import AttackKind, Budget, Found, TargetingParams, ce_and_grad, hits, rows
from suite.attacks.rng import keyed_uniform
from suite.limits import MAX_RESTARTS, MAX_STEPS

Eps = Annotated[float, Field(gt=0)]


class _PGDParams(TargetingParams):
    """Settings shared by both norms; `travel` is what the report's strength check reads."""

    UNHASHED_AT: ClassVar[dict[str, object]] = {
        "restarts": 1
    }  # one start: PGD as it ran before restarts

    steps: int = Field(50, ge=1, le=MAX_STEPS)
    step_size: float = Field(0.05, gt=0, description="per-step move, as a fraction of ε")
    random_start: bool = True
    restarts: int = Field(
        1, ge=1, le=MAX_RESTARTS, description="random starts; a row still robust starts again"
    )

    @model_validator(mode="after")
    def _restarts_are_random(self) -> "_PGDParams":
        if self.restarts > 1 and not self.random_start:
            raise ValueError("restarts > 1 needs random_start = true (a restart is a new draw)")
        return self

    def travel(self) -> float:
        """The distance the steps can move, as a multiple of ε (Madry et al.: at least 2.5)."""
        return self.steps * self.step_size


class PGDLinfParams(_PGDParams):
    """ε in pixel units; 50 steps of 0.05 ε travel 2.5 ε, Madry et al.'s rule of thumb."""

    eps: list[Eps] = Field([0.05, 0.1, 0.15, 0.2, 0.25, 0.3], min_length=1)

    def budget(self) -> Budget:
        """The L∞ balls of radius ε it runs in."""
        return Budget("linf", sorted(set(self.eps)))


class PGDL2Params(_PGDParams):
    """ε is the L2 norm of the perturbation; steps as for PGDLinfParams."""

    eps: list[Eps] = Field([0.5, 1.0, 1.5, 2.0, 2.5, 3.0], min_length=1)

    def budget(self) -> Budget:
        """The L2 balls of radius ε it runs in."""
        return Budget("l2", sorted(set(self.eps)))


class FGSMParams(TargetingParams):
    """One step of ε along the gradient's sign, from the clean input (one gradient for all ε)."""

    eps: list[Eps] = Field([0.05, 0.1, 0.15, 0.2, 0.25, 0.3], min_length=1)

    def budget(self) -> Budget:
        """The L∞ balls of radius ε it runs in."""
        return Budget("linf", sorted(set(self.eps)))


def pgd(
    *,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    params: PGDLinfParams | PGDL2Params,
    seed: int,
    keys: np.ndarray,
) -> Found:
    """Run PGD in each ε ball of `params.budget()`, smallest first, `params.restarts` times on the
    rows no earlier start fooled (Madry et al.'s random restarts); `keys` name each row's random
    starts (see rng.keyed_uniform)."""
    targeted = target is not None
    cls = target if targeted else y
    out = Found.start(x)
    live = torch.arange(len(x), device=x.device)
    norm, eps_list = params.budget()
    for j, eps in enumerate(eps_list):
        for restart in range(params.restarts):
            live = _pgd_ball(
                model, x, cls, targeted, live, out, params, (eps, norm), seed, (j, restart), keys
            )
            if not len(live):
                return out
    return out


def _pgd_ball(
    model: nn.Module,
    x: Tensor,
    cls: Tensor,
    targeted: bool,
    live: Tensor,
    out: Found,
    params: PGDLinfParams | PGDL2Params,
    ball: tuple[float, str],
    seed: int,
    draw: tuple[int, int],
    keys: np.ndarray,
) -> Tensor:
    """One PGD run in the `ball` (ε, norm) on the `live` rows, from the random start `draw`
    (ε index, restart); records each row's first adversarial in `out` and returns the rows
    still robust."""
    (eps, norm), (j, restart) = ball, draw
    xs, cs = x[live], cls[live]
    if params.random_start:
        stream = 1000 * restart + j  # restart 0 keeps the draws of a single-start PGD
        delta = _random_start(xs, eps, norm, seed, stream, keys[live.cpu().numpy()])
    else:
        delta = torch.zeros_like(xs)
    for step in range(params.steps + 1):
        x_adv = (xs + delta).clamp(0, 1)
        if step < params.steps:
            logits, grad = ce_and_grad(model, x_adv, cs, targeted)
            out.grad_evals[live] += 1
        else:
            with torch.no_grad():
                logits = model(x_adv)
        with torch.no_grad():
            won = hits(logits.argmax(1), cs, targeted)
            out.x_adv[live[won]] = x_adv[won]
            if won.any():
                live, xs, cs, delta = live[~won], xs[~won], cs[~won], delta[~won]
            if step == params.steps or not len(live):
                break
            grad = grad[~won]
            delta = project_to_ball(
                delta + params.step_size * eps * steepest_direction(grad, norm), eps, norm
            )
            delta = (xs + delta).clamp(0, 1) - xs
    return live


def fgsm(
    *,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    params: FGSMParams,
    seed: int,
    keys: np.ndarray,
) -> Found:
    """One signed-gradient step of size ε from the clean input, for each ε of `params.eps`. Nothing
    is drawn at random (`seed` and `keys` are unused)."""
    targeted = target is not None
    cls = target if targeted else y
    out = Found.start(x)
    _, grad = ce_and_grad(model, x, cls, targeted)
    out.grad_evals += 1
    pending = torch.ones(len(x), dtype=torch.bool, device=x.device)
    with torch.no_grad():
        for eps in params.budget().eps:
            x_adv = (x + eps * grad.sign()).clamp(0, 1)
            won = pending & hits(model(x_adv).argmax(1), cls, targeted)
            out.x_adv[won] = x_adv[won]
            pending &= ~won
    return out


def steepest_direction(grad: Tensor, norm: str) -> Tensor:
    """The unit-norm ascent direction for the given norm."""
    if norm == "linf":
        return grad.sign()
    return grad / rows(grad.flatten(1).norm(dim=1).clamp_min(1e-12))


def project_to_ball(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Nearest point of the ε-ball."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    scale = (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1)
    return delta * rows(scale)


def _random_start(x: Tensor, eps: float, norm: str, seed: int, j: int, keys: np.ndarray) -> Tensor:
    """A uniform draw from the ε-ball, keyed per row and per ε so batching does not change it."""
    d = x[0].numel()
    u = torch.from_numpy(keyed_uniform(seed, 100 + j, keys, d)).float().view_as(x).to(x.device)
    if norm == "linf":
        return eps * (2 * u - 1)
    direction = torch.special.ndtri(u)
    direction = direction / rows(direction.flatten(1).norm(dim=1))
    radius = torch.from_numpy(keyed_uniform(seed, 200 + j, keys, 1)[:, 0]).float() ** (1 / d)
    return eps * rows(radius.to(x.device)) * direction


PGD_LINF = AttackKind(
    name="pgd-linf",
    params=PGDLinfParams,
    attack=pgd,
    budget=PGDLinfParams.budget,
    softmax_gradient=True,
)
PGD_L2 = AttackKind(
    name="pgd-l2", params=PGDL2Params, attack=pgd, budget=PGDL2Params.budget, softmax_gradient=True
)
FGSM = AttackKind(
    name="fgsm",
    params=FGSMParams,
    attack=fgsm,
    budget=FGSMParams.budget,
    softmax_gradient=True,
    single_step=True,
)

"""AutoAttack (Croce & Hein, ICML 2020) at a list of ε, from the authors' code (PyPI `pyautoattack`).

The ensemble runs its components in the authors' order (standard: APGD-CE, APGD-T, FAB-T, Square),
each on the digits no earlier component fooled — the loop of `run_standard_evaluation`, one
component per call so the records can name which one succeeded. ε values are tried from the
smallest up; a digit leaves at its first adversarial, as in PGD.
"""

from typing import Annotated, Literal

import numpy as np
import torch
from pyautoattack import AutoAttack
from pydantic import Field, model_validator
from torch import Tensor, nn

from suite.attacks.common import AttackKind, AttackParams, Budget, Found
from suite.limits import MAX_STEPS

Eps = Annotated[float, Field(gt=0)]
Component = Literal["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
GRADIENT_FREE_COMPONENTS = frozenset({"square"})  # score-based: queries outputs, no gradient
DEFAULT_EPS = {"linf": [0.1, 0.2, 0.3], "l2": [1.0, 1.5, 2.0]}  # MNIST conventions
_NORMS = {"linf": "Linf", "l2": "L2"}


class AutoAttackParams(AttackParams):
    """`version = "standard"` is the published evaluation. `iterations` and `square_queries` are the
    authors' budgets (100 and 5,000); lower them only for tests. AutoAttack is untargeted (APGD-T and
    FAB-T pick their own targets)."""

    targeted: Literal[False] = False
    norm: Literal["linf", "l2"] = "linf"
    eps: list[Eps] | None = Field(None, min_length=1, description="default: MNIST ε of the norm")
    version: Literal["standard", "plus", "rand", "custom"] = "standard"
    attacks: list[Component] | None = Field(
        None, min_length=1, description='components, in order; only with version = "custom"'
    )
    iterations: int = Field(100, ge=1, le=MAX_STEPS, description="APGD and FAB iterations")
    square_queries: int = Field(5000, ge=1, le=MAX_STEPS)

    @model_validator(mode="after")
    def _defaults_and_custom(self) -> "AutoAttackParams":
        if (self.version == "custom") != (self.attacks is not None):
            raise ValueError('`attacks` is given exactly when version = "custom"')
        if self.eps is None:
            self.eps = list(DEFAULT_EPS[self.norm])
        return self

    def budget(self) -> Budget:
        """The balls of radius ε in `norm` it runs in."""
        return Budget(self.norm, sorted(set(self.eps or [])))

    def gradient_free(self) -> bool:
        """Whether it runs only components that use no gradient of the model (custom: Square)."""
        return set(self.attacks or ()) <= GRADIENT_FREE_COMPONENTS and self.version == "custom"


class _Counted(nn.Module):
    """`model`, counting the rows it evaluates (forward passes, with or without a gradient)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += len(x)
        return self.model(x)


def autoattack(
    *,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    params: AutoAttackParams,
    seed: int,
    keys: np.ndarray,
) -> Found:
    """Run AutoAttack on every row of `x` (all classified correctly) at each ε of `params.eps`
    (untargeted: `target` is always None; `keys` are unused, see below). Returns
    the images with `component` naming the attack that fooled each row ("" where none did) and
    `grad_evals` the model rows each component spent per attacked row, summed. The authors' code
    seeds torch's global generator; it is forked here so the caller's stream is untouched. Random
    starts are drawn per call, so results depend on the batch (the checkpoint folder names it)."""
    counted = _Counted(model)
    out = Found.start(x)
    out.component = np.full(len(x), "", dtype=object)
    live = torch.arange(len(x), device=x.device)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for eps in params.budget().eps:
            aa = _ensemble(counted, params, eps, seed, x.device)
            for name in list(aa.attacks_to_run):
                if not len(live):
                    return out
                aa.attacks_to_run = [name]
                counted.rows = 0
                x_adv, y_adv = aa.run_standard_evaluation(x[live], y[live], batch_size=len(live))
                out.grad_evals[live] += round(counted.rows / len(live))
                won = y_adv != y[live]
                out.x_adv[live[won]] = x_adv[won]
                out.component[live[won].cpu().numpy()] = name
                live = live[~won]
    return out


def _ensemble(model: nn.Module, p: AutoAttackParams, eps: float, seed: int, device) -> AutoAttack:
    """The authors' AutoAttack at one ε, with the budgets of `p` applied after its version's."""
    aa = AutoAttack(
        model, norm=_NORMS[p.norm], eps=eps, seed=seed, version=p.version, attacks=p.attacks,
        device=device,
    )  # fmt: skip
    aa.verbose = False
    for attack in (aa.apgd, aa.apgd_targeted, aa.fab):
        attack.n_iter = p.iterations
    aa.square.n_queries = p.square_queries
    return aa


AUTOATTACK = AttackKind(
    name="autoattack",
    params=AutoAttackParams,
    attack=autoattack,
    budget=AutoAttackParams.budget,
    ensemble=True,
    gradient_free=AutoAttackParams.gradient_free,
)

"""Carlini & Wagner (2017) L2 attack, batched over samples.

minimise ‖x' − x‖²₂ + c · max(f6(x'), −κ) over w with x' = (tanh(w) + 1) / 2, with Adam; a
per-sample binary search over c (×10 until the first success, then bisection); the smallest
adversarial seen at any step of any search step is kept. Each sample runs its own schedule in
one shared batch: when a sample finishes a search step it restarts alone (its own Adam state)
while the others continue, and it leaves the batch once its search is over.

Strength is checked against foolbox 3.3's L2CarliniWagnerAttack by bench/attack_vs_foolbox.py
(cw-mnist 12 epochs on 4,000 mnist-5k digits, 100 held-out digits, one batch). Run to the full
budget, as by default here, ours matches it within ±0.02% median L2, all at 100% success. On the
CPU (ours vs foolbox): 1.508481 vs 1.508408 at initial c 0.01, 5 × 1,000; 1.491339 vs 1.491430
at 0.01, 9 × 1,000; 1.524775 vs 1.525179 at 1e-3, 5 × 1,000; 1.502027 vs 1.501785 at 1e-3,
9 × 1,000. On the weights that the cosine schedule below was measured on: 1.474215 vs 1.474640
at 0.01, 5 × 1,000 (no larger on 57 of 100 digits, median ratio 0.999995). On an H200 (other
weights), 1.3517 vs 1.3515 at 0.01, 5 × 1,000.

Budget savers, each measured against the same attack without it; issue 17's rule drops one that
costs more than 0.2% median L2. None is on by default; the manifests run `abort_failing` only
with the cosine schedule at lr 0.1 (below), where it is measured again.
- `abort_failing`, the stall check applied only to a search step that has found no adversarial
  (such a step usually fails and only raises c): free at 5 binary steps (1.508481 at c 0.01 with
  2,976 instead of 5,000 gradient evaluations per digit; 1.524775 at 1e-3), but +0.43% at 1e-3,
  9 × 1,000 (1.508481 for 5,267 evaluations): there, the last bisection steps sit just above the
  smallest c that succeeds, find their adversarial late, and are cut before they do.
- `abort_converged`, a step that found an adversarial ends once its smallest adversarial shrank
  by less than 0.1% over 100 iterations: with `abort_failing` at c 0.01, 1.508678 (+0.013%) for
  2,552 evaluations at 5 × 1,000 and 1.491339 (±0) for 4,990 at 9 × 1,000. Its window at 50 cost
  +0.09%; its tolerance at 0.5%, +0.46%.
- the per-sample early abort on the loss (`abort_early`): +2.5% (H200, 2,056 evaluations).
- Not kept, measured on the CPU at c 0.01, 5 × 1,000 with `abort_failing`: warm starts (each
  search step from the best adversarial so far instead of δ = 0): Adam reset, +3.0% (H200); Adam
  state kept, +1.7% (H200) and +2.3%; at a tenth of the learning rate, +4.0%; from 90% of the
  way to it, +1.3%. The paper restarts at δ = 0. A cosine decay of lr 0.01 within each step:
  +3.9%. Adam's β₂ at 0.99 or 0.95 instead of 0.999: +1.4%, +6.5%.
Where the evaluations go (a trace at c 0.01, 5 × 1,000): most digits search c = 0.01, 0.1 (both
fail), 1, 0.55, 0.325; each successful step, restarted at δ = 0, needs 250–500 iterations to reach
a small adversarial and then shrinks it nearly to its end (the final best is found at iteration
980 of 1,000 at the median). That work is what is left once failing steps are cut, and no rule
measured above cuts it: none reaches a third of foolbox's evaluations (issue 17's target) without
giving up distortion.

What reaches it is a larger step that settles, with one rule: `lr_schedule = "cosine"` at lr 0.1
(off by default; t50/t80/t100/seed-replication run it at 9 × 400). Each search step runs 400
iterations; Adam's rate rises linearly over the first 100 (`lr_warmup`) and decays by a cosine to
a tenth of lr (`lr_final`) at the last; a step that found no adversarial ends once its loss
stalls over 20 iterations (`abort_failing`, `abort_window = 20`). Against foolbox at lr 0.01 ×
1,000 (bench/attack_vs_foolbox.py's "short"; 100 digits, CPU, one thread; ours vs foolbox; per
digit: the share of digits where ours is no larger, and the median and mean ratio ours /
foolbox; held-out accuracy 0.9780):
    c 0.01, 5 steps: 1.473816 vs 1.474640, 1,234 vs 3,802 evaluations (0.32×); 64%, 0.99980, 1.00065
    c 0.01, 9 steps: 1.465513 vs 1.474447, 2,419 vs 7,802 (0.31×); 63%, 0.99977, 0.99688
    c 1e-3, 5 steps: 1.490579 vs 1.490703, 959 vs 3,003 (0.32×); 67%, 0.99966, 0.99622
    c 1e-3, 9 steps: 1.465513 vs 1.474447, 2,155 vs 7,003 (0.31×); 63%, 0.99980, 0.99611
all at 100% success. The same recipe trains other weights on other CPUs (the kernels sum in
another order), and the numbers above this paragraph came from such other weights. The rule was
first tuned there with a 10-iteration warm-up at 350 iterations and a 25-iteration window, which
won all four settings by 0.8–1.9% in medians (58–60% of digits no larger) but lost all four on
the weights above by 0.04–0.4%: a tie per digit (47–52%, median ratio 1.0000) where about one
digit in ten ended 2–9% above foolbox, and the digits near the median had not quite settled.
What fixed each, measured on those weights at c 0.01, 5 steps unless said:
- the 100-iteration warm-up: on the eight worst digits, a first phase at lr 0.1 leaps into a
  farther stretch of the same class's region (digit 70: 1.537 at 350 iterations, still 1.536 at
  1,000, against foolbox's 1.475; warm-up 50: 1.537; 100: 1.478; 175: 1.476). Mean ratio on the
  eight: 1.036 (warm-up 10), 1.019 (50), 1.017 (100). On all 100 at 350 iterations the tail
  shrank (95th percentile of the ratio 1.025 → 1.009) but the median digit did not settle
  (median ratio 1.00008; median 1.477571 vs 1.474640).
- 400 iterations: median ratio 0.99977, 65% no larger, median 1.473816 (500 iterations: 0.99951,
  84%, 1.465248, but 1,494 evaluations, over a third of foolbox's). A decay to 0.05 of lr
  instead of a tenth, at 350: 1.466322 in median but per digit still 1.00015 and 47%.
- the 20-iteration window instead of 25: the same L2 on every digit at c 1e-3, 5 steps, for 959
  instead of 995 evaluations (a third of foolbox's there is 1,001).
Measured earlier on the other weights, and kept:
- lr 0.1 at a constant rate, 250 iterations: 1.508433 (foolbox 1.508408) at 1,250 evaluations,
  but per digit 26%, 1.00156, 1.00789: the last iterations step about lr per pixel and cannot
  settle on the boundary. lr 0.05 × 260: 1.516469 (23%); lr 0.2: 1.517881; lr 0.5: 1.567825.
- the cosine decay to a tenth: per digit 34% → 58% with `abort_failing` at 400 iterations. To a
  hundredth: 1.529829 at c 1e-3 (a tenth: 1.499541), per digit alike. An exponential decay to a
  tenth: 1.533802.
- a warm-up at all: without one, the first Adam step (about lr per pixel) crosses the boundary
  of a digit that lies 0.08 from it at any c, so the search takes every c for a success, bisects
  c towards 0 and returns that first leap (L2 0.185 against foolbox's 0.080); with it, 0.080.
- `abort_failing`: at lr 0.1 a step that fails stalls within 50 iterations, and the evaluations
  it saves pay for the steps that succeed. It cost nothing: without it, the same L2 on every
  digit at c 0.01, 5 steps (1,750 evaluations instead of 1,138) and within 2e-9 at 1e-3, 9 steps.
A second set of weights (`--epochs 10`, c 1e-3): at 5 steps 1.4537 vs foolbox 1.4734 (979 vs
3,103 evaluations; 66%, 0.99969, 0.99493); at 9 steps 1.4523 vs 1.4493 (2,187 vs 7,004; 68%,
0.99969, 0.99630), a median above foolbox's by 0.21% through one digit near it (digit 65:
foolbox's search found 1.4486 at a small c where ours, its failing step cut by the stall check,
kept 1.6205). Without `abort_failing`, or with `abort_tolerance = 1e-4`, ours finds 1.4201 there;
that tolerance costs 1,035 evaluations at c 1e-3, 5 steps on the weights above (over a third of
foolbox's 3,003) for the same L2 on every digit, so the manifests keep 1e-3.
A cosine decay at the paper's lr 0.01 is what costs +3.9% (above): it only slows a step that is
still far from the boundary at iteration 1,000. A median of 100 digits moves by ±0.2% between
weights, and a winning margin that small is luck: the per-digit shares and ratios above are the
steadier measure, and bench/attack_vs_foolbox.py prints both.
"""

import itertools
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from suite.attacks.common import (
    AttackKind,
    Found,
    TargetingParams,
    adam_step,
    cosine,
    from_tanh_space,
    margin_and_grad,
    per_sample,
    rows,
    to_tanh_space,
)
from suite.attacks.search import (
    SearchState,
    reset_where,
    retire_finished,
    solve_over,
    stall,
    start,
)
from suite.limits import MAX_BINARY_STEPS, MAX_STEPS

CONVERGED_WINDOW = 100
CONVERGED_TOLERANCE = 1e-3
"""The `abort_converged` rule: the smallest adversarial of a search step stopped shrinking when
it shrank by less than this fraction over this many iterations (chosen by measurement, above)."""


class CWL2Params(TargetingParams):
    """Defaults are those of the paper's code (the paper ran max_iterations = 10,000), except the
    early abort, off by default because it weakens the attack (module docstring). When on, a
    sample ends its search step when its loss fell by less than 0.1% over the last 50 iterations
    (the paper's code: 0.01% over max_iterations / 10, on the batch's summed loss)."""

    # settings added after results were stored, left out of the hash at their "as before" value:
    # never change these defaults, or results stored with them would be taken for the new ones
    UNHASHED_AT: ClassVar[dict[str, object]] = {
        "abort_failing": False,
        "abort_converged": False,
        "lr_schedule": "constant",
        "lr_final": 0.1,
        "lr_warmup": 100,
    }

    binary_steps: int = Field(9, ge=1, le=MAX_BINARY_STEPS)
    max_iterations: int = Field(1000, ge=1, le=MAX_STEPS)
    lr: float = Field(1e-2, gt=0)
    initial_const: float = Field(1e-3, gt=0)
    confidence: float = Field(0.0, ge=0)
    abort_early: bool = False
    abort_failing: bool = Field(
        False,
        description="the stall check only for search steps that found no adversarial yet "
        "(+0.43% median L2 at 9 binary steps: module docstring)",
    )
    abort_converged: bool = Field(
        False,
        description="a search step that found an adversarial ends once its smallest one shrank "
        f"by less than {CONVERGED_TOLERANCE:.1%} over {CONVERGED_WINDOW} iterations",
    )
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="Adam's learning rate within a search step: the paper's constant lr, or a "
        "cosine decay from lr to lr_final × lr at its last iteration (module docstring)",
    )
    lr_final: float = Field(0.1, gt=0, le=1, description="the cosine decay's end, a fraction of lr")
    lr_warmup: int = Field(
        100,
        ge=0,
        le=MAX_STEPS,
        description="the cosine schedule's first iterations, over which the rate rises linearly "
        "from lr / lr_warmup (0: none), so that the first step cannot leap over a near boundary",
    )
    abort_window: int = Field(50, ge=1, le=MAX_STEPS, description="iterations between stall checks")
    abort_tolerance: float = Field(
        1e-3, gt=0, lt=1, description="a loss that fell by less than this fraction stalls"
    )

    @model_validator(mode="after")
    def _schedule_settings_need_the_schedule(self) -> "CWL2Params":
        """A changed lr_final/lr_warmup under the constant rate would be silently ignored.

        Compared with the defaults, not with the fields set, so that a stored, fully
        dumped parameter set validates again.
        """
        defaults = type(self).model_fields
        stray = [f for f in ("lr_final", "lr_warmup") if getattr(self, f) != defaults[f].default]
        if stray and self.lr_schedule == "constant":
            raise ValueError(f'{" and ".join(stray)} set: add lr_schedule = "cosine" to use them')
        return self

    @property
    def stall_check(self) -> bool:
        """The early abort ends a stalled solve."""
        return self.abort_early


@dataclass
class _State(SearchState):
    lower: Tensor
    upper: Tensor
    search_step: Tensor
    found: Tensor  # adversarial seen during the current search step
    best_l2sq: Tensor  # squared L2 of `adv`
    step_best: Tensor  # L2 of the closest adversarial of the current search step (inf: none yet)
    step_best_at_check: Tensor


def cw_l2(
    *,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    params: CWL2Params,
    seed: int,
    keys: np.ndarray,
) -> Found:
    """Run the attack on a batch; `target` None means untargeted. Nothing is drawn at random
    (`seed` and `keys` are unused)."""
    targeted = target is not None
    out = Found.start(x)
    s = _initial_state(x, target if targeted else y, params)
    for i in itertools.count(1):
        x_adv, dx_dw = from_tanh_space(s.w)
        mgn, mgn_grad = margin_and_grad(model, x_adv, s.cls, targeted)

        with torch.no_grad():
            s.grad_evals += s.active.long()
            delta = x_adv - s.x
            l2sq = delta.flatten(1).square().sum(1)
            hinge = (mgn + params.confidence).clamp_min(0)
            loss = l2sq + s.const * hinge
            is_adv = (mgn + params.confidence < 0) & s.active
            _keep_best(s, x_adv, l2sq, is_adv)
            s.found |= is_adv

            grad = (2 * delta + rows((s.const * (hinge > 0)).float()) * mgn_grad) * dx_dw
            s.w, s.m, s.v, s.t = adam_step(s.w, grad, s.m, s.v, s.t, _learning_rate(s, params))

            end = solve_over(s, loss, params)
            if params.abort_failing and not params.abort_early:
                stalled, s.loss_at_check = stall(
                    loss, s.loss_at_check, s.it, params.abort_window, params.abort_tolerance
                )
                end |= stalled & ~s.found
            if params.abort_converged:
                s.step_best = torch.where(is_adv, s.step_best.minimum(l2sq.sqrt()), s.step_best)
                converged, s.step_best_at_check = stall(
                    s.step_best, s.step_best_at_check, s.it, CONVERGED_WINDOW, CONVERGED_TOLERANCE
                )
                end |= converged
            _next_search_step(s, s.active & end, params)
            s = retire_finished(out, s, s.search_step >= params.binary_steps, i, params)
            if not len(s.idx):
                return out


def _initial_state(x: Tensor, cls: Tensor, p: CWL2Params) -> _State:
    f64 = torch.float64
    return start(
        _State,
        x,
        cls,
        p.initial_const,
        lower=per_sample(x, 0.0, f64),
        upper=per_sample(x, float("inf"), f64),
        search_step=per_sample(x, 0, torch.int64),
        found=per_sample(x, False, torch.bool),
        best_l2sq=per_sample(x, float("inf"), f64),
        step_best=per_sample(x, float("inf")),
        step_best_at_check=per_sample(x, float("inf")),
    )


def _learning_rate(s: _State, p: CWL2Params) -> float | Tensor:
    """Adam's learning rate for each row at its iteration of the current search step."""
    if p.lr_schedule == "constant":
        return p.lr
    rate = cosine(p.lr, p.lr * p.lr_final, s.t, p.max_iterations)
    if p.lr_warmup:
        rate = rate * ((s.t + 1) / p.lr_warmup).clamp(max=1)
    return rate


def _keep_best(s: _State, x_adv: Tensor, l2sq: Tensor, is_adv: Tensor) -> None:
    """Remember, per sample, the closest adversarial seen so far (and the c that found it)."""
    better = is_adv & (l2sq < s.best_l2sq)
    s.adv = torch.where(rows(better), x_adv, s.adv)
    s.best_l2sq = torch.where(better, l2sq.double(), s.best_l2sq)
    s.adv_const = torch.where(better, s.const, s.adv_const)


def _next_search_step(s: _State, end: Tensor, p: CWL2Params) -> None:
    """Binary-search update of c for the rows whose Adam run ended, then restart them at δ = 0."""
    success, failure = end & s.found, end & ~s.found
    s.upper = torch.where(success, torch.minimum(s.upper, s.const), s.upper)
    s.lower = torch.where(failure, torch.maximum(s.lower, s.const), s.lower)
    next_const = torch.where(s.upper.isinf(), s.const * 10, (s.lower + s.upper) / 2)
    s.const = torch.where(end, next_const, s.const)
    s.search_step += end.long()
    if p.binary_steps >= 10:  # the paper's code repeats the last step at the upper bound
        last = end & (s.search_step == p.binary_steps - 1)
        s.const = torch.where(last, s.upper.clamp(max=1e10), s.const)
    reset_where(
        s, end, w=to_tanh_space(s.x), m=0.0, v=0.0, t=0.0, it=0,
        loss_at_check=float("inf"), found=False, step_best=float("inf"),
        step_best_at_check=float("inf"),
    )  # fmt: skip


CW_L2 = AttackKind(name="cw-l2", params=CWL2Params, attack=cw_l2, minimal_norm="l2")

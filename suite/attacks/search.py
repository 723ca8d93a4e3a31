"""The per-sample search of the C&W attacks (L2, L∞, L0): the state of the samples still in the
batch and its bookkeeping. Each sample runs its own schedule of Adam solves in one shared batch,
restarts alone, and leaves the batch, its result written out, once its search is over.

The loops never wait on the device between syncs: every per-sample decision is a mask, and the
host reads one (`retire_finished`) every `SYNC_EVERY` iterations only."""

import dataclasses
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch
from torch import Tensor

from suite.attacks.common import Found, per_sample, rows, to_tanh_space


@dataclass
class SearchState:
    """Per-sample state of the active samples (leading dimension = active batch): every field is a
    per-sample tensor. Each attack subclasses it with its own fields."""

    idx: Tensor  # row in the caller's batch
    x: Tensor
    cls: Tensor
    w: Tensor
    m: Tensor
    v: Tensor
    t: Tensor
    const: Tensor
    it: Tensor
    loss_at_check: Tensor
    adv: Tensor  # the image to return: the best (L2) or last (L∞, L0) success, else the clean one
    adv_const: Tensor  # the c that found `adv` (NaN before any success)
    grad_evals: Tensor
    active: Tensor  # False once the sample's search is over (it leaves at the next sync)


S = TypeVar("S", bound=SearchState)

SYNC_EVERY = 50
"""Iterations between the host syncs that drop finished samples from the batch (the loops have no
other): until the next one a finished sample stays in the batch, masked by `active` so that it
neither counts gradient evaluations nor changes its result."""


class SolveSettings(Protocol):
    """The settings of one Adam solve that every C&W attack has."""

    max_iterations: int
    stall_check: bool  # whether a solve whose loss stalls ends early
    abort_window: int
    abort_tolerance: float


class ConstSettings(SolveSettings, Protocol):
    """The settings of the C&W L∞ and L0 searches over c: a failed solve multiplies c by
    `const_factor` until it reaches `largest_const`."""

    const_factor: float
    largest_const: float


def start(state: type[S], x: Tensor, cls: Tensor, const: float, **extra: Tensor) -> S:
    """Every sample at δ = 0 with a fresh Adam state and constant `const`, nothing found yet;
    `extra` holds the attack's own fields."""
    f64 = torch.float64
    return state(
        idx=torch.arange(len(x), device=x.device),
        x=x,
        cls=cls,
        w=to_tanh_space(x),
        m=torch.zeros_like(x),
        v=torch.zeros_like(x),
        t=per_sample(x, 0.0),
        const=per_sample(x, const, f64),
        it=per_sample(x, 0, torch.int64),
        loss_at_check=per_sample(x, float("inf"), f64),
        adv=x.clone(),
        adv_const=per_sample(x, float("nan"), f64),
        grad_evals=per_sample(x, 0, torch.int64),
        active=per_sample(x, True, torch.bool),
        **extra,
    )


def stall(
    loss: Tensor, loss_at_check: Tensor, it: Tensor, every: int, tolerance: float
) -> tuple[Tensor, Tensor]:
    """C&W's early abort, per sample: every `every` iterations, a sample whose loss fell by less
    than the fraction `tolerance` since the previous check has stalled. Returns (stalled, the
    loss to compare with at the next check)."""
    check = it % every == 0
    stalled = check & (loss > (1 - tolerance) * loss_at_check)
    return stalled, torch.where(check, loss, loss_at_check)


def solve_over(s: SearchState, loss: Tensor, p: SolveSettings) -> Tensor:
    """Count one iteration of every sample's solve; the active samples whose solve is over: out
    of iterations, or stalled when the stall check is on."""
    stalled = torch.zeros_like(loss, dtype=torch.bool)
    if p.stall_check:
        stalled, s.loss_at_check = stall(
            loss, s.loss_at_check, s.it, p.abort_window, p.abort_tolerance
        )
    s.it += 1
    return (stalled | (s.it >= p.max_iterations)) & s.active


def accept(s: SearchState, solved: Tensor, x_adv: Tensor) -> None:
    """The solved rows' images become the ones they return (with their c), and they solve again
    from there with a fresh Adam state (the warm start of the paper's L∞ and L0 code)."""
    s.adv = torch.where(rows(solved), x_adv, s.adv)
    s.adv_const = torch.where(solved, s.const, s.adv_const)
    reset_where(
        s, solved, w=to_tanh_space(x_adv), m=0.0, v=0.0, t=0.0, it=0, loss_at_check=float("inf")
    )


def raise_const(s: SearchState, failed: Tensor, p: ConstSettings) -> Tensor:
    """Multiply c for the rows whose solve failed (they keep their Adam state, as the paper's code
    does); returns the rows that reached the largest c, whose search is over."""
    s.const = torch.where(failed, s.const * p.const_factor, s.const)
    reset_where(s, failed, it=0, loss_at_check=float("inf"))
    return failed & (s.const >= p.largest_const)


def retire_finished(out: Found, s: S, done: Tensor, i: int, p: SolveSettings) -> S:
    """Mark the `done` samples inactive; at every `SYNC_EVERY`-th iteration `i` (or every
    `max_iterations`-th, if fewer), write out the inactive ones and drop them from the batch: the
    loop's only host sync."""
    s.active &= ~done
    if i % min(SYNC_EVERY, p.max_iterations) == 0 and not s.active.all():
        return _retire(out, s, ~s.active)
    return s


def _retire(out: Found, s: S, done: Tensor) -> S:
    """Write the results of the `done` rows into `out` and drop them from the active set."""
    idx = s.idx[done]
    out.x_adv[idx] = s.adv[done]
    out.const[idx] = s.adv_const[done]
    out.grad_evals[idx] = s.grad_evals[done]
    return keep_rows(s, ~done)


def keep_rows(state: S, keep: Tensor) -> S:
    """The active set without the samples that are done."""
    return dataclasses.replace(
        state, **{f.name: getattr(state, f.name)[keep] for f in dataclasses.fields(state)}
    )


def reset_where(state: SearchState, end: Tensor, **values: Tensor | float | bool) -> None:
    """Set the named per-sample fields of the rows in `end` to `values` (tensors or scalars)."""
    for name, value in values.items():
        cur = getattr(state, name)
        mask = end.view(-1, *([1] * (cur.dim() - 1)))
        value = torch.as_tensor(value, dtype=cur.dtype, device=cur.device)
        setattr(state, name, torch.where(mask, value, cur))

"""Exact minimal L∞ or L1 adversarial distortion by mixed-integer linear programming (the encoding
of Tjeng, Xiao & Tedrake 2019, MIPVerify), solved by HiGHS through its own interface (`highspy`).

Per digit and per class that CROWN cannot rule out inside the ball of the best distortion known,
one program minimises the distortion t of an input in the pixel box where that class reaches the
label's logit (L∞: |x − x₀| ≤ t per pixel; L1: t = Σ e with e ≥ |x − x₀|, Tjeng et al.'s L1
encoding), every ReLU encoded exactly (a binary per unstable neuron, big-M
from its pre-activation bounds over that ball; stable neurons are linear or zero). Classes run
from the most reachable; each program's t is capped by the best found so far, whose smaller ball
gives the next ones tighter bounds. The result is the bracket [smallest dual bound over the
classes, best witness], solved when it is narrower than `tolerance` (HiGHS's absolute gap).
Deviations from Tjeng et al.: CROWN bounds instead of LP-tightened ones, and HiGHS's primal
heuristics off (sub-MIPs took most of the time on MNIST MLPs, `bench/exact_speed.py`). Issue 30.
"""

import os
import sys
import time
from dataclasses import dataclass
from functools import cache

import highspy
import numpy as np
import torch
from scipy import sparse
from torch import Tensor

from suite.verify.bounds import Norm, crown_bounds, linear_backward, pre_activation_bounds
from suite.verify.network import Affine, Op, ReLU, piecewise_linear

NONE_WITHIN = "none within eps_max"
"""The status of a digit proved clean up to eps_max (no adversarial inside it)."""
EXACT_NORMS = ("linf", "l1")
"""The norms the programs encode exactly (an L2 ball is not linear)."""

HEURISTICS_OFF = {
    "mip_heuristic_effort": 0.0,
    **{
        f"mip_heuristic_run_{name}": False
        for name in (
            "rins",
            "rens",
            "root_reduced_cost",
            "zi_round",
            "shifting",
            "feasibility_jump",
        )  # fmt: skip
    },
}
"""HiGHS options that stop it searching for feasible points by sub-MIPs: the per-class programs
find their witness by branching, and the heuristics cost most of each solve's time."""


@dataclass(frozen=True)
class Exact:
    """One digit's result: `value` the minimal distortion (to the tolerance) where `solved`,
    else NaN; `lower` and `upper` the bracket proved (`upper` is inf where it found no
    adversarial within eps_max, and then `lower` is eps_max: none exists inside it)."""

    value: float
    lower: float
    upper: float
    solved: bool
    status: str
    seconds: float


def affine_blocks(ops: list[Op]) -> list[tuple[sparse.csr_matrix, np.ndarray]]:
    """The network as (W, b) per block of affine maps between ReLUs (consecutive maps multiplied),
    W as a sparse matrix on the flattened block input."""
    blocks: list[tuple[sparse.csr_matrix, np.ndarray]] = []
    current: list[Affine] = []
    for op in [*ops, ReLU()]:
        if isinstance(op, ReLU):
            blocks.append(_matrix(current))
            current = []
        else:
            current.append(op)
    return blocks


def _matrix(maps: list[Affine]) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The composition of `maps` as W (rows: outputs, columns: inputs) and b, read off its
    transpose applied to the identity of its output."""
    out_shape = maps[-1].out_shape
    units = int(np.prod(out_shape))
    eye = torch.eye(units, dtype=maps[-1].bias.dtype).view(1, units, *out_shape)
    a, bias = linear_backward(list(maps), eye, [])
    return sparse.csr_matrix(a[0].flatten(1).double().numpy()), bias[0].double().numpy()


def minimal_distortion(
    ops: list[Op],
    x: Tensor,
    label: int,
    eps_max: float,
    *,
    norm: Norm = "linf",
    floor: float = 0.0,
    known: float | None = None,
    tolerance: float = 1e-4,
    time_limit: float = 60.0,
) -> Exact:
    """The minimal `norm` (EXACT_NORMS) distortion of one digit `x` ([1, *shape]) in
    [floor, eps_max] to within `tolerance`: per class CROWN cannot rule out, one program
    minimising it (see the module's docstring). `floor` is best the certified radius; `known` the
    distortion of an adversarial already found (an attack's, checked by the model), which caps
    the first ball."""
    if norm not in EXACT_NORMS:
        raise ValueError(f"exact: norm {norm!r} is not encoded; choose from {EXACT_NORMS}")
    if not piecewise_linear(ops):
        raise ValueError("exact: the network is not piecewise linear (instance norm)")
    start = time.perf_counter()
    blocks = affine_blocks(ops)
    found = known is not None and floor < known <= eps_max
    best = known if found else eps_max
    lower, status = best, "optimal"
    if found and best - floor <= tolerance:
        return Exact(best, floor, best, True, "optimal", time.perf_counter() - start)
    for target in _reachable(ops, x, label, best, norm):
        left = time_limit - (time.perf_counter() - start)
        if left <= 0:
            lower, status = floor, "time limit"
            break
        value, bound, done = _minimise(
            blocks, ops, x, label, target, norm, floor, best, tolerance, left
        )
        if value is not None and value < best:
            best, found = value, True
        lower = min(lower, bound)
        if not done:
            status = "time limit"
    seconds = time.perf_counter() - start
    lower = max(min(lower, best), floor)
    if not found:
        if status == "optimal":
            return Exact(np.nan, eps_max, np.inf, False, NONE_WITHIN, seconds)
        return Exact(np.nan, lower, np.inf, False, status, seconds)
    if status == "optimal" or best - lower <= tolerance:
        return Exact(best, lower, best, True, "optimal", seconds)
    return Exact(np.nan, lower, best, False, status, seconds)


def _reachable(ops: list[Op], x: Tensor, label: int, eps: float, norm: Norm) -> list[int]:
    """The classes whose logit CROWN cannot keep below the label's inside the ball, by how far
    above it they might get (most first)."""
    classes = ops[-1].out_shape[0]  # type: ignore[union-attr]
    spec = torch.zeros(1, classes, classes, dtype=x.dtype)
    spec[0, torch.arange(classes), torch.arange(classes)] = 1.0
    spec[0, :, label] -= 1.0  # rows e_j − e_y
    reach = -crown_bounds(ops, x, torch.tensor([eps], dtype=x.dtype), -spec, norm)[0]
    order = torch.argsort(reach, descending=True).tolist()
    return [j for j in order if j != label and reach[j] >= 0]


def _minimise(
    blocks, ops: list[Op], x: Tensor, label: int, target: int, norm: Norm, floor: float,
    cap: float, tolerance: float, seconds: float,
) -> tuple[float | None, float, bool]:  # fmt: skip
    """The smallest t in [floor, cap] with an input within `norm` distance t of x (in the pixel
    box) where `target`'s logit reaches `label`'s: (the best t found or None, the proved lower
    bound, whether the program was decided to `tolerance`). Infeasible: no such input, the bound
    is `cap`."""
    model = _program(blocks, ops, x, label, target, norm, floor, cap)
    _silence_banner()
    solver = highspy.Highs()
    solver.setOptionValue("output_flag", False)
    for name, value in {
        **HEURISTICS_OFF, "threads": 1, "time_limit": float(seconds), "mip_abs_gap": tolerance,
        "mip_rel_gap": 0.0,
    }.items():  # fmt: skip
        solver.setOptionValue(name, value)
    solver.passModel(model)
    solver.run()
    status = solver.getModelStatus()
    if status == highspy.HighsModelStatus.kInfeasible:
        return None, cap, True
    info = solver.getInfo()
    has_point = info.primal_solution_status == 2  # kSolutionStatusFeasible
    value = float(info.objective_function_value) if has_point else None
    bound = max(float(info.mip_dual_bound), floor) if np.isfinite(info.mip_dual_bound) else floor
    return value, bound, status == highspy.HighsModelStatus.kOptimal


@cache
def _silence_banner() -> None:
    """Make the process's first HiGHS instance with standard output closed: its constructor
    prints a copyright banner from C, into the middle of the progress bars, once per process."""
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def _program(
    blocks, ops: list[Op], x: Tensor, label: int, target: int, norm: Norm, floor: float,
    cap: float,
) -> "highspy.HighsLp":  # fmt: skip
    """The MIPVerify program of one class: columns x, t (L1: then e, the pixel-wise |x − x₀|),
    then per hidden layer z (pre-activation), a (post-activation) and δ (binary: 1 active, 0 dead,
    fixed where the ball's bounds decide it), minimising t; the ReLUs' big-M bounds are over the
    `norm` ball of radius `cap`, and every pixel stays within `cap` of x₀ (both balls lie in that
    box)."""
    pre = pre_activation_bounds(ops, x, torch.tensor([cap], dtype=x.dtype), norm)
    x0 = x.double().flatten().numpy()
    n0 = len(x0)
    t_at, total = n0, n0 + 1
    col_lo = [np.clip(x0 - cap, 0, 1), [floor]]
    col_hi = [np.clip(x0 + cap, 0, 1), [cap]]
    integer = [np.zeros(n0 + 1)]
    rows: list[tuple[dict[int, sparse.spmatrix | np.ndarray], np.ndarray, np.ndarray]] = []
    ones, eye0, free0 = np.ones((n0, 1)), sparse.identity(n0), np.full(n0, np.inf)
    if norm == "linf":
        rows.append(({0: eye0, t_at: ones}, x0, free0))  # x + t ≥ x0
        rows.append(({0: eye0, t_at: -ones}, -free0, x0))  # x − t ≤ x0
    else:
        e = total
        total += n0
        col_lo.append(np.zeros(n0))
        col_hi.append(np.minimum(np.maximum(x0, 1 - x0), cap))
        integer.append(np.zeros(n0))
        rows.append(({0: eye0, e: eye0}, x0, free0))  # e ≥ x0 − x
        rows.append(({0: -eye0, e: eye0}, -x0, free0))  # e ≥ x − x0
        rows.append(({t_at: np.ones((1, 1)), e: -np.ones((1, n0))}, [0.0], [0.0]))  # t = Σ e
    prev = 0
    for (w, b), (lo_t, hi_t) in zip(blocks[:-1], pre, strict=True):
        n = w.shape[0]
        z, a, d = total, total + n, total + 2 * n
        total += 3 * n
        lo, hi = lo_t.double().flatten().numpy(), hi_t.double().flatten().numpy()
        eye, free, zeros = sparse.identity(n), np.full(n, -np.inf), np.zeros(n)
        col_lo += [lo, zeros, (lo >= 0).astype(float)]
        col_hi += [hi, np.maximum(hi, 0), (hi > 0).astype(float)]
        integer += [zeros, zeros, np.ones(n)]
        rows.append(({z: eye, prev: -w}, b, b))  # z = W·(previous) + b
        rows.append(({a: eye, z: -eye}, zeros, np.full(n, np.inf)))  # a ≥ z (a ≥ 0: its bound)
        # a ≤ z − l(1 − δ): equality where active (δ = 1), vacuous where dead (z − l ≥ 0)
        rows.append(({a: eye, z: -eye, d: -sparse.diags(lo)}, free, -lo))
        rows.append(({a: eye, d: -sparse.diags(np.maximum(hi, 0))}, free, zeros))  # a ≤ uδ
        prev = a
    w_out, b_out = blocks[-1]
    gap = w_out[target] - w_out[label]  # o_target − o_label ≥ 0
    rows.append(({prev: gap}, np.array([b_out[label] - b_out[target]]), np.array([np.inf])))
    matrix = sparse.vstack([_row_block(cols, len(low), total) for cols, low, _ in rows], "csc")
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = total, matrix.shape[0]
    cost = np.zeros(total)
    cost[t_at] = 1.0
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = (
        cost,
        np.concatenate(col_lo),
        np.concatenate(col_hi),
    )
    lp.row_lower_ = np.concatenate([low for _, low, _ in rows])
    lp.row_upper_ = np.concatenate([high for _, _, high in rows])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_ = matrix.indptr, matrix.indices
    lp.a_matrix_.value_ = matrix.data
    kinds = (highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger)
    lp.integrality_ = [kinds[int(v)] for v in np.concatenate(integer)]
    return lp


def _row_block(columns: dict[int, sparse.spmatrix | np.ndarray], height: int, total: int):
    """Rows of `height` whose blocks start at the given columns (zero elsewhere), `total` wide."""
    parts, last = [], 0
    for col in sorted(columns):
        block = sparse.csr_matrix(columns[col])
        if col > last:
            parts.append(sparse.csr_matrix((height, col - last)))
        parts.append(block)
        last = col + block.shape[1]
    if last < total:
        parts.append(sparse.csr_matrix((height, total - last)))
    return sparse.hstack(parts, format="csr")

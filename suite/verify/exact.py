"""Exact minimal L∞ adversarial distortion by mixed-integer linear programming (the encoding of
Tjeng, Xiao & Tedrake 2019, MIPVerify), solved by HiGHS through scipy's `milp`.

Per digit, bisection on ε: at each ε, for each class that CROWN cannot rule out inside the ball,
a feasibility program asks for an input within ε of the digit (in the pixel box) where that class
reaches the label's logit, every ReLU encoded exactly (a binary per unstable neuron, big-M from
its pre-activation bounds over that ball; stable neurons are linear or zero). A feasible program
is a witness, an infeasible one a proof, so the result is a bracket [largest ε proven clean,
smallest ε proven adversarial] that closes to `tolerance` when every program is decided.
Deviations from Tjeng et al.: bisection of feasibility programs instead of one program that
minimises ε (whose relaxation HiGHS bounded at 0 for a disjunction over classes), and no LP-based
bound tightening. Issue 30.
"""

import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import Tensor

from suite.verify.bounds import crown_bounds, linear_backward, pre_activation_bounds
from suite.verify.network import Affine, Op, ReLU


@dataclass(frozen=True)
class Exact:
    """One digit's result: `value` the minimal L∞ distortion (to the tolerance) where `solved`,
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


def minimal_linf(
    ops: list[Op],
    x: Tensor,
    label: int,
    eps_max: float,
    *,
    floor: float = 0.0,
    known: float | None = None,
    tolerance: float = 1e-4,
    time_limit: float = 60.0,
) -> Exact:
    """The minimal L∞ distortion of one digit `x` ([1, *shape]) in [floor, eps_max] to within
    `tolerance`, by bisection on ε: at each ε a feasibility program per class CROWN cannot rule
    out (most reachable first) asks for an input in the ball that the class reaches; the ball's
    own bounds leave few unstable neurons. `floor` is best the certified radius; `known` the
    distortion of an adversarial already found (an attack's, checked by the model), which starts
    the bracket's top and spares the widest, slowest programs. The bracket is [largest ε proven
    clean, smallest ε proven adversarial]."""
    start = time.perf_counter()
    blocks = affine_blocks(ops)
    lo, hi, status = floor, np.inf, "optimal"
    eps = eps_max
    if known is not None and floor < known <= eps_max:
        hi, eps = known, (floor + known) / 2
        if hi - lo <= tolerance:
            return Exact(hi, lo, hi, True, "optimal", time.perf_counter() - start)
    while True:
        left = time_limit - (time.perf_counter() - start)
        verdict = _adversarial_within(blocks, ops, x, label, eps, left) if left > 0 else None
        if verdict is None:
            status = "time limit"
            break
        if verdict:
            hi = eps
        else:
            lo = eps
            if not np.isfinite(hi):  # clean at eps_max itself
                break
        if np.isfinite(hi) and hi - lo <= tolerance:
            break
        eps = (lo + hi) / 2
    seconds = time.perf_counter() - start
    if not np.isfinite(hi) and status == "optimal":
        return Exact(np.nan, eps_max, np.inf, False, "none within eps_max", seconds)
    if status == "optimal":
        return Exact(hi, lo, hi, True, "optimal", seconds)
    return Exact(np.nan, lo, hi, False, status, seconds)


def _adversarial_within(
    blocks, ops: list[Op], x: Tensor, label: int, eps: float, seconds: float
) -> bool | None:
    """Whether some class reaches the label's logit for an input within `eps` of x (None: the
    time ran out before it was decided)."""
    start = time.perf_counter()
    for target in _reachable(ops, x, label, eps):
        left = seconds - (time.perf_counter() - start)
        if left <= 0:
            return None
        res = _solve(blocks, ops, x, label, target, eps, left)
        if res.status == 0:
            return True
        if res.status != 2:  # neither found nor ruled out
            return None
    return False


def _reachable(ops: list[Op], x: Tensor, label: int, eps: float) -> list[int]:
    """The classes whose logit CROWN cannot keep below the label's inside the ball, by how far
    above it they might get (most first)."""
    classes = ops[-1].out_shape[0]  # type: ignore[union-attr]
    spec = torch.zeros(1, classes, classes, dtype=x.dtype)
    spec[0, torch.arange(classes), torch.arange(classes)] = 1.0
    spec[0, :, label] -= 1.0  # rows e_j − e_y
    reach = -crown_bounds(ops, x, torch.tensor([eps], dtype=x.dtype), -spec, "linf")[0]
    order = torch.argsort(reach, descending=True).tolist()
    return [j for j in order if j != label and reach[j] >= 0]


def _solve(blocks, ops: list[Op], x: Tensor, label: int, target: int, eps: float, seconds: float):
    """Is there an input within `eps` of x (in the pixel box) where `target`'s logit reaches
    `label`'s? HiGHS stops at the first such input (status 0) or proves none (status 2)."""
    pre = pre_activation_bounds(ops, x, torch.tensor([eps], dtype=x.dtype), "linf")
    x0 = x.double().flatten().numpy()
    n0 = len(x0)
    offsets, total = [], n0  # variables: x, then per hidden layer its a and δ
    for w, _ in blocks[:-1]:
        offsets.append(total)
        total += 2 * w.shape[0]
    lower, upper, integrality = np.zeros(total), np.zeros(total), np.zeros(total)
    lower[:n0], upper[:n0] = np.clip(x0 - eps, 0, 1), np.clip(x0 + eps, 0, 1)
    rows: list[sparse.csr_matrix] = []
    lo_rhs: list[np.ndarray] = []
    hi_rhs: list[np.ndarray] = []

    def add(columns: dict[int, sparse.spmatrix], low: np.ndarray, high: np.ndarray) -> None:
        height, parts, last = len(low), [], 0
        for col in sorted(columns):
            if col > last:
                parts.append(sparse.csr_matrix((height, col - last)))
            parts.append(sparse.csr_matrix(columns[col]))
            last = col + columns[col].shape[1]
        if last < total:
            parts.append(sparse.csr_matrix((height, total - last)))
        rows.append(sparse.hstack(parts, format="csr"))
        lo_rhs.append(low)
        hi_rhs.append(high)

    prev = 0
    for (w, b), (lo_t, hi_t), a_at in zip(blocks[:-1], pre, offsets, strict=True):
        n = w.shape[0]
        d_at = a_at + n
        lo, hi = lo_t.double().flatten().numpy(), hi_t.double().flatten().numpy()
        eye, none = sparse.identity(n, format="csr"), np.full(n, -np.inf)
        upper[a_at:d_at] = np.maximum(hi, 0)
        integrality[d_at : d_at + n] = 1  # δ: 1 where active, 0 where dead, free where unstable
        lower[d_at : d_at + n], upper[d_at : d_at + n] = lo >= 0, hi > 0
        add({a_at: eye, prev: -w}, b, np.full(n, np.inf))  # a ≥ z (and a ≥ 0 by its bound)
        # a ≤ z − l(1 − δ): equality where active (δ = 1), vacuous where dead (z − l ≥ 0)
        add({a_at: eye, prev: -w, d_at: -sparse.diags(lo)}, none, b - lo)
        add({a_at: eye, d_at: -sparse.diags(np.maximum(hi, 0))}, none, np.zeros(n))  # a ≤ uδ
        prev = a_at
    w_out, b_out = blocks[-1]
    gap = (w_out[target] - w_out[label]).tocsr()  # o_target − o_label ≥ 0
    add({prev: gap}, np.array([b_out[label] - b_out[target]]), np.array([np.inf]))
    return milp(
        np.zeros(total),
        integrality=integrality,
        bounds=Bounds(lower, upper),
        constraints=LinearConstraint(
            sparse.vstack(rows, format="csr"), np.concatenate(lo_rhs), np.concatenate(hi_rhs)
        ),
        options={"time_limit": seconds},
    )

"""Certified lower bounds on a digit's minimal adversarial distortion: no input inside the radius
changes the network's decision, whatever attack looks.

Interval bound propagation (IBP; Gowal et al. 2018) carries a box through each layer; CROWN (Zhang
et al. 2018) walks linear bounds on the margins back from the logits to the input, relaxing each
unstable ReLU between two lines (the upper chord; the lower line of slope 1 or 0, whichever
leaves the smaller area, as CROWN's adaptive choice). The pre-activation bounds each ReLU needs
come from IBP, tightened by CROWN itself where the layer has at most `crown_units` neurons (its
identity as the specification); above that they stay IBP's (CROWN-IBP, Zhang et al. 2020), which
keeps memory linear in the widest small layer. A linear bound is minimised over the ball by its
dual norm (L1 of the coefficients for L∞, L2 for L2, L∞ for L1). The L∞ ball is intersected with
the pixel box [0, 1]; the L2 ball is bounded on its own (a sound superset of its intersection with
the box); the L1 ball takes the larger of its own bound and that of the box of the same radius,
which holds it. Instance norm (the distillation ConvNet's) is relaxed from its input's box: the
per-channel scale s = 1/√(mean(u²) + eps) lies in an interval read off the box of u, and u·s
lies within m·u ± δ·max|u| (m, δ: the interval's midpoint and half-width), a sound linear bound
whatever s is inside it.
The certified radius is found by bisection on ε per digit, all digits in one batch. Pure tensor
functions on the model's device (issue 30; `tests/test_verify.py` checks soundness against
exhaustive search and the suite's attacks).
"""

from typing import Literal

import torch
from torch import Tensor

from suite.limits import MAX_L1_RADIUS, MAX_L2_RADIUS
from suite.verify.network import Affine, InstanceNorm, Nonlinear, Op, ReLU, forward

Norm = Literal["linf", "l2", "l1"]
TOP = {"linf": 1.0, "l2": MAX_L2_RADIUS, "l1": MAX_L1_RADIUS}
"""The largest distortion of each norm inside the pixel box: where a radius search starts."""


def _box(x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    radius = eps.view(-1, *[1] * (x.dim() - 1))
    return (x - radius).clamp(0, 1), (x + radius).clamp(0, 1)


def interval_bounds(ops: list[Op], lo: Tensor, hi: Tensor) -> list[tuple[Tensor, Tensor]]:
    """IBP: the bounds of the input to every nonlinearity of `ops`, then of the output, for
    inputs in the box [lo, hi] (one box per row of the batch)."""
    out = []
    for op in ops:
        if isinstance(op, ReLU):
            out.append((lo, hi))
            lo, hi = lo.clamp_min(0), hi.clamp_min(0)
        elif isinstance(op, InstanceNorm):
            out.append((lo, hi))
            lo, hi = _norm_box(op, lo, hi)
        else:
            centre, radius = op.forward((lo + hi) / 2), op.abs_forward((hi - lo) / 2)
            lo, hi = centre - radius, centre + radius
    return [*out, (lo, hi)]


def _norm_scale(op: InstanceNorm, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """The interval [s_lo, s_hi] ([B, C, 1, 1]) of each channel's scale 1/√(mean(u²) + eps) for
    u in the box [lo, hi]: from the smallest and largest u² each element allows."""
    smallest = torch.where(lo > 0, lo.square(), torch.where(hi < 0, hi.square(), 0.0))
    largest = torch.maximum(lo.square(), hi.square())
    s_lo = (largest.mean((-2, -1), keepdim=True) + op.eps).rsqrt()
    s_hi = (smallest.mean((-2, -1), keepdim=True) + op.eps).rsqrt()
    return s_lo, s_hi


def _norm_box(op: InstanceNorm, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """The box of instance norm's output for u in [lo, hi]: u·s over the corners (s > 0), then
    γ·(u·s) + β."""
    s_lo, s_hi = _norm_scale(op, lo, hi)
    w_lo = torch.minimum(lo * s_lo, lo * s_hi)
    w_hi = torch.maximum(hi * s_lo, hi * s_hi)
    gamma, beta = op.gamma[:, None, None], op.beta[:, None, None]
    y1, y2 = gamma * w_lo + beta, gamma * w_hi + beta
    return torch.minimum(y1, y2), torch.maximum(y1, y2)


def _norm_relax(op: InstanceNorm, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Instance norm's linear bounds on [lo, hi]: y = γ·u·s + β with s ∈ [s_lo, s_hi] gives
    |y − (γ·m·u + β)| ≤ |γ|·δ·max(|lo|, |hi|), m and δ the midpoint and half-width of s's
    interval. Returns (the slope γ·m, the half-width |γ|·δ·max|u|), per element."""
    s_lo, s_hi = _norm_scale(op, lo, hi)
    gamma = op.gamma[:, None, None]
    slope = gamma * (s_lo + s_hi) / 2
    width = gamma.abs() * (s_hi - s_lo) / 2 * torch.maximum(lo.abs(), hi.abs())
    return slope.expand_as(lo), width


def _relax(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The ReLU's linear bounds on [lo, hi]: lower slope, upper slope, upper intercept (the
    lower line passes through the origin)."""
    active, unstable = lo >= 0, (lo < 0) & (hi > 0)
    width = (hi - lo).clamp_min(1e-12)
    upper = torch.where(unstable, hi / width, active.to(lo.dtype))
    intercept = torch.where(unstable, -lo * hi / width, torch.zeros_like(lo))
    lower = torch.where(unstable, (hi > -lo).to(lo.dtype), active.to(lo.dtype))
    return lower, upper, intercept


def linear_backward(
    ops: list[Op], spec: Tensor, relus: list[tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor]:
    """Walk the rows `spec` ([B, S, *output shape of ops]) back through `ops` using the bounds
    `relus` of the inputs of their nonlinearities: returns (A, c) with spec·f(x) ≥ A·x + c for
    every x the bounds hold for (A: [B, S, *input shape], c: [B, S])."""
    a, const = spec, spec.new_zeros(spec.shape[:2])
    bounds = iter(reversed(relus))
    for op in reversed(ops):
        dims = tuple(range(2, a.dim()))
        if isinstance(op, InstanceNorm):
            lo, hi = next(bounds)
            slope, width = _norm_relax(op, lo.unsqueeze(1), hi.unsqueeze(1))
            beta = op.beta[:, None, None]
            const = const + (a * beta).sum(dims) - (a.abs() * width).sum(dims)
            a = a * slope
        elif isinstance(op, ReLU):
            lo, hi = next(bounds)
            lower, upper, intercept = _relax(lo.unsqueeze(1), hi.unsqueeze(1))
            pos, neg = a.clamp_min(0), a.clamp_max(0)
            const = const + (neg * intercept).sum(dims)
            a = pos * lower + neg * upper
        else:
            const = const + (a * op.bias).sum(dims)
            a = op.transpose(a)
    return a, const


def _concretise(a: Tensor, const: Tensor, x: Tensor, eps: Tensor, norm: Norm) -> Tensor:
    """min over the ball of A·x' + c: the box corner for L∞ (ball ∩ [0, 1]), the dual norm for L2
    and L1 (L1: the larger of that and the box corner of the L∞ ball of the same radius)."""
    flat = a.flatten(2)
    if norm == "linf":
        return _corner(flat, x, eps) + const
    centre = (flat * x.flatten(1).unsqueeze(1)).sum(2)
    if norm == "l2":
        return centre - eps.unsqueeze(1) * flat.norm(dim=2) + const
    return torch.maximum(
        centre - eps.unsqueeze(1) * flat.abs().amax(2), _corner(flat, x, eps)
    ) + const  # fmt: skip


def _corner(flat: Tensor, x: Tensor, eps: Tensor) -> Tensor:
    """min of A·x' over the L∞ ball of radius `eps` around `x` inside the pixel box."""
    lo, hi = _box(x, eps)
    lo, hi = lo.flatten(1).unsqueeze(1), hi.flatten(1).unsqueeze(1)
    return (flat.clamp_min(0) * lo + flat.clamp_max(0) * hi).sum(2)


FIRST_ROWS_MAX = 32_768
"""First-layer units up to which that layer's exact L2/L1 bounds are computed (its rows' dual
norms, in chunks of bounded memory); above it the layer keeps IBP's box (the distillation
ConvNet's 131,072), sound and looser."""


def first_row_norms(ops: list[Op], norm: Norm = "l2") -> Tensor | None:
    """The dual norm (L2 for L2, L∞ for L1) of each row of the affine map before the first
    nonlinearity (its input's shape): that layer's exact bound over the `norm` ball is
    forward(x) ± ε · it, whatever x. None above FIRST_ROWS_MAX units."""
    at = next(i for i, op in enumerate(ops) if isinstance(op, Nonlinear))
    last = ops[at - 1]
    assert isinstance(last, Affine)
    units = last.bias.numel()
    if units > FIRST_ROWS_MAX:
        return None
    chunk = max(1, 2**24 // units)
    parts = []
    for start in range(0, units, chunk):
        n = min(chunk, units - start)
        rows = last.bias.new_zeros(n, units)
        rows[torch.arange(n), start + torch.arange(n)] = 1.0
        a, _ = linear_backward(ops[:at], rows.view(1, n, *last.out_shape), [])
        flat = a.flatten(2)[0]
        parts.append(flat.norm(dim=1) if norm == "l2" else flat.abs().amax(1))
    return torch.cat(parts).view(last.out_shape)


def pre_activation_bounds(
    ops: list[Op],
    x: Tensor,
    eps: Tensor,
    norm: Norm,
    crown_units: int = 2048,
    first_norms: Tensor | None = None,
) -> list[tuple[Tensor, Tensor]]:
    """The bounds of the input to each nonlinearity over the `norm` ball of radius `eps` (one per
    row) around `x`, inside the pixel box: IBP's, tightened by CROWN where a layer has at most
    `crown_units` neurons. The first one's bounds need no backward pass: IBP's for L∞ (exact
    where one affine layer precedes it), `first_row_norms` (computed here unless given; IBP's
    where that returns None) for L2 and L1."""
    lo, hi = _box(x, eps)  # the L2 and L1 balls lie inside the L∞ box of the same radius
    boxes = interval_bounds(ops, lo, hi)
    relus: list[tuple[Tensor, Tensor]] = []
    positions = [i for i, op in enumerate(ops) if isinstance(op, Nonlinear)]
    for k, at in enumerate(positions):
        ibp_lo, ibp_hi = boxes[k]
        units = ibp_lo[0].numel()
        norms = None
        if k == 0 and norm != "linf":
            norms = first_norms if first_norms is not None else first_row_norms(ops, norm)
        if norms is not None:
            centre = forward(ops[:at], x)
            radius = eps.view(-1, *[1] * (centre.dim() - 1)) * norms
            relus.append((torch.maximum(ibp_lo, centre - radius),
                          torch.minimum(ibp_hi, centre + radius)))  # fmt: skip
        elif k > 0 and units <= crown_units:  # CROWN on the layer's identity and its negation
            eye = torch.eye(units, dtype=x.dtype, device=x.device)
            rows = torch.cat([eye, -eye]).expand(len(x), -1, -1)
            a, const = linear_backward(
                ops[:at], rows.reshape(len(x), 2 * units, *ibp_lo.shape[1:]), relus
            )
            bound = _concretise(a, const, x, eps, norm)
            relus.append((
                torch.maximum(ibp_lo, bound[:, :units].view_as(ibp_lo)),
                torch.minimum(ibp_hi, -bound[:, units:].view_as(ibp_hi)),
            ))  # fmt: skip
        else:  # the first layer under L∞ (IBP), one too wide for its row norms, or for CROWN
            relus.append((ibp_lo, ibp_hi))
    return relus


def crown_bounds(
    ops: list[Op],
    x: Tensor,
    eps: Tensor,
    spec: Tensor,
    norm: Norm,
    crown_units: int = 2048,
    first_norms: Tensor | None = None,
) -> Tensor:
    """Lower bounds ([B, S]) on spec·logits over the `norm` ball of radius `eps` (one per row)
    around `x`, inside the pixel box; `spec` is [B, S, classes]."""
    relus = pre_activation_bounds(ops, x, eps, norm, crown_units, first_norms)
    a, const = linear_backward(ops, spec, relus)
    return _concretise(a, const, x, eps, norm)


def margin_spec(labels: Tensor, classes: int = 10) -> Tensor:
    """[B, classes − 1, classes]: the rows e_y − e_j for every other class j."""
    eye = torch.eye(classes, device=labels.device)
    rows = eye[labels].unsqueeze(1) - eye.unsqueeze(0)  # [B, classes, classes]
    keep = ~torch.nn.functional.one_hot(labels, classes).bool()
    return rows[keep].view(len(labels), classes - 1, classes)


def certified(
    ops: list[Op],
    x: Tensor,
    labels: Tensor,
    eps: Tensor,
    norm: Norm,
    method: Literal["crown", "ibp"] = "crown",
    first_norms: Tensor | None = None,
) -> Tensor:
    """Whether each digit's label provably wins throughout its ball (bool [B])."""
    if method == "ibp":
        out_lo, out_hi = interval_bounds(ops, *_box(x, eps))[-1]
        true_lo = out_lo.gather(1, labels[:, None])
        others = out_hi.scatter(1, labels[:, None], -torch.inf)
        return (true_lo > others).all(1)
    logits = ops[-1]
    assert isinstance(logits, Affine)  # linear_form ends on the logits' affine map
    classes = logits.out_shape[0]
    spec = margin_spec(labels, classes).to(x.dtype)
    bounds = crown_bounds(ops, x, eps, spec, norm, first_norms=first_norms)
    return (bounds > 0).all(1)


def certified_radius(
    ops: list[Op],
    x: Tensor,
    labels: Tensor,
    norm: Norm,
    *,
    method: Literal["crown", "ibp"] = "crown",
    steps: int = 12,
    upper: Tensor | float | None = None,
) -> Tensor:
    """Per digit, the largest ε found by `steps` bisections of [0, upper] at which `certified`
    holds: a lower bound on its minimal adversarial distortion in `norm`. `upper` (per digit, or
    one for all; default the largest distortion the pixel box allows) is best an attack's
    distortion, which the true minimum cannot exceed. Misclassified digits get 0."""
    with torch.no_grad():
        top = TOP[norm] if upper is None else upper
        lo = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        hi = torch.as_tensor(top, dtype=x.dtype, device=x.device).expand_as(lo).clone()
        correct = forward(ops, x).argmax(1) == labels
        nonlinear = any(isinstance(op, Nonlinear) for op in ops)
        norms = (
            first_row_norms(ops, norm)
            if method == "crown" and norm != "linf" and nonlinear
            else None
        )
        for _ in range(steps):
            mid = (lo + hi) / 2
            ok = certified(ops, x, labels, mid, norm, method, norms) & correct
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        return torch.where(correct, lo, torch.zeros_like(lo))

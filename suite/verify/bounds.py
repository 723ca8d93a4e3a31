"""Certified lower bounds on a digit's minimal adversarial distortion: no input inside the radius
changes the network's decision, whatever attack looks.

Interval bound propagation (IBP; Gowal et al. 2018) carries a box through each layer; CROWN (Zhang
et al. 2018) walks linear bounds on the margins back from the logits to the input, relaxing each
unstable ReLU between two lines (the upper chord; the lower line of slope 1 or 0, whichever
leaves the smaller area, as CROWN's adaptive choice). The pre-activation bounds each ReLU needs
come from IBP, tightened by CROWN itself where the layer has at most `crown_units` neurons (its
identity as the specification); above that they stay IBP's (CROWN-IBP, Zhang et al. 2020), which
keeps memory linear in the widest small layer. The L∞ ball is intersected with the pixel box
[0, 1]; the L2 ball is bounded on its own (a sound superset of its intersection with the box).
The certified radius is found by bisection on ε per digit, all digits in one batch. Pure tensor
functions on the model's device (issue 30; `tests/test_verify.py` checks soundness against
exhaustive search and the suite's attacks).
"""

from typing import Literal

import torch
from torch import Tensor

from suite.limits import MAX_L2_RADIUS
from suite.verify.network import Affine, Op, ReLU, forward

Norm = Literal["linf", "l2"]


def _box(x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    radius = eps.view(-1, *[1] * (x.dim() - 1))
    return (x - radius).clamp(0, 1), (x + radius).clamp(0, 1)


def interval_bounds(ops: list[Op], lo: Tensor, hi: Tensor) -> list[tuple[Tensor, Tensor]]:
    """IBP: the bounds of the input to every ReLU of `ops`, then of the output, for inputs in the
    box [lo, hi] (one box per row of the batch)."""
    out = []
    for op in ops:
        if isinstance(op, ReLU):
            out.append((lo, hi))
            lo, hi = lo.clamp_min(0), hi.clamp_min(0)
        else:
            centre, radius = op.forward((lo + hi) / 2), op.abs_forward((hi - lo) / 2)
            lo, hi = centre - radius, centre + radius
    return [*out, (lo, hi)]


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
    """Walk the rows `spec` ([B, S, *output shape of ops]) back through `ops` using the
    pre-activation bounds `relus` of their ReLUs: returns (A, c) with spec·f(x) ≥ A·x + c for
    every x the bounds hold for (A: [B, S, *input shape], c: [B, S])."""
    a, const = spec, spec.new_zeros(spec.shape[:2])
    bounds = iter(reversed(relus))
    for op in reversed(ops):
        dims = tuple(range(2, a.dim()))
        if isinstance(op, ReLU):
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
    """min over the ball of A·x' + c: the box corner for L∞ (ball ∩ [0, 1]), Cauchy–Schwarz for L2."""
    flat = a.flatten(2)
    if norm == "linf":
        lo, hi = _box(x, eps)
        lo, hi = lo.flatten(1).unsqueeze(1), hi.flatten(1).unsqueeze(1)
        return (flat.clamp_min(0) * lo + flat.clamp_max(0) * hi).sum(2) + const
    centre = (flat * x.flatten(1).unsqueeze(1)).sum(2)
    return centre - eps.unsqueeze(1) * flat.norm(dim=2) + const


def first_row_norms(ops: list[Op]) -> Tensor:
    """The L2 norm of each row of the affine map before the first ReLU (its input's shape): that
    layer's exact bound over an L2 ball is forward(x) ± ε · norm, whatever x."""
    at = next(i for i, op in enumerate(ops) if isinstance(op, ReLU))
    last = ops[at - 1]
    assert isinstance(last, Affine)
    units = last.bias.numel()
    rows = torch.eye(units, dtype=last.bias.dtype, device=last.bias.device)
    a, _ = linear_backward(ops[:at], rows.view(1, units, *last.out_shape), [])
    return a.flatten(2).norm(dim=2).view(last.out_shape)


def pre_activation_bounds(
    ops: list[Op],
    x: Tensor,
    eps: Tensor,
    norm: Norm,
    crown_units: int = 2048,
    first_norms: Tensor | None = None,
) -> list[tuple[Tensor, Tensor]]:
    """The bounds of the input to each ReLU over the `norm` ball of radius `eps` (one per row)
    around `x`, inside the pixel box: IBP's, tightened by CROWN where a layer has at most
    `crown_units` neurons. The first ReLU's bounds are exact without a backward pass: IBP's for
    L∞, `first_row_norms` (computed here unless given) for L2."""
    lo, hi = _box(x, eps)  # the L2 ball lies inside the L∞ box of the same radius
    boxes = interval_bounds(ops, lo, hi)
    relus: list[tuple[Tensor, Tensor]] = []
    positions = [i for i, op in enumerate(ops) if isinstance(op, ReLU)]
    for k, at in enumerate(positions):
        ibp_lo, ibp_hi = boxes[k]
        units = ibp_lo[0].numel()
        if k == 0 and norm == "l2":
            norms = first_norms if first_norms is not None else first_row_norms(ops)
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
        else:  # the first layer under L∞ (IBP is exact there), or a layer too wide
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
        top = (1.0 if norm == "linf" else MAX_L2_RADIUS) if upper is None else upper
        lo = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        hi = torch.as_tensor(top, dtype=x.dtype, device=x.device).expand_as(lo).clone()
        correct = forward(ops, x).argmax(1) == labels
        relu = any(isinstance(op, ReLU) for op in ops)
        norms = first_row_norms(ops) if method == "crown" and norm == "l2" and relu else None
        for _ in range(steps):
            mid = (lo + hi) / 2
            ok = certified(ops, x, labels, mid, norm, method, norms) & correct
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        return torch.where(correct, lo, torch.zeros_like(lo))

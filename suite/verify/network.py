"""A model as the alternation of affine maps and nonlinearities that bound propagation walks.

Conv2d, Linear, Flatten, average pooling, eval-mode Dropout (the identity) and the input
standardisation of `StandardisedConvNet` are affine. The nonlinearities are ReLU and, for the
distillation ConvNet, instance norm (GroupNorm with one channel per group), written as an affine
centring followed by `InstanceNorm`, the per-channel scaling by 1/√(variance + eps) that bounds
relax in `suite.verify.bounds`. A 2×2, stride-2 max pool that follows a ReLU is rewritten exactly
as affine maps and ReLUs (max(a, b) = a + ReLU(b − a), twice): its inputs are non-negative, so the
ReLUs over the carried terms are the identity. Any other layer is refused by name.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from suite.models import MLP, CWMnist, StandardisedConvNet, Tiny, build_model


@dataclass(frozen=True)
class Affine:
    """y = forward(x) + 0 for x of `in_shape`, y of `out_shape` (per sample, any leading dims).
    `transpose(A)` maps coefficient rows on y (shape [..., *out_shape]) to the rows on x they
    equal, `bias` is forward(0), so A·y = transpose(A)·x + A·bias; `abs_forward(r)` is |W|·r."""

    forward: Callable[[Tensor], Tensor]
    transpose: Callable[[Tensor], Tensor]
    bias: Tensor
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    abs_forward: Callable[[Tensor], Tensor]


class ReLU:
    """A ReLU: where bounds are relaxed between two lines."""


@dataclass(frozen=True)
class InstanceNorm:
    """y = γ · u / √(mean(u²) + eps) + β per channel of a centred input u ([C, H, W]: each channel
    already has mean 0, by the affine map before it): instance norm's nonlinear part."""

    gamma: Tensor
    beta: Tensor
    eps: float
    shape: tuple[int, ...]

    def forward(self, u: Tensor) -> Tensor:
        scale = (u.square().mean((-2, -1), keepdim=True) + self.eps).rsqrt()
        return u * scale * self.gamma[:, None, None] + self.beta[:, None, None]


Op = Affine | ReLU | InstanceNorm
Nonlinear = (ReLU, InstanceNorm)
"""The ops bounds relax; each needs the bounds of its input."""


def _linear(layer: nn.Linear) -> Affine:
    w, b = layer.weight.detach(), layer.bias.detach()
    return Affine(
        forward=lambda x: x @ w.T + b,
        transpose=lambda a: a @ w,
        bias=b.clone(),
        in_shape=(w.shape[1],),
        out_shape=(w.shape[0],),
        abs_forward=lambda x: x @ w.abs().T,
    )


def _conv(layer: nn.Conv2d, in_shape: tuple[int, ...]) -> Affine:
    if layer.groups != 1 or layer.dilation != (1, 1) or layer.padding_mode != "zeros":
        raise ValueError(f"{layer}: only plain convolutions are supported")
    w = layer.weight.detach()
    b = layer.bias.detach() if layer.bias is not None else torch.zeros(w.shape[0])
    stride, padding = layer.stride, layer.padding
    probe = F.conv2d(torch.zeros(1, *in_shape, dtype=w.dtype), w, None, stride, padding)
    out_shape = tuple(probe.shape[1:])
    # conv_transpose2d recovers the input size up to stride − 1 rows/columns: ask for the rest
    back = F.conv_transpose2d(torch.zeros(1, *out_shape, dtype=w.dtype), w, None, stride, padding)
    extra = (in_shape[1] - back.shape[2], in_shape[2] - back.shape[3])

    def transpose(a: Tensor) -> Tensor:
        lead = a.shape[:-3]
        flat = a.reshape(-1, *out_shape)
        out = F.conv_transpose2d(flat, w, None, stride, padding, output_padding=extra)
        return out.reshape(*lead, *in_shape)

    def forward(x: Tensor) -> Tensor:
        lead = x.shape[:-3]
        out = F.conv2d(x.reshape(-1, *in_shape), w, None, stride, padding)
        return (out + b[:, None, None]).reshape(*lead, *out_shape)

    def forward_abs(x: Tensor) -> Tensor:
        lead = x.shape[:-3]
        out = F.conv2d(x.reshape(-1, *in_shape), w.abs(), None, stride, padding)
        return out.reshape(*lead, *out_shape)

    return Affine(
        forward=forward,
        transpose=transpose,
        bias=b[:, None, None].expand(out_shape).clone(),
        in_shape=in_shape,
        out_shape=out_shape,
        abs_forward=forward_abs,
    )


def _reshape(in_shape: tuple[int, ...], out_shape: tuple[int, ...], dtype: torch.dtype) -> Affine:
    def move(shape_from: tuple[int, ...], shape_to: tuple[int, ...]) -> Callable[[Tensor], Tensor]:
        return lambda t: t.reshape(*t.shape[: t.dim() - len(shape_from)], *shape_to)

    return Affine(
        forward=move(in_shape, out_shape),
        transpose=move(out_shape, in_shape),
        bias=torch.zeros(out_shape, dtype=dtype),
        in_shape=in_shape,
        out_shape=out_shape,
        abs_forward=move(in_shape, out_shape),
    )


def _scale(shape: tuple[int, ...], mean: float, std: float, dtype: torch.dtype) -> Affine:
    """(x − mean) / std, elementwise."""
    return Affine(
        forward=lambda x: (x - mean) / std,
        transpose=lambda a: a / std,
        bias=torch.full(shape, -mean / std, dtype=dtype),
        in_shape=shape,
        out_shape=shape,
        abs_forward=lambda x: x / abs(std),
    )


def _avgpool(shape: tuple[int, ...], dtype: torch.dtype) -> Affine:
    """The mean over each 2×2 window (stride 2) of [C, H, W]."""
    c, h, w = shape
    if h % 2 or w % 2:
        raise ValueError(f"average pool over {shape}: odd sizes are not supported")
    out_shape = (c, h // 2, w // 2)

    def forward(x: Tensor) -> Tensor:
        lead = x.shape[:-3]
        return F.avg_pool2d(x.reshape(-1, *shape), 2).reshape(*lead, *out_shape)

    def transpose(a: Tensor) -> Tensor:
        return a.repeat_interleave(2, -2).repeat_interleave(2, -1) / 4

    return Affine(
        forward, transpose, torch.zeros(out_shape, dtype=dtype), shape, out_shape, forward
    )


def _centre(shape: tuple[int, ...], dtype: torch.dtype) -> Affine:
    """x − its mean over each channel's map (instance norm's affine part); |W|·r for W = I − J/n
    is (1 − 2/n)·r + mean(r)."""
    n = shape[-1] * shape[-2]

    def centre(x: Tensor) -> Tensor:
        return x - x.mean((-2, -1), keepdim=True)

    def absolute(r: Tensor) -> Tensor:
        return (1 - 2 / n) * r + r.mean((-2, -1), keepdim=True)

    return Affine(centre, centre, torch.zeros(shape, dtype=dtype), shape, shape, absolute)


def _instance_norm(layer: nn.GroupNorm, shape: tuple[int, ...], dtype: torch.dtype) -> list[Op]:
    if layer.num_groups != layer.num_channels or len(shape) != 3:
        raise ValueError(f"{layer}: only instance norm (one channel per group) is supported")
    c = layer.num_channels
    gamma = layer.weight.detach() if layer.affine else torch.ones(c, dtype=dtype)
    beta = layer.bias.detach() if layer.affine else torch.zeros(c, dtype=dtype)
    return [_centre(shape, dtype), InstanceNorm(gamma.clone(), beta.clone(), layer.eps, shape)]


def _maxpool_ops(shape: tuple[int, ...]) -> list[Op]:
    """max over each 2×2 window of a non-negative [C, H, W] input as affine, ReLU, affine, ReLU,
    affine: [a, b−a, c, d−c] → ReLU → [a + (b−a)⁺, c + (d−c)⁺] = [m1, m2] → [m1, m2 − m1] → ReLU
    → m1 + (m2 − m1)⁺. The ReLUs over a and m1 (both ≥ 0) change nothing."""
    c, h, w = shape
    oh, ow = h // 2, w // 2
    if h % 2 or w % 2:
        raise ValueError(f"max pool over {shape}: odd sizes are not supported")
    quarter = (c, oh, ow)

    def windows(x: Tensor) -> list[Tensor]:
        return [x[..., i::2, j::2] for i in (0, 1) for j in (0, 1)]

    def unwindow(parts: list[Tensor]) -> Tensor:
        lead = parts[0].shape[:-3]
        out = parts[0].new_zeros(*lead, c, h, w)
        for (i, j), part in zip(((0, 0), (0, 1), (1, 0), (1, 1)), parts, strict=True):
            out[..., i::2, j::2] = part
        return out

    def stack(parts: list[Tensor]) -> Tensor:
        return torch.cat(parts, dim=-3)

    def unstack(x: Tensor, n: int) -> list[Tensor]:
        return list(x.split(c, dim=-3))[:n]

    def first(x: Tensor) -> Tensor:
        a, b, cc, d = windows(x)
        return stack([a, b - a, cc, d - cc])

    def first_t(g: Tensor) -> Tensor:
        ga, gba, gc, gdc = unstack(g, 4)
        return unwindow([ga - gba, gba, gc - gdc, gdc])

    def second(x: Tensor) -> Tensor:
        a, r1, cc, r2 = unstack(x, 4)
        m1, m2 = a + r1, cc + r2
        return stack([m1, m2 - m1])

    def second_t(g: Tensor) -> Tensor:
        g1, g21 = unstack(g, 2)
        return stack([g1 - g21, g1 - g21, g21, g21])

    def third(x: Tensor) -> Tensor:
        m1, r = unstack(x, 2)
        return m1 + r

    def third_t(g: Tensor) -> Tensor:
        return stack([g, g])

    four, two = (4 * c, oh, ow), (2 * c, oh, ow)

    def first_abs(r: Tensor) -> Tensor:  # |W|·r of each map (their coefficients are 0, ±1)
        a, b, cc, d = windows(r)
        return stack([a, b + a, cc, d + cc])

    def second_abs(r: Tensor) -> Tensor:
        a, r1, cc, r2 = unstack(r, 4)
        return stack([a + r1, a + r1 + cc + r2])

    return [
        Affine(first, first_t, torch.zeros(four), shape, four, first_abs),
        ReLU(),
        Affine(second, second_t, torch.zeros(two), four, two, second_abs),
        ReLU(),
        Affine(third, third_t, torch.zeros(quarter), two, quarter, third),
    ]


def linear_form(model: nn.Module, in_shape: tuple[int, ...] = (1, 28, 28)) -> list[Op]:
    """`model` (eval mode) as a list of affine maps and ReLUs computing the same logits; a
    ValueError names the first layer it cannot write so."""
    dtype = next(model.parameters()).dtype
    prefix: list[Op] = []
    if isinstance(model, StandardisedConvNet):
        prefix = [_scale(in_shape, model.MEAN, model.STD, dtype)]
        layers = [*model.net.features, nn.Flatten(), *model.net.classifier]
    elif isinstance(model, CWMnist):
        layers = [*model.features, *model.classifier]
    elif isinstance(model, Tiny | MLP):
        layers = list(model.net)
    elif isinstance(model, nn.Sequential):
        layers = list(model)
    else:
        raise ValueError(f"{type(model).__name__}: not a sequential ReLU network")
    ops: list[Op] = prefix
    shape = in_shape
    after_relu = False
    for layer in layers:
        if isinstance(layer, nn.Dropout):
            continue
        if isinstance(layer, nn.ReLU):
            ops.append(ReLU())
            after_relu = True
            continue
        if isinstance(layer, nn.MaxPool2d):
            if (layer.kernel_size, layer.stride, layer.padding) not in (
                (2, 2, 0),
            ) or not after_relu:
                raise ValueError(
                    f"{layer}: only a 2×2, stride-2 max pool after a ReLU is supported"
                )
            pooled = _maxpool_ops(shape)
            ops += pooled
            shape = pooled[-1].out_shape
        elif isinstance(layer, nn.AvgPool2d):
            if (layer.kernel_size, layer.stride, layer.padding) != (2, 2, 0):
                raise ValueError(f"{layer}: only a 2×2, stride-2 average pool is supported")
            ops.append(_avgpool(shape, dtype))
            shape = ops[-1].out_shape
        elif isinstance(layer, nn.GroupNorm):
            ops += _instance_norm(layer, shape, dtype)
        elif isinstance(layer, nn.Conv2d):
            ops.append(_conv(layer, shape))
            shape = ops[-1].out_shape
        elif isinstance(layer, nn.Linear):
            ops.append(_linear(layer))
            shape = ops[-1].out_shape
        elif isinstance(layer, nn.Flatten):
            ops.append(_reshape(shape, (int(torch.tensor(shape).prod()),), dtype))
            shape = ops[-1].out_shape
        else:
            raise ValueError(f"{type(layer).__name__}: no bound propagation for this layer")
        after_relu = False
    return ops


def forward(ops: list[Op], x: Tensor) -> Tensor:
    """The logits of the linear form (equal to the model's: `tests/test_verify.py`)."""
    for op in ops:
        x = x.clamp_min(0) if isinstance(op, ReLU) else op.forward(x)
    return x


def piecewise_linear(ops: list[Op]) -> bool:
    """Whether `ops` has no nonlinearity but ReLUs (what the exact solver encodes)."""
    return not any(isinstance(op, InstanceNorm) for op in ops)


@cache
def unverifiable(arch: str, kind: str = "certified") -> str | None:
    """Why the registry's `arch` cannot be verified by `kind` (None where it can), read off a
    freshly built network: the same check `linear_form` makes on a trained one; the exact solver
    needs a piecewise-linear network. Cached: validation asks once per condition and table."""
    try:
        ops = linear_form(build_model(arch).eval())
    except ValueError as exc:
        return str(exc)
    if kind == "exact" and not piecewise_linear(ops):
        return "its instance norm divides by a data-dependent deviation: not piecewise linear"
    return None

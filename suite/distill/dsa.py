"""Differentiable siamese augmentation (Zhao & Bilen, ICML 2021, "Dataset Condensation with
Differentiable Siamese Augmentation").

Each call picks one transformation family from the strategy (the paper code's single mode) and draws
its parameters. Siamese use draws them once (`n = 1`) and applies the same draw to the real and the
synthetic batch; training use draws one per image. Every transformation is differentiable in the
image, so gradients reach synthetic pixels. Constants are the paper code's `ParamDiffAug`.
"""

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

OPS: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"

BRIGHTNESS = 1.0
SATURATION = 2.0
CONTRAST = 0.5
CROP_PAD_RATIO = 0.125
CUTOUT_RATIO = 0.5
FLIP_PROB = 0.5
SCALE_RATIO = 1.2
ROTATE_DEGREES = 15.0


@dataclass(frozen=True)
class Augmentation:
    """One drawn transformation: its family and parameter tensors of length 1 (siamese) or N."""

    op: str
    params: tuple[torch.Tensor, ...]


def check_strategy(strategy: str) -> str:
    """Validate an underscore-joined list of families (e.g. `crop_scale_rotate`)."""
    unknown = [op for op in strategy.split("_") if op not in OPS]
    if unknown:
        raise ValueError(f"unknown DSA operation(s) {unknown}; choose from {', '.join(OPS)}")
    return strategy


def sample(strategy: str, n: int, size: int, generator: torch.Generator) -> Augmentation:
    """Draw one family from `strategy` and `n` parameter sets for images of `size`×`size`."""
    ops = strategy.split("_")
    op = ops[int(torch.randint(len(ops), (1,), generator=generator))]

    def uniform() -> torch.Tensor:
        return torch.rand(n, generator=generator)

    if op == "color":
        params = (uniform(), uniform(), uniform())
    elif op == "crop":
        shift = int(size * CROP_PAD_RATIO + 0.5)
        params = tuple(torch.randint(-shift, shift + 1, (n,), generator=generator) for _ in "xy")
    elif op == "cutout":
        cut = int(size * CUTOUT_RATIO + 0.5)
        high = size + 1 - cut % 2
        params = tuple(torch.randint(0, high, (n,), generator=generator) for _ in "xy")
    elif op == "scale":
        low = 1.0 / SCALE_RATIO
        params = tuple(uniform() * (SCALE_RATIO - low) + low for _ in "xy")
    else:
        params = (uniform(),)
    return Augmentation(op, params)


def apply(x: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """Apply a drawn transformation to a batch [N, C, H, W]; length-1 parameters broadcast."""
    p = [t.to(x.device) for t in aug.params]
    if aug.op == "color":
        b, s, c = (t.to(x.dtype).view(-1, 1, 1, 1) for t in p)
        x = x + (b - 0.5) * BRIGHTNESS
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (s * SATURATION) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (c + CONTRAST) + mean
    if aug.op == "crop":
        return _translate(x, p[0], p[1])
    if aug.op == "cutout":
        return _cutout(x, p[0], p[1])
    if aug.op == "flip":
        return torch.where((p[0] < FLIP_PROB).view(-1, 1, 1, 1), x.flip(3), x)
    theta = torch.zeros(len(p[0]), 2, 3, dtype=x.dtype, device=x.device)
    if aug.op == "scale":
        theta[:, 0, 0], theta[:, 1, 1] = p[0], p[1]
    else:
        angle = (p[0] - 0.5) * 2 * math.radians(ROTATE_DEGREES)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta = theta.expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def augment(x: torch.Tensor, strategy: str, generator: torch.Generator) -> torch.Tensor:
    """Augment each image of `x` with its own draw (one family for the whole batch)."""
    return apply(x, sample(strategy, x.shape[0], x.shape[-1], generator))


def _translate(x: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Shift by whole pixels over a one-pixel zero border (the paper code's `rand_crop`)."""
    n, _, h, w = x.shape
    batch, rows, cols = torch.meshgrid(
        torch.arange(n, device=x.device),
        torch.arange(h, device=x.device),
        torch.arange(w, device=x.device),
        indexing="ij",
    )
    rows = (rows + tx.view(-1, 1, 1) + 1).clamp(0, h + 1)
    cols = (cols + ty.view(-1, 1, 1) + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, ox: torch.Tensor, oy: torch.Tensor) -> torch.Tensor:
    """Zero a square of half the image side centred at (ox, oy), clipped to the image."""
    _, _, h, w = x.shape
    cut = int(h * CUTOUT_RATIO + 0.5)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = (ox - cut // 2).view(-1, 1, 1), (oy - cut // 2).view(-1, 1, 1)
    inside = (rows >= top) & (rows < top + cut) & (cols >= left) & (cols < left + cut)
    return x * (~inside).to(x.dtype).unsqueeze(1)

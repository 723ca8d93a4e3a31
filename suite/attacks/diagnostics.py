"""Gradient-masking diagnostic: has the softmax cross-entropy still a gradient at clean inputs?

Defensive distillation at high temperature saturates the softmax, so the gradient that FGSM/PGD
follow is (numerically) zero while the logits that C&W uses still carry signal.
"""

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MASKING_RATIO = 0.5
"""A softmax-gradient attack that succeeds on under this fraction of what an attack that does not
follow the softmax gradient succeeds on is a sign of masking, not robustness."""


def is_masking(softmax_success: float, cw_success: float) -> bool:
    """Gradient masking: the softmax-gradient attack succeeds far less often (under half as often)
    than C&W on the logits does on the same samples — the model hides, it is not robust."""
    return bool(cw_success > 0 and softmax_success < MASKING_RATIO * cw_success)


def softmax_gradient_norms(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> Tensor:
    """Per-sample ‖∂CE(softmax(model(x)), y)/∂x‖₂, float64 on CPU.

    Computed in float64 on a copy of the model, so a gradient that float32 flushes to zero is
    measured rather than hidden; a norm of exactly 0 means it vanishes even in float64."""
    device = next(model.parameters(), torch.empty(0)).device
    model = copy.deepcopy(model).double().eval()
    norms = []
    for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
        xb = xb.to(device, torch.float64).requires_grad_(True)
        loss = F.cross_entropy(model(xb), yb.to(device), reduction="sum")
        (grad,) = torch.autograd.grad(loss, xb)
        norms.append(grad.flatten(1).norm(dim=1).cpu())
    return torch.cat(norms) if norms else torch.zeros(0, dtype=torch.float64)


def saturated_fraction(norms: Tensor, threshold: float = 1e-10) -> float:
    """Fraction of samples whose input-gradient norm is below `threshold` (NaN for no samples)."""
    return float((norms < threshold).double().mean()) if len(norms) else float("nan")

"""Maths and plumbing shared by the attacks: settings, the registry entry, tanh box, C&W margin,
batched Adam."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, NamedTuple, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

L0_TOLERANCE = 1e-5
"""A pixel counts as changed when |Δ| > 1e-5: far above float32 tanh round-trip noise (≤ 1e-6),
far below a deliberate change (one grey level is 1/255 ≈ 4e-3)."""

NORM_TOLERANCE = 1e-5
"""A perturbation counts as inside an ε ball when its norm exceeds ε by at most this: it absorbs
the float32 rounding of x + δ. Records are given their ε with it (run.py) and the report's masking
checks compare norms with ε with it."""

TargetMode = Literal["random", "next", "least-likely", "all"]


class AttackParams(BaseModel):
    """Settings every attack has: unknown keys are errors, and it is untargeted unless it says so."""

    model_config = ConfigDict(extra="forbid")

    targeted: bool = False

    def targeting(self) -> TargetMode | None:
        """How the target classes of the attacked rows are chosen; None for an untargeted attack."""
        return None


class TargetingParams(AttackParams):
    """Settings of an attack that can aim at a target class (untargeted by default)."""

    target_mode: TargetMode = "random"

    def targeting(self) -> TargetMode | None:
        """`target_mode` when targeted, else None."""
        return self.target_mode if self.targeted else None


class Budget(NamedTuple):
    """The ε balls a fixed-budget attack runs in: their norm and radii, ascending, no repeats."""

    norm: str
    eps: list[float]


@dataclass
class Found:
    """What an attack returns before verification: candidate images and per-sample bookkeeping."""

    x_adv: Tensor  # the best adversarial found per sample; the clean input where none was found
    const: Tensor  # float, the trade-off constant of the returned image (NaN where not applicable)
    grad_evals: Tensor  # int64, forward+backward passes each sample took part in
    component: np.ndarray | None = None  # ensembles: the member that fooled each sample ("" none)

    @classmethod
    def start(cls, x: Tensor) -> "Found":
        """Nothing found yet: the clean images, NaN constants, no gradient evaluations."""
        return cls(
            x.clone(), per_sample(x, float("nan"), torch.float64), per_sample(x, 0, torch.int64)
        )


P = TypeVar("P", bound=AttackParams)
P_contra = TypeVar("P_contra", bound=AttackParams, contravariant=True)


class Attack(Protocol[P_contra]):
    """The one signature of every attack: a batch of correctly classified images in, candidates
    out. `target` None means untargeted; `seed` and `keys` (one per row, naming it whatever the
    batching) key whatever the attack draws at random."""

    def __call__(
        self,
        *,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        params: P_contra,
        seed: int,
        keys: np.ndarray,
    ) -> Found: ...


@dataclass(frozen=True)
class AttackKind(Generic[P]):
    """One kind of the attack registry (kinds.py): its settings, its function, and what the rest of
    the suite needs to know about it, so that nothing re-derives that from the kind's name. Exactly
    one of `minimal_norm` and `budget` is given."""

    name: str  # the manifest's `kind`
    params: type[P]
    attack: Attack[P]
    minimal_norm: str | None = None  # minimal-perturbation kinds: the norm they minimise
    budget: Callable[[P], Budget] | None = None  # fixed-budget kinds: settings → their ε balls
    softmax_gradient: bool = False  # follows the gradient of the softmax cross-entropy
    single_step: bool = False  # one gradient step (FGSM): weaker than an iterative attack
    ensemble: bool = False  # records name the member that succeeded (column `component`)
    gradient_free: Callable[[P], bool] | None = None  # settings → uses no gradient at all

    def __post_init__(self) -> None:
        """Refuse an entry that is both minimal-norm and fixed-budget, or neither."""
        if (self.minimal_norm is None) == (self.budget is None):
            raise ValueError(f"attack kind {self.name!r}: give exactly one of minimal_norm, budget")

    @property
    def fixed_budget(self) -> bool:
        """Runs at the ε balls of its settings instead of minimising a norm."""
        return self.budget is not None

    def default_norm(self) -> str:
        """The norm it minimises, or that its default settings bound: the norm of records that do
        not carry their own (the transfer of a fixed-budget attack)."""
        if self.budget is not None:
            return self.budget(self.params()).norm
        assert self.minimal_norm is not None  # __post_init__
        return self.minimal_norm


def per_sample(x: Tensor, value: float | bool, dtype: torch.dtype = torch.float32) -> Tensor:
    """A vector with one `value` per sample of `x`, on its device."""
    return torch.full((len(x),), value, dtype=dtype, device=x.device)


def rows(v: Tensor) -> Tensor:
    """View a per-sample vector [B] as [B, 1, 1, 1] so it broadcasts over images."""
    return v.view(-1, 1, 1, 1)


def cosine(start: float, end: float, i: int | Tensor, steps: int) -> float | Tensor:
    """The value at step `i` of `steps` of a cosine schedule from `start` down to `end` (DDN, FMN;
    C&W L2 with a per-sample tensor of steps)."""
    if isinstance(i, Tensor):
        return end + (start - end) * (1 + torch.cos(torch.pi * i / steps)) / 2
    return end + (start - end) * (1 + math.cos(math.pi * i / steps)) / 2


def step_onto_sphere(x: Tensor, delta: Tensor, grad: Tensor, step: float, eps: Tensor) -> Tensor:
    """DDN's and FMN's move: `step` along the L2-normalised `grad`, rescale δ to norm `eps` per
    sample, then clip x + δ to [0, 1]."""
    delta = delta + step * grad / rows(grad.flatten(1).norm(dim=1).clamp_min(1e-12))
    delta = delta * rows(eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12))
    return (x + delta).clamp(0, 1) - x


def to_tanh_space(x: Tensor) -> Tensor:
    """Map images in [0, 1] to the unbounded C&W variable w, with x = (tanh(w) + 1) / 2."""
    return torch.atanh((2 * x - 1) * (1 - 1e-6))


def from_tanh_space(w: Tensor) -> tuple[Tensor, Tensor]:
    """Image (tanh(w) + 1) / 2 in [0, 1] and its elementwise derivative dx/dw."""
    t = torch.tanh(w)
    return (t + 1) / 2, (1 - t * t) / 2


def margin(logits: Tensor, cls: Tensor, targeted: bool) -> Tensor:
    """C&W's f6 before the κ clamp: Z_y − max_{i≠y} Z_i, or max_{i≠t} Z_i − Z_t when targeted.

    Negative means adversarial."""
    z_cls = logits.gather(1, cls[:, None]).squeeze(1)
    z_other = logits.scatter(1, cls[:, None], float("-inf")).amax(1)
    return z_other - z_cls if targeted else z_cls - z_other


def margin_and_grad(
    model: nn.Module, x: Tensor, cls: Tensor, targeted: bool
) -> tuple[Tensor, Tensor]:
    """One forward+backward: the margin at `x` and its gradient with respect to `x`."""
    x = x.detach().requires_grad_(True)
    m = margin(model(x), cls, targeted)
    (g,) = torch.autograd.grad(m.sum(), x)
    return m.detach(), g


def ce_and_grad(model: nn.Module, x: Tensor, cls: Tensor, targeted: bool) -> tuple[Tensor, Tensor]:
    """One forward+backward: logits and the gradient of the objective to ascend — softmax
    cross-entropy of the label (untargeted), minus that of the target (targeted)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    ce = F.cross_entropy(logits, cls, reduction="sum")
    (g,) = torch.autograd.grad(-ce if targeted else ce, x)
    return logits.detach(), g


def hits(pred: Tensor, cls: Tensor, targeted: bool) -> Tensor:
    """Whether a prediction is a success: the target when targeted, anything but y otherwise."""
    return pred == cls if targeted else pred != cls


def adam_step(
    w: Tensor, g: Tensor, m: Tensor, v: Tensor, t: Tensor, lr: float | Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One Adam step (β = 0.9, 0.999) with a per-sample step count `t`, so samples restart alone;
    `lr` is one rate or a per-sample one."""
    t = t + 1
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    m_hat = m / rows(1 - 0.9**t)
    v_hat = v / rows(1 - 0.999**t)
    step = rows(lr) if isinstance(lr, Tensor) else lr
    return w - step * m_hat / (v_hat.sqrt() + 1e-8), m, v, t

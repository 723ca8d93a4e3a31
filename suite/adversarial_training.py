"""Adversarial training (Madry et al. 2018, at L∞ or L2; fast FGSM with random start, Wong, Rice &
Kolter 2020) and Adversarially Robust Distillation (Goldblum, Fowl, Feizi & Goldstein, AAAI 2020),
as pure per-batch losses that `training.fit` minimises, plus the per-epoch robust-accuracy check.

The inner maximisation here is not `attacks.pgd.pgd`: that attack stops each sample at its first
misclassification and returns the clean image where it finds none, which is what an attack record
needs (the smallest ε that works); training needs the point of highest loss in the ε-ball for every
sample, so it runs all steps and keeps the last iterate. The robust-accuracy check does call the
suite's `pgd-linf` attack, so the curves use the same attack as the report.
"""

import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from suite.attacks import ATTACK_PARAMS, run_attack
from suite.attacks.common import ce_and_grad, rows
from suite.attacks.pgd import project_to_ball, steepest_direction


@dataclass(frozen=True)
class PGDTraining:
    """PGD training examples in the L∞ (or L2) ε-ball: `steps` steepest-ascent steps of
    `step_size` × ε (signed gradient for L∞, the L2-normalised gradient for L2) from a uniform start
    in the ball (or from x). One step of 1.25 ε from a random start is Wong et al.'s FGSM-RS; 40
    steps of ε/30 (0.01 at ε = 0.3) is Madry et al.'s MNIST setting."""

    eps: float
    steps: int
    step_size: float
    random_start: bool = True
    norm: Literal["linf", "l2"] = "linf"

    def identity(self) -> dict[str, object]:
        """The settings a trained model's config hash and params are made of; `norm` only where it
        is not L∞, so models trained before L2 training existed keep their hashes."""
        fields = asdict(self)
        if self.norm == "linf":
            del fields["norm"]
        return fields


def eps_schedule(s: PGDTraining, warmup_batches: int) -> Iterator[PGDTraining]:
    """The settings of each training batch in turn: ε grows linearly to `s.eps` over the first
    `warmup_batches` batches, then stays. On a CPU-sized budget a deep MNIST net trained at ε = 0.3
    from its first batch sits at chance for epochs (measured: cw-mnist, FGSM-RS, mnist-5k)."""
    for batch in itertools.count(1):
        yield replace(s, eps=s.eps * min(1.0, batch / max(warmup_batches, 1)))


def pgd_examples(model: nn.Module, x: Tensor, y: Tensor, s: PGDTraining) -> Tensor:
    """The cross-entropy maximiser within the `s.norm` ε-ball around `x` (clipped to [0, 1]) after
    `s.steps` steps, for every sample, with the step and projection of the suite's PGD attack. The
    model is attacked in eval mode (the deployed network, no dropout noise in the gradient) and put
    back in the mode it was in. The random start draws from torch's global generator, which the
    training seed fixes."""
    was_training = model.training
    model.eval()
    x = x.detach()
    delta = _uniform_in_ball(x, s) if s.random_start else torch.zeros_like(x)
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(s.steps):
        _, grad = ce_and_grad(model, x + delta, y, targeted=False)
        delta = project_to_ball(
            delta + s.step_size * s.eps * steepest_direction(grad, s.norm), s.eps, s.norm
        )
        delta = (x + delta).clamp(0, 1) - x
    model.train(was_training)
    return (x + delta).detach()


def _uniform_in_ball(x: Tensor, s: PGDTraining) -> Tensor:
    """One uniform draw per sample from the `s.norm` ε-ball, from torch's global generator."""
    if s.norm == "linf":
        return (2 * torch.rand_like(x) - 1) * s.eps
    direction = torch.randn_like(x)
    direction = direction / rows(direction.flatten(1).norm(dim=1).clamp_min(1e-12))
    radius = torch.rand(len(x), device=x.device) ** (1 / x[0].numel())
    return s.eps * rows(radius) * direction


def adversarial_batch(
    model: nn.Module, x: Tensor, y: Tensor, s: PGDTraining
) -> tuple[Tensor, Tensor]:
    """Madry et al.'s objective on one batch: cross-entropy on the PGD examples only.
    Returns (logits on the adversarial examples, loss)."""
    logits = model(pgd_examples(model, x, y, s))
    return logits, F.cross_entropy(logits, y)


def ard_loss(
    student_adv_logits: Tensor,
    student_clean_logits: Tensor | None,
    teacher_clean_logits: Tensor,
    y: Tensor,
    alpha: float,
    temperature: float,
) -> Tensor:
    """Goldblum et al.'s ARD loss, batch mean:
    α T² KL(softmax(T(x)/T) ‖ softmax(S(x+δ)/T)) + (1 − α) CE(S(x), y).

    The KL is the distillation KL (teacher's distribution first, as in Hinton et al. and the
    authors' `KLDivLoss(log_softmax(S/T), softmax(T/T))`), summed over classes; the authors' code
    uses `KLDivLoss()`'s element mean, 1/10 of this on 10 classes. `student_clean_logits` may be None
    when α = 1 (the paper's default), where the cross-entropy term vanishes."""
    log_p_student = F.log_softmax(student_adv_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_clean_logits / temperature, dim=1)
    loss = alpha * temperature**2 * F.kl_div(log_p_student, p_teacher, reduction="batchmean")
    if alpha < 1:
        if student_clean_logits is None:
            raise ValueError("ard_loss needs the student's clean logits when alpha < 1")
        loss = loss + (1 - alpha) * F.cross_entropy(student_clean_logits, y)
    return loss


def ard_batch(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    teacher_logits: Tensor,
    s: PGDTraining,
    *,
    alpha: float,
    temperature: float,
) -> tuple[Tensor, Tensor]:
    """One ARD batch: δ is PGD on the *student's* cross-entropy against the hard labels (as in the
    paper and the authors' code), the teacher's logits are on the clean `x`. Returns (student
    logits on x + δ, loss)."""
    adv_logits = model(pgd_examples(model, x, y, s))
    clean_logits = model(x) if alpha < 1 else None
    return adv_logits, ard_loss(adv_logits, clean_logits, teacher_logits, y, alpha, temperature)


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    steps: int,
    seed: int,
    norm: Literal["linf", "l2"] = "linf",
) -> float:
    """Share of `x` classified correctly both clean and under the suite's `pgd-linf` (or `pgd-l2`)
    attack at `eps` (`steps` steps of 2.5 ε / steps from a random start), on the model's own device:
    robust accuracy with every digit in the denominator."""
    kind = f"pgd-{norm}"
    params = ATTACK_PARAMS[kind](eps=[eps], steps=steps, step_size=2.5 / steps)
    records = run_attack(kind, params, model, x, y, np.arange(len(x)), seed=seed).records
    robust = records["clean_correct"].to_numpy(bool) & ~records["success"].to_numpy(bool)
    return float(robust.mean())

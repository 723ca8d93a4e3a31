"""Adversarial training (the positive control) and ARD: robustness that the attacks can see, the
ARD loss against a hand computation, both conditions from a manifest, and their manifest errors."""

import math

import pytest
import torch
from torch.nn import functional as F

from suite.adversarial_training import (
    PGDTraining,
    adversarial_batch,
    ard_batch,
    ard_loss,
    pgd_examples,
    robust_accuracy,
)
from suite.models import build_model
from suite.training import Recipe, fit

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def _tiny(splits, batch_loss=None):
    """The tiny net trained 2 epochs on every third mnist-5k training digit (the split is sorted by
    class), seed 0, normally or adversarially."""
    torch.manual_seed(0)
    model = build_model("tiny", dropout=0.0)
    x, y = splits.train.x[::3], splits.train.y[::3]
    recipe = Recipe(epochs=2, batch_size=64, optimizer="adam", lr=3e-3)
    fit(model, x, y, y, recipe, seed=0, device=CPU, batch_loss=batch_loss)
    return model


def test_adversarial_training_raises_pgd_robust_accuracy_at_small_eps(mnist5k_splits):
    s = PGDTraining(eps=0.1, steps=2, step_size=0.75)
    plain = _tiny(mnist5k_splits)
    robust = _tiny(mnist5k_splits, lambda m, x, t, y: adversarial_batch(m, x, y, s))
    x, y = mnist5k_splits.test.x[::5], mnist5k_splits.test.y[::5]
    acc = {
        name: robust_accuracy(model, x, y, 0.1, steps=10, seed=0, device=CPU)
        for name, model in (("plain", plain), ("robust", robust))
    }
    clean = (robust(x).argmax(1) == y).float().mean().item()
    print(acc, clean)
    assert clean > 0.8, clean
    assert acc["robust"] > acc["plain"] + 0.2, acc


def test_pgd_examples_stay_in_the_box_and_the_ball_and_raise_the_loss(trained_tiny, mnist5k_splits):
    x, y = mnist5k_splits.test.x[::16], mnist5k_splits.test.y[::16]
    torch.manual_seed(0)
    x_adv = pgd_examples(trained_tiny, x, y, PGDTraining(eps=0.1, steps=5, step_size=0.5))
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():
        assert F.cross_entropy(trained_tiny(x_adv), y) > 2 * F.cross_entropy(trained_tiny(x), y)


def _kl_ce_by_hand(s_adv, s_clean, t_logits, y, alpha, temp):
    """The ARD loss written out per sample with Python floats."""
    total = 0.0
    for i in range(len(y)):
        zs = [v / temp for v in s_adv[i].tolist()]
        zt = [v / temp for v in t_logits[i].tolist()]
        log_q = [v - math.log(sum(math.exp(u) for u in zs)) for v in zs]
        p = [math.exp(v) / sum(math.exp(u) for u in zt) for v in zt]
        kl = sum(pi * (math.log(pi) - qi) for pi, qi in zip(p, log_q, strict=True))
        zc = s_clean[i].tolist()
        ce = math.log(sum(math.exp(u) for u in zc)) - zc[int(y[i])]
        total += alpha * temp**2 * kl + (1 - alpha) * ce
    return total / len(y)


def test_ard_loss_equals_the_hand_computed_batch():
    s_adv = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    s_clean = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 2.0, 1.0]])
    t_logits = torch.tensor([[4.0, 1.0, -3.0], [0.5, 0.5, 6.0]])
    y = torch.tensor([0, 2])
    for alpha, temp in ((0.7, 4.0), (1.0, 30.0)):
        got = ard_loss(s_adv, s_clean, t_logits, y, alpha, temp).item()
        assert got == pytest.approx(
            _kl_ce_by_hand(s_adv, s_clean, t_logits, y, alpha, temp), rel=1e-5
        )


def test_ard_batch_matches_the_teacher_on_clean_inputs_at_the_students_pgd_examples(
    trained_tiny, mnist5k_splits
):
    x, y = mnist5k_splits.test.x[::125], mnist5k_splits.test.y[::125]
    torch.manual_seed(1)
    student = build_model("tiny", dropout=0.0)
    with torch.no_grad():
        t_logits = trained_tiny(x)  # the teacher's outputs on the clean digits
    s = PGDTraining(eps=0.2, steps=3, step_size=0.5)
    torch.manual_seed(7)
    logits, loss = ard_batch(student, x, y, t_logits, s, alpha=0.5, temperature=5.0)

    torch.manual_seed(7)  # the same random start: the student's own PGD examples
    x_adv = pgd_examples(student, x, y, s)
    assert not torch.equal(x_adv, x)
    on_teacher_pgd = pgd_examples(trained_tiny, x, y, s)
    with torch.no_grad():
        s_adv, s_clean = student(x_adv), student(x)
    assert torch.allclose(logits, s_adv)
    assert loss.item() == pytest.approx(
        _kl_ce_by_hand(s_adv, s_clean, t_logits, y, 0.5, 5.0), rel=1e-5
    )
    with torch.no_grad():  # not the student at the teacher's adversarial points
        other = _kl_ce_by_hand(student(on_teacher_pgd), s_clean, t_logits, y, 0.5, 5.0)
    assert loss.item() != pytest.approx(other, rel=1e-3)

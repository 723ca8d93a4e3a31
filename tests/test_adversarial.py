"""Adversarial training (the positive control) and ARD: robustness that the attacks can see, the
ARD loss against a hand computation, both conditions from a manifest, and their manifest errors."""

import math
import textwrap
import tomllib

import pytest
import torch
from torch.nn import functional as F
from typer.testing import CliRunner

from suite.adversarial_training import (
    PGDTraining,
    adversarial_batch,
    ard_batch,
    ard_loss,
    eps_schedule,
    pgd_examples,
    robust_accuracy,
)
from suite.cli import app
from suite.manifest import baselines, validate_manifest
from suite.models import build_model
from suite.runner import run_manifest
from suite.tracking import Store
from suite.training import Recipe, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(splits, batch_loss=None):
    """The tiny net trained 2 epochs on the mnist-5k training split, seed 0, normally or
    adversarially."""
    torch.manual_seed(0)
    model = build_model("tiny", dropout=0.0)
    x, y = splits.train.x, splits.train.y
    recipe = Recipe(epochs=2, batch_size=64, optimizer="adam", lr=3e-3)
    fit(model, x, y, y, recipe, seed=0, batch_loss=batch_loss)
    return model


def test_adversarial_training_raises_pgd_robust_accuracy_at_small_eps(mnist5k_splits):
    s = PGDTraining(eps=0.1, steps=2, step_size=0.75)
    plain = _tiny(mnist5k_splits)
    robust = _tiny(mnist5k_splits, lambda m, x, t, y: adversarial_batch(m, x, y, s))
    x, y = mnist5k_splits.test.x[::5], mnist5k_splits.test.y[::5]
    acc = {
        name: robust_accuracy(model, x, y, 0.1, steps=10, seed=0)
        for name, model in (("plain", plain), ("robust", robust))
    }
    clean = (robust(x).argmax(1) == y).float().mean().item()
    assert clean > 0.8, clean
    assert acc["robust"] > acc["plain"] + 0.15, acc  # measured: 0.66 vs 0.395 (200 test digits)


def test_pgd_examples_stay_in_the_box_and_the_ball_and_raise_the_loss(trained_tiny, mnist5k_splits):
    x, y = mnist5k_splits.test.x[::16], mnist5k_splits.test.y[::16]
    torch.manual_seed(0)
    x_adv = pgd_examples(trained_tiny, x, y, PGDTraining(eps=0.1, steps=5, step_size=0.5))
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():
        assert F.cross_entropy(trained_tiny(x_adv), y) > 2 * F.cross_entropy(trained_tiny(x), y)


def test_l2_pgd_examples_stay_in_the_box_and_the_l2_ball_and_raise_the_loss(
    trained_tiny, mnist5k_splits
):
    x, y = mnist5k_splits.test.x[::16], mnist5k_splits.test.y[::16]
    torch.manual_seed(0)
    s = PGDTraining(eps=1.5, steps=5, step_size=0.5, norm="l2")
    x_adv = pgd_examples(trained_tiny, x, y, s)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert norms.max() <= 1.5 + 1e-5 and norms.median() > 1.0  # it uses the ball, inside it
    assert (x_adv - x).abs().max() > 0.1  # an L2 step concentrates: not an L∞-0.1 perturbation
    with torch.no_grad():
        assert F.cross_entropy(trained_tiny(x_adv), y) > 2 * F.cross_entropy(trained_tiny(x), y)


def test_linf_pgd_examples_are_the_former_loop_bit_for_bit(trained_tiny, mnist5k_splits):
    """L2 training left the L∞ examples (and so every stored L∞-trained model) unchanged: the loop
    as it was written before, step for step."""
    x, y = mnist5k_splits.test.x[::16], mnist5k_splits.test.y[::16]
    s = PGDTraining(eps=0.3, steps=4, step_size=0.25)
    torch.manual_seed(3)
    got = pgd_examples(trained_tiny, x, y, s)
    torch.manual_seed(3)
    trained_tiny.eval()
    delta = (2 * torch.rand_like(x) - 1) * s.eps
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(s.steps):
        xd = (x + delta).requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(trained_tiny(xd), y, reduction="sum"), xd)
        delta = (delta + s.step_size * s.eps * grad.sign()).clamp(-s.eps, s.eps)
        delta = (x + delta).clamp(0, 1) - x
    assert torch.equal(got, x + delta)


def test_training_identity_leaves_linf_hashes_as_they_were():
    """The config hash of an L∞-trained model is made of the fields it had before `norm` existed;
    an L2 one names its norm."""
    linf = PGDTraining(eps=0.3, steps=10, step_size=0.25)
    assert linf.identity() == {"eps": 0.3, "steps": 10, "step_size": 0.25, "random_start": True}
    assert PGDTraining(2.0, 10, 0.25, norm="l2").identity()["norm"] == "l2"


def test_l2_adversarial_training_raises_l2_pgd_robust_accuracy(mnist5k_splits):
    s = PGDTraining(eps=1.5, steps=3, step_size=0.5, norm="l2")
    plain = _tiny(mnist5k_splits)
    robust = _tiny(mnist5k_splits, lambda m, x, t, y: adversarial_batch(m, x, y, s))
    x, y = mnist5k_splits.test.x[::5], mnist5k_splits.test.y[::5]
    acc = {
        name: robust_accuracy(model, x, y, 1.5, steps=10, seed=0, norm="l2")
        for name, model in (("plain", plain), ("robust", robust))
    }
    assert acc["robust"] > acc["plain"] + 0.1, acc  # measured: 0.535 vs 0.335 (200 test digits)


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


def test_eps_warms_up_linearly_then_stays():
    got = [
        s.eps for _, s in zip(range(6), eps_schedule(PGDTraining(0.3, 1, 1.25), 4), strict=False)
    ]
    assert got == pytest.approx([0.075, 0.15, 0.225, 0.3, 0.3, 0.3])
    assert next(eps_schedule(PGDTraining(0.3, 1, 1.25), 0)).eps == 0.3


E2E = {
    "experiment": {"name": "controls-e2e", "seeds": [0], "device": "cpu"},
    "data": {"dataset": "mnist-5k", "train_samples": 400, "val_samples": 100, "attack_samples": 10},
    "model": {"arch": "tiny"},
    "train": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 0.003, "dropout": 0.0},
    "conditions": [
        {"name": "adv", "kind": "adversarial", "eps": 0.1, "steps": 2, "val_samples": 20},
        {
            "name": "ard",
            "kind": "ard",
            "teacher": "adv",
            "method": "fgsm-rs",
            "eps": 0.1,
            "temperature": 5,
            "val_samples": 20,
        },
    ],  # fmt: skip
    "attacks": [{"name": "fgsm", "kind": "fgsm", "params": {"eps": [0.1]}}],
}


def test_both_conditions_run_from_a_manifest_and_ard_reuses_its_teacher(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    rows = run_manifest(validate_manifest(E2E, "test"), store=store)
    got = {r.condition: r for r in rows}
    assert [r.status for r in rows] == ["FINISHED"] * 2
    assert got["ard"].role == "student" and "fgsm" in got["ard"].attacks
    student = store.client.get_run(got["ard"].run_id)
    assert student.data.tags["teacher_run_id"] == got["adv"].run_id
    assert student.data.params["adversarial.method"] == "fgsm-rs"
    exp = store.experiment_id("controls-e2e", create=False)
    adv_runs = store.client.search_runs([exp], "tags.condition = 'adv' and tags.role = 'model'")
    assert len(adv_runs) == 1  # the teacher was trained once, by its own condition
    for name in ("adv", "ard"):
        curve = store.client.get_metric_history(got[name].run_id, "val_robust_acc")
        assert [p.step for p in curve] == [1, 2]
        assert all(0 <= p.value <= 1 for p in curve)


MANIFEST = """
[experiment]
name = "t"
seeds = [0]
[model]
arch = "tiny"
[[conditions]]
name = "adv"
kind = "adversarial"
eps = 0.3
steps = 7
[[conditions]]
name = "ard"
kind = "ard"
teacher = "adv"
"""

BAD = [
    ("eps = 0.3", "eps = 0", "conditions[0].eps: must be > 0 (got 0)"),
    ("eps = 0.3", "eps = -0.1", "conditions[0].eps: must be > 0 (got -0.1)"),
    ("steps = 7", "steps = 0", "conditions[0].steps: must be >= 1 (got 0)"),
    (
        'teacher = "adv"',
        'teacher = "robust"',
        "conditions[1].teacher: no condition listed before this one has that name; "
        "name one of ['adv'] (got 'robust')",
    ),
    (
        'teacher = "adv"',
        'teacher = "ard"',
        "conditions[1].teacher: no condition listed before this one has that name; "
        "name one of ['adv'] (got 'ard')",
    ),
    (
        "steps = 7",
        'steps = 7\nmethod = "fgsm-rs"',
        'conditions[0].steps: fgsm-rs takes exactly one step; use method = "pgd" for more (got 7)',
    ),
    (
        "steps = 7",
        'steps = 1\nmethod = "fgsm-rs"\nnorm = "l2"',
        'conditions[0].norm: fgsm-rs is an L∞ method; use method = "pgd" for L2 training '
        "(got 'l2')",
    ),
    (
        "eps = 0.3",
        "eps = 1.5",
        "conditions[0].eps: an L∞ radius above 1 covers the whole pixel box; use ≤ 1 (got 1.5)",
    ),
    ("eps = 0.3", 'eps = 30\nnorm = "l2"', "conditions[0].eps: must be <= 28 (got 30)"),
    (
        "eps = 0.3",
        'eps = 1\nnorm = "l1"',
        "conditions[0].norm: must be one of 'linf' or 'l2' (got 'l1')",
    ),
    (
        'teacher = "adv"',
        'teacher = "adv"\nalpha = 1.5',
        "conditions[1].alpha: must be <= 1 (got 1.5)",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), BAD, ids=[b[2][:40] for b in BAD])
def test_bad_settings_are_one_line_validate_errors(tmp_path, old, new, expected):
    assert old in MANIFEST
    path = tmp_path / "m.toml"
    path.write_text(textwrap.dedent(MANIFEST.replace(old, new, 1)))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"{path}: {expected}"]


def test_matched_baseline_is_the_standard_condition_with_the_same_epochs(tmp_path):
    text = MANIFEST.replace(
        '[[conditions]]\nname = "adv"',
        '[train]\nepochs = 5\n[[conditions]]\nname = "std5"\nkind = "standard"\n'
        '[[conditions]]\nname = "std3"\nkind = "standard"\nepochs = 3\n'
        '[[conditions]]\nname = "adv"\nepochs = 3',
        1,
    )
    m = validate_manifest(tomllib.loads(textwrap.dedent(text)), "m.toml")
    raw = [c.model_dump(mode="json") for c in m.conditions]
    assert baselines(raw, m.train.epochs) == {"adv": "std3", "ard": "std5"}


def test_a_control_with_its_own_seeds_runs_only_them_and_keeps_its_hash(tmp_path):
    """`seeds` on a control: the runner makes only those jobs (the standard baseline runs every
    seed); the setting is left out of the hash, so narrowing a control's seeds reuses its models;
    the report and the published 'incomplete' list then hold only the seeds the manifest runs."""
    from suite.report.collect import collect
    from suite.report.publish import incomplete

    std = {"name": "std", "kind": "standard"}
    raw = {**E2E, "experiment": {**E2E["experiment"], "name": "own-seeds", "seeds": [0, 1]}}
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    first = run_manifest(validate_manifest(raw | {"conditions": [std, E2E["conditions"][0]]}, "t"),
                         store=store)  # fmt: skip
    assert sorted((r.condition, r.seed) for r in first) == [
        (c, s) for c in ("adv", "std") for s in (0, 1)
    ]
    spec = validate_manifest(
        raw | {"conditions": [std, {**E2E["conditions"][0], "seeds": [1]}]}, "t"
    )
    assert spec.seeds_of("std") == [0, 1] and spec.seeds_of("adv") == [1]
    rows = run_manifest(spec, store=store)
    assert sorted((r.condition, r.seed) for r in rows) == [("adv", 1), ("std", 0), ("std", 1)]
    assert all(r.status == "FINISHED" and r.reused for r in rows)
    data = collect(store, "own-seeds")
    ran = data.accuracy[data.accuracy["condition"] == "adv"]["seed"].tolist()
    assert data.seeds_of == {"adv": [1]} and ran == [1] and incomplete(data) == []
    from suite.report.render import _asked_seeds
    from suite.report.tables import accuracy_table

    table = accuracy_table(data.accuracy, ["std", "adv"], _asked_seeds(data, ["std", "adv"]))
    assert dict(zip(table["condition"], table["seeds_total"], strict=True)) == {"std": 2, "adv": 1}


OWN_SEEDS_BAD = [
    (
        {"seeds": [0, 7]},
        [],
        "conditions[0].seeds: must be distinct seeds of experiment.seeds [0, 1]",
    ),
    (
        {"seeds": [1, 1]},
        [],
        "conditions[0].seeds: must be distinct seeds of experiment.seeds [0, 1]",
    ),
    (
        {"seeds": [1]},
        [{"name": "ard", "kind": "ard", "teacher": "adv", "seeds": [0]}],
        "conditions[1].seeds: its teacher 'adv' does not run them all",
    ),
    (
        {"seeds": [1]},
        [{"name": "std", "kind": "standard"}],
        "attacks[1].source: a transfer source must run every seed of experiment.seeds",
    ),
]


@pytest.mark.parametrize(
    ("adv", "more", "expected"), OWN_SEEDS_BAD, ids=[b[2][:40] for b in OWN_SEEDS_BAD]
)
def test_a_controls_own_seeds_are_checked_against_the_experiment_teacher_and_transfers(
    adv, more, expected
):
    from suite.errors import ManifestError

    raw = {
        **E2E,
        "experiment": {**E2E["experiment"], "seeds": [0, 1]},
        "conditions": [{"name": "adv", "kind": "adversarial", **adv}, *more],
        "attacks": [
            *E2E["attacks"],
            {"name": "fgsm-from-adv", "kind": "fgsm", "source": "adv", "params": {"eps": [0.1]}},
        ],
    }
    with pytest.raises(ManifestError) as err:
        validate_manifest(raw, "m.toml")
    assert expected in str(err.value)

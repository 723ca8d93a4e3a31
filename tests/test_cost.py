"""The dry run's cost model: pass counts of every attack kind and condition kind against hand
counts, a prediction against the measured time of the same work, and a CLI run that writes nothing."""

import time

import pytest
import torch
from tiny_manifests import tiny_manifest, to_toml
from typer.testing import CliRunner

from suite.attacks import ATTACK_PARAMS
from suite.cli import app
from suite.cost import attack_work, estimate, job_parts, rate_key
from suite.manifest import validate_manifest
from suite.models import build_model
from suite.training import Recipe, fit

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")

HAND = [  # (kind, params, passes per digit, an upper bound?)
    ("cw-l2", {"binary_steps": 4, "max_iterations": 100}, 400, False),
    ("cw-l2", {"binary_steps": 2, "max_iterations": 50, "abort_failing": True}, 100, True),
    ("ddn", {"steps": 200}, 200, False),
    ("fmn", {"steps": 150}, 150, False),
    ("fmn-linf", {"steps": 80}, 80, False),
    ("pgd-linf", {"eps": [0.1, 0.3], "steps": 40, "restarts": 2}, 160, True),
    ("pgd-l2", {"eps": [1.0], "steps": 10}, 10, True),
    ("fgsm", {"eps": [0.1, 0.2, 0.3]}, 3, False),
    # APGD-CE 100 + APGD-T 9 targets x 100, at each of three eps
    ("autoattack", {"version": "custom", "attacks": ["apgd-ce", "apgd-t"]}, 3 * 1000, True),
    ("autoattack", {"version": "custom", "attacks": ["square"], "eps": [0.3]}, 5000, True),
    # the standard version: APGD-CE, APGD-T, FAB-T (9 targets x 2 passes x 100), Square's 5,000
    # queries at a third of a gradient pass each
    ("autoattack", {"eps": [0.3]}, 100 + 900 + 1800 + 5000 / 3, True),
]


@pytest.mark.parametrize(("kind", "params", "per_digit", "bound"), HAND)
def test_attack_passes_are_the_hand_counted_loop(kind, params, per_digit, bound):
    work = attack_work(kind, params, 50, 256, "a", "tiny")
    assert work.passes == pytest.approx(per_digit * 50)
    assert work.bound is bound and work.batch == 50
    assert work.grad == ("none" if params.get("attacks") == ["square"] else "input")


def test_every_attack_kind_is_counted_or_said_to_be_unpredictable():
    for kind in ATTACK_PARAMS:
        work = attack_work(kind, {}, 10, 256, kind, "tiny")
        assert (work.passes is None) == (kind in ("cw-linf", "cw-l0")), kind


def _manifest(conditions, attacks=(), seeds=(0, 1)):
    raw = tiny_manifest(
        "cost", seeds=list(seeds), conditions=list(conditions), attacks=list(attacks)
    )
    raw["train"] |= {"epochs": 3, "batch_size": 50}
    return validate_manifest(raw, "m.toml")


def test_condition_passes_follow_each_recipe():
    attacks = [{"name": "d", "kind": "ddn", "params": {"steps": 10}}]
    m = _manifest(
        [
            {"name": "std", "kind": "standard"},
            {
                "name": "t",
                "kind": "defensive",
                "temperature": 20,
                "teacher_epochs": 5,
                "attack_teacher": True,
            },
            {
                "name": "adv",
                "kind": "adversarial",
                "steps": 7,
                "epochs": 2,
                "val_samples": 20,
                "val_steps": 4,
                "baseline": "std",
            },
            {
                "name": "dm",
                "kind": "synthetic",
                "method": "dm",
                "ipc": 2,
                "set_seed": 0,
                "params": {"iterations": 30, "batch_real": 16, "real_bf16": True},
                "eval": {"epochs": 40},
            },
        ],  # fmt: skip
        attacks,
    )
    passes = {c: [(w.what, w.passes, w.grad) for w in job_parts(m, c, 1, 600, CPU)] for c in
              ("std", "t", "adv")}  # fmt: skip
    digits = m.data.attack_samples
    ddn = ("attack d", 10 * digits, "input")
    assert passes["std"] == [("train", 1800, "weights"), ddn]
    assert passes["t"] == [
        ("train teacher", 3000, "weights"), ("soft labels", 600, "none"),
        ("train student", 1800, "weights"), ddn, ("attack d (teacher)", *ddn[1:]),
    ]  # fmt: skip  # the teacher is attacked too
    assert passes["adv"] == [
        ("PGD-7 training examples", 600 * 2 * 7, "input"), ("train", 1200, "weights"),
        ("robust validation", 20 * 4 * 2, "input"), ddn,
    ]  # fmt: skip
    first, second = (
        [(w.what, w.passes, w.grad, w.net) for w in job_parts(m, "dm", s, 600, CPU)] for s in (0, 1)
    )
    train_on_set = ("train on the set", 20 * 40, "weights", "tiny")
    assert first == [
        ("DM synthetic", 30 * 20, "input", "convnet"),
        ("DM real", 30 * 16 * 10, "none", "convnet"),
        train_on_set, (*ddn, "tiny"),
    ]  # fmt: skip
    assert second == [train_on_set, (*ddn, "tiny")]  # the shared set is distilled once
    real = next(w for w in job_parts(m, "dm", 0, 600, CPU) if w.what == "DM real")
    assert real.bf16 and rate_key(real)[3]  # timed as it runs: the embedding in bfloat16


def test_a_predicted_training_time_is_near_the_measured_one(mnist5k_splits):
    """The prediction (passes x the bare network's time per sample, measured here) against
    `training.fit` timed in the same process on the same sizes: within a factor of 2 either way
    (the model leaves out the optimiser's step and the batching, and the one-time set-up of the
    first `fit` in a process)."""
    m = _manifest([{"name": "std", "kind": "standard"}], seeds=(0,))
    x, y = mnist5k_splits.train.x[:600], mnist5k_splits.train.y[:600]
    (job,) = estimate(m, [("std", 0)], len(y), torch.device("cpu"))
    recipe = Recipe(epochs=1, batch_size=50, optimizer="adam", lr=1e-3)
    fit(build_model("tiny"), x[:50], y[:50], y[:50], recipe, seed=0)  # once per process: ~2 s
    torch.manual_seed(0)
    model = build_model("tiny", dropout=0.0)
    start = time.perf_counter()
    fit(model, x, y, y, Recipe(epochs=3, batch_size=50, optimizer="adam", lr=1e-3), seed=0)
    actual = time.perf_counter() - start
    assert 0.5 < job.seconds[0] / actual < 2, (job.seconds[0], actual)


def test_dry_run_prints_every_job_and_writes_nothing(tmp_path, monkeypatch):
    raw = tiny_manifest(
        "dry", seeds=[0, 1], conditions=[{"name": "std", "kind": "standard"},
        {"name": "adv", "kind": "adversarial", "seeds": [1], "steps": 3}],
        attacks=[{"name": "l0", "kind": "cw-l0", "params": {"max_iterations": 5}}],
    )  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "m.toml").write_text(to_toml(raw))
    result = CliRunner().invoke(app, ["run", "m.toml", "--dry-run"])
    assert result.exit_code == 0, result.output
    for job in ("std seed 0", "std seed 1", "adv seed 1"):
        assert job in result.output
    assert "adv seed 0" not in result.output
    assert "predicted:" in result.output and "3 job(s)" in result.output
    assert "3 part(s) not predicted" in result.output  # C&W L0 on each model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.toml"]
    only = CliRunner().invoke(app, ["run", "m.toml", "--dry-run", "--only", "std", "--seed", "1"])
    assert only.exit_code == 0 and "std seed 1" in only.output and "std seed 0" not in only.output


def test_a_dry_run_counts_only_what_the_store_does_not_hold(tmp_path):
    """After a run every part is stored; a changed attack leaves its training stored and its
    attacks to do; changed training leaves nothing stored; an ARD student's key is found through
    its stored teacher."""
    from suite.runner import estimate_manifest, run_manifest
    from suite.tracking import Store

    raw = tiny_manifest(
        "dry-stored",
        conditions=[
            {"name": "t", "kind": "defensive", "temperature": 5, "attack_teacher": True},
            {"name": "ard", "kind": "ard", "teacher": "t", "method": "fgsm-rs", "eps": 0.1,
             "temperature": 5, "val_samples": 20, "epochs": 1},
        ],
        attacks=[{"name": "f", "kind": "fgsm", "params": {"eps": [0.1]}}],
    )  # fmt: skip
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    spec = validate_manifest(raw, "test")
    before = estimate_manifest(spec, store=store)
    assert all(not any(job.stored) for job in before) and all(job.total > 0 for job in before)
    assert [r.status for r in run_manifest(spec, store=store)] == ["FINISHED"] * 3

    after = {job.condition: job for job in estimate_manifest(spec, store=store)}
    assert all(all(job.stored) and job.total == 0 for job in after.values())
    assert [w.what for w in after["t"].parts][-2:] == ["attack f", "attack f (teacher)"]

    raw["attacks"][0]["params"]["eps"] = [0.2]  # another attack: the models are reused
    changed = estimate_manifest(validate_manifest(raw, "test"), store=store)
    for job in changed:
        assert [s for w, s in zip(job.parts, job.stored, strict=True) if w.attack] == [False] * (
            1 + (job.condition == "t")
        )
        assert all(s for w, s in zip(job.parts, job.stored, strict=True) if not w.attack)
    raw["train"]["epochs"] = 3  # other models: the teacher changes, so does its ARD student
    retrain = estimate_manifest(validate_manifest(raw, "test"), store=store)
    assert all(not any(job.stored) for job in retrain)


def test_a_verification_is_counted_in_bound_evaluations_and_timed_near_its_run(mnist5k_splits):
    """A certificate costs steps x digits bound evaluations at the bare network's rate; the exact
    solver adds its time limit per digit (an upper bound). The predicted certificate time against
    `verify_digits` timed here on the same digits of a fresh `tiny`: within a factor of 2."""
    from suite.verify.kinds import verify_digits

    verify = [
        {"name": "c2", "kind": "certified", "norm": "l2", "params": {"steps": 8}},
        {"name": "ex", "kind": "exact", "samples": 4, "params": {"time_limit": 3}},
    ]
    raw = tiny_manifest("cost", seeds=[0], conditions=[{"name": "std", "kind": "standard"}])
    raw["verify"] = verify
    m = validate_manifest(raw, "m.toml")
    (job,) = estimate(m, [("std", 0)], 600, CPU)
    c2, ex = (w for w in job.parts if w.verify)
    digits = m.data.attack_samples
    assert (c2.passes, c2.grad, c2.bound, c2.budget_s) == (8 * digits, "bound-l2", False, 0)
    assert (ex.passes, ex.grad, ex.bound, ex.budget_s) == (16 * 4, "bound-linf", True, 12)
    ibp = {"name": "ibp", "kind": "certified", "norm": "l2", "params": {"method": "ibp"}}
    raw["verify"] = [ibp]
    (ibp_job,) = estimate(validate_manifest(raw, "m.toml"), [("std", 0)], 600, CPU)
    (ibp_part,) = (w for w in ibp_job.parts if w.verify)  # IBP's box is timed, whatever the norm
    assert (ibp_part.grad, ibp_part.passes) == ("bound-ibp", 16 * digits)
    c2_s, ex_s = (s for w, s in zip(job.parts, job.seconds, strict=True) if w.verify)
    assert ex_s > 12
    model = build_model("tiny", dropout=0.0).eval()
    x, y = mnist5k_splits.test.x[:digits], mnist5k_splits.test.y[:digits]
    with torch.no_grad():
        y = model(x).argmax(1)  # every digit correct: each one bisected
    params = m.verify[0].params
    start = time.perf_counter()
    for lo in range(0, digits, 16):
        verify_digits("certified", params, "l2", model, x[lo : lo + 16], y[lo : lo + 16],
                      torch.arange(lo, min(lo + 16, digits)).numpy())  # fmt: skip
    actual = time.perf_counter() - start
    assert 0.5 < c2_s / actual < 2, (c2_s, actual)

"""Defensive distillation on mnist-5k: the T = 100 student masks gradients, C&W on logits still wins."""

import pytest
import torch

from suite.attacks.diagnostics import is_masking
from suite.conditions.defensive import soft_labels
from suite.data import load_splits
from suite.manifest import validate_manifest
from suite.runner import run_manifest
from suite.tracking import Store
from suite.training import accuracy, predict_logits

MANIFEST = {
    "experiment": {"name": "defensive-e2e", "seeds": [0], "device": "cpu"},
    "data": {
        "dataset": "mnist-5k",
        "train_samples": 2500,
        "val_samples": 200,
        "attack_samples": 25,
    },
    "model": {"arch": "tiny"},
    "train": {"epochs": 8, "batch_size": 64, "optimizer": "adam", "lr": 0.003, "dropout": 0.0},
    "conditions": [
        {"name": "undistilled", "kind": "standard"},
        {"name": "t100", "kind": "defensive", "temperature": 100},
    ],
    "attacks": [
        {
            "name": "cw",
            "kind": "cw-l2",
            "params": {"binary_steps": 5, "max_iterations": 300, "initial_const": 0.1},
        },
        {"name": "fgsm", "kind": "fgsm", "params": {"eps": [0.1, 0.2, 0.3]}},
    ],
}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, device):
    """The experiment run once into a temp store, on the test device; returns (manifest, store, rows)."""
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}")
    raw = {**MANIFEST, "experiment": {**MANIFEST["experiment"], "device": device.type}}
    manifest = validate_manifest(raw, "test")
    return manifest, store, run_manifest(manifest, store=store)


def by_role(rows):
    return {(r.condition, r.role): r for r in rows}


def test_student_masks_gradients_but_cw_on_logits_still_succeeds(experiment):
    manifest, store, rows = experiment
    assert all(r.status == "FINISHED" for r in rows)
    got = by_role(rows)
    base, student = got["undistilled", "model"], got["t100", "student"]
    assert base.test_acc > 0.85 and student.test_acc > 0.8

    splits = load_splits("mnist-5k", None, 2500, 200, 0)
    x = splits.test.x[:200]
    scale = {
        name: predict_logits(store.load_model(r.run_id), x).std().item()
        for name, r in (("base", base), ("student", student))
    }
    assert scale["student"] / scale["base"] > 5

    assert student.masking["saturated_fraction"] > base.masking["saturated_fraction"]
    assert student.attacks["fgsm"]["success_rate"] < base.attacks["fgsm"]["success_rate"]
    assert student.attacks["cw"]["success_rate"] >= 0.99
    assert student.masking["flagged"] == 1.0 and base.masking["flagged"] == 0.0


def test_teacher_and_student_are_linked_and_load_back_with_their_accuracy(experiment):
    _, store, rows = experiment
    got = by_role(rows)
    teacher, student = got["t100", "teacher"], got["t100", "student"]
    t_run, s_run = store.client.get_run(teacher.run_id), store.client.get_run(student.run_id)
    assert t_run.data.tags["role"] == "teacher" and s_run.data.tags["role"] == "student"
    assert s_run.data.tags["teacher_run_id"] == teacher.run_id
    assert t_run.data.tags["student_run_id"] == student.run_id
    assert s_run.data.tags["mlflow.parentRunId"] == t_run.data.tags["mlflow.parentRunId"]
    assert not teacher.attacks and "cw" in student.attacks  # the student is the model under attack
    splits = load_splits("mnist-5k", None, 2500, 200, 0)
    for run in (t_run, s_run):
        model = store.load_model(run.info.run_id)
        acc = accuracy(model, splits.test.x, splits.test.y)
        assert acc == pytest.approx(run.data.metrics["final_test_acc"], abs=1e-6)
        assert len(store.client.get_metric_history(run.info.run_id, "val_acc")) == 8


def test_rerun_reuses_both_and_new_student_epochs_retrain_only_the_student(experiment):
    manifest, store, rows = experiment
    again = by_role(run_manifest(manifest, store=store))
    assert again["t100", "teacher"].reused and again["t100", "student"].reused
    assert again["undistilled", "model"].reused
    raw = {**MANIFEST, "conditions": [dict(c) for c in MANIFEST["conditions"]]}
    raw["conditions"][1]["student_epochs"] = 2
    raw["conditions"][1]["baseline"] = "undistilled"  # no standard condition trains for 2 epochs
    changed = by_role(run_manifest(validate_manifest(raw, "test"), store=store))
    assert changed["t100", "teacher"].reused
    assert not changed["t100", "student"].reused
    assert changed["t100", "student"].run_id != by_role(rows)["t100", "student"].run_id
    assert changed["undistilled", "model"].reused


def test_soft_labels_are_tempered_teacher_probabilities():
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.Dropout(0.9)
    )
    x = torch.rand(6, 1, 28, 28)
    soft = soft_labels(teacher, x, 20.0)
    teacher.eval()
    assert torch.allclose(soft, torch.softmax(teacher(x) / 20.0, dim=1))  # eval mode: no dropout
    assert torch.allclose(soft.sum(1), torch.ones(6))


def test_masking_rule():
    assert is_masking(0.02, 1.0) and not is_masking(0.9, 1.0) and not is_masking(0.0, 0.0)


def test_attacking_the_teacher_later_reuses_both_models_and_the_report_finds_them(experiment):
    """Turning `attack_teacher` on changes the condition's parent (it is part of the condition's
    settings) but not its models: both are reused, moved under the new parent, and the report
    reads the student, the teacher and the teacher's new attacks from there."""
    from suite.report.collect import collect

    manifest, store, rows = experiment
    raw = {**MANIFEST, "conditions": [dict(c) for c in MANIFEST["conditions"]]}
    raw["conditions"][1]["attack_teacher"] = True
    again = by_role(run_manifest(validate_manifest(raw, "test"), store=store))
    first = by_role(rows)
    for role in ("teacher", "student"):
        assert again["t100", role].reused
        assert again["t100", role].run_id == first["t100", role].run_id
    data = collect(store, "defensive-e2e")
    assert "t100: no runs in the store (not run yet)" not in data.missing
    finished = data.accuracy[data.accuracy["status"] == "FINISHED"]
    pairs = set(zip(finished["condition"], finished["role"], strict=True))
    assert {("t100", "student"), ("t100", "teacher")} <= pairs
    assert {"t100", "t100/teacher"} <= set(data.attacks["condition"])

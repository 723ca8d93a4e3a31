"""The synthetic condition: distils, logs the set and the model, is attacked, and is reused on rerun;
trains the condition's own architecture with that architecture's recipe; and refuses (FAILED, with
the reason) a model that ends below the accuracy floor."""

import copy
import dataclasses
import re

import pytest
import torch

from suite.distill import RECIPES
from suite.errors import ManifestError
from suite.manifest import validate_manifest
from suite.models import MODELS, StandardisedConvNet, Tiny, build_model
from suite.runner import run_manifest
from suite.schema import ERROR, SET_FROM, SYNTHETIC_SET
from suite.tracking import Store

EVAL = {"epochs": 30, "lr": 0.01, "batch_size": 20, "augment": False, "min_test_acc": 0.0}
MANIFEST = {
    "experiment": {"name": "synthetic-e2e", "seeds": [0], "device": "cpu"},
    "data": {
        "dataset": "mnist-5k",
        "train_samples": 1000,
        "val_samples": 200,
        "attack_samples": 10,
    },
    "model": {"arch": "cw-mnist"},
    "train": {"dropout": 0.0},
    "conditions": [
        {
            "name": "dm2",
            "kind": "synthetic",
            "method": "dm",
            "ipc": 2,
            "arch": "tiny",
            "params": {"iterations": 10, "net_width": 32, "batch_real": 64},
            "eval": {**EVAL, "optimizer": "sgd"},
        },
        {
            "name": "random2",
            "kind": "synthetic",
            "method": "random",
            "ipc": 2,
            "arch": "tiny",
            "eval": {**EVAL, "optimizer": "sgd"},
        },
    ],
    "attacks": [
        {"name": "cw", "kind": "cw-l2", "params": {"binary_steps": 3, "max_iterations": 20}}
    ],
}


def test_synthetic_condition_logs_set_and_model_and_is_reused(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    manifest = validate_manifest(MANIFEST, "test")
    rows = run_manifest(manifest, store=store)
    assert [r.status for r in rows] == ["FINISHED", "FINISHED"], [r.error for r in rows]
    for row in rows:
        run = store.client.get_run(row.run_id)
        assert run.data.params["method"] in ("dm", "random") and run.data.params["ipc"] == "2"
        # the condition's arch, not model.arch, with the recipe as resolved
        assert run.data.params["model.arch"] == "tiny"
        assert run.data.params["eval.optimizer"] == "sgd" and run.data.params["eval.epochs"] == "30"
        assert run.data.params["eval.dsa_strategy"] == RECIPES["tiny"].dsa_strategy
        assert isinstance(store.load_model(run.info.run_id), Tiny)
        names = {a.path for a in store.client.list_artifacts(row.run_id, "synthetic")}
        assert names == {"synthetic/set.npz", "synthetic/grid.png"}
        saved = {
            k: torch.from_numpy(v) for k, v in store.load_arrays(row.run_id, SYNTHETIC_SET).items()
        }
        assert saved["x"].shape == (20, 1, 28, 28) and saved["y"].bincount().tolist() == [2] * 10
        assert saved["x"].min() >= 0.0 and saved["x"].max() <= 1.0
        assert 0.1 < row.test_acc <= 1.0  # trained on 20 images alone
        assert "cw" in row.attacks
    history = store.client.get_metric_history(rows[0].run_id, "distill_loss")
    assert len(history) >= 2
    again = run_manifest(manifest, store=store)
    assert all(r.reused for r in again)


def test_model_below_the_floor_is_failed_with_the_reason_and_not_attacked(tmp_path):
    """One SGD step at a tiny rate on ten images leaves a near-chance model: the default floor
    (50% clean test accuracy) refuses it, the run says why, and no attack records it."""
    raw = copy.deepcopy(MANIFEST)
    raw["experiment"]["name"] = "synthetic-floor"
    raw["conditions"] = [
        {
            "name": "undertrained",
            "kind": "synthetic",
            "method": "random",
            "ipc": 1,
            "arch": "tiny",
            "eval": {"optimizer": "sgd", "epochs": 1, "lr": 1e-4, "augment": False},
        }
    ]
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [row] = run_manifest(validate_manifest(raw, "test"), store=store)
    assert row.status == "FAILED" and not row.attacks
    assert "undertrained.eval.min_test_acc" in row.error and "below the floor 50%" in row.error
    experiment = store.experiment_id("synthetic-floor", create=False)
    [child] = store.client.search_runs(
        [experiment], "tags.condition = 'undertrained' and tags.role = 'model'"
    )
    assert child.info.status == "FAILED"
    assert "below the floor 50%" in child.data.tags[ERROR]
    assert child.data.metrics["test_acc"] < 0.5  # the accuracy that failed is kept


def test_recipe_defaults_per_architecture_and_overrides():
    raw = copy.deepcopy(MANIFEST)
    cond = raw["conditions"][1]
    del cond["eval"], cond["arch"]
    manifest = validate_manifest(raw, "test")
    spec = manifest.conditions[1].eval
    assert spec.min_test_acc == 0.5
    for arch in MODELS:
        assert spec.recipe(arch) == RECIPES[arch]
    cond["eval"] = {"lr": 0.05, "dropout": 0.25}
    spec = validate_manifest(raw, "test").conditions[1].eval
    assert spec.recipe("cw-mnist") == dataclasses.replace(
        RECIPES["cw-mnist"], lr=0.05, dropout=0.25
    )
    assert "flip" not in RECIPES["cw-mnist"].dsa_strategy.split("_")


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (
            "arch",
            "resnet",
            "conditions[1].arch: must be one of 'convnet', 'cw-mnist', 'mlp', 'mlp-small' or 'tiny'",
        ),
        ("eval", {"min_test_acc": 1.5}, "conditions[1].eval.min_test_acc: must be <= 1"),
        ("eval", {"optimizer": "rmsprop"}, "conditions[1].eval.optimizer: must be one of"),
    ],
)
def test_bad_synthetic_settings_are_one_line_errors(where, value, message):
    raw = copy.deepcopy(MANIFEST)
    raw["conditions"][1][where] = value
    with pytest.raises(ManifestError, match=re.escape(message)):
        validate_manifest(raw, "test")


def test_every_architecture_has_a_recipe_and_convnet_is_the_distillation_net():
    assert set(RECIPES) == set(MODELS)
    torch.manual_seed(0)
    model = build_model("convnet", dropout=0.0)
    assert isinstance(model, StandardisedConvNet) and model.net.classifier[-1].in_features == 2048
    x = torch.rand(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    expected = model.net((x - StandardisedConvNet.MEAN) / StandardisedConvNet.STD)
    assert torch.allclose(model(x), expected)


def test_the_accuracy_matched_control_stops_at_the_synthetic_models_accuracy(tmp_path):
    """A `matched` condition trains `model.arch` on the full split and stops at the first check
    where its validation accuracy reaches the synthetic model's of the same seed: it ends at or
    above that accuracy, within a few points, well below the fully trained network; the report
    compares the synthetic model with it in a family of its own and says so in the answer."""
    from suite.report.collect import collect
    from suite.report.render import render_report

    raw = copy.deepcopy(MANIFEST)
    raw["experiment"]["name"] = "matched-e2e"
    raw["model"]["arch"] = "tiny"
    raw["train"] = {"dropout": 0.0, "epochs": 3, "batch_size": 32, "optimizer": "adam", "lr": 3e-3}
    raw["conditions"] = [
        {"name": "full", "kind": "standard"},
        {**MANIFEST["conditions"][1], "name": "random2"},
        {"name": "acc-random2", "kind": "matched", "match": "random2", "check_every": 1},
    ]
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    rows = run_manifest(validate_manifest(raw, "test"), store=store)
    by = {r.condition: r for r in rows}
    assert all(r.status == "FINISHED" for r in rows), [r.error for r in rows]
    goal = by["random2"].val_acc
    assert goal < by["full"].val_acc - 0.05  # 20 images teach less than 1,000
    assert goal <= by["acc-random2"].val_acc < goal + 0.08
    run = store.client.get_run(by["acc-random2"].run_id)
    assert run.data.params["matched.condition"] == "random2"
    assert float(run.data.params["matched.val_acc"]) == pytest.approx(goal)
    batches = store.client.get_metric_history(by["acc-random2"].run_id, "train_loss")
    assert len(batches) == 1  # stopped within its first epoch
    data = collect(store, "matched-e2e")
    assert data.matched == {"random2": "acc-random2"}
    out = render_report(data, tmp_path / "r", formats=("md",))
    text = out.markdown.read_text()
    assert re.search(r"^## A\d+\. Against the accuracy-matched control$", text, re.M)
    assert "Against `acc-random2`, the full-data network stopped at the same validation" in text
    assert "Accuracy-matched controls" in out.answer


def test_a_matched_control_must_name_an_earlier_synthetic_condition():
    raw = copy.deepcopy(MANIFEST)
    raw["conditions"] = [
        {"name": "acc", "kind": "matched", "match": "dm2"},
        *MANIFEST["conditions"],
    ]
    with pytest.raises(ManifestError, match=r"conditions\[0\]\.match.*no synthetic condition"):
        validate_manifest(raw, "test")


def test_one_set_serves_every_seed_and_every_condition_that_distils_it_alike(tmp_path):
    """With `set_seed`, seed 1's model trains on the set seed 0's run distilled (read back from
    the store, not distilled again), and a second condition that distils alike but trains another
    recipe reuses it too; the models still differ by their own seeds."""
    raw = copy.deepcopy(MANIFEST)
    raw["experiment"].update(name="set-reuse", seeds=[0, 1])
    dm = {**MANIFEST["conditions"][0], "set_seed": 0}
    raw["conditions"] = [
        dm,
        {**dm, "name": "dm2-long", "eval": {**EVAL, "optimizer": "sgd", "epochs": 40}},
    ]
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    rows = run_manifest(validate_manifest(raw, "test"), store=store)
    assert all(r.status == "FINISHED" for r in rows), [r.error for r in rows]
    [first] = [r for r in rows if r.condition == "dm2" and r.seed == 0]
    made = store.load_arrays(first.run_id, SYNTHETIC_SET)["x"]
    assert store.metric_history(first.run_id, "distill_loss")  # distilled here
    for row in rows:
        if row is first:
            continue
        tags = store.client.get_run(row.run_id).data.tags
        assert tags[SET_FROM] == first.run_id
        assert not store.metric_history(row.run_id, "distill_loss")  # not distilled again
        assert (store.load_arrays(row.run_id, SYNTHETIC_SET)["x"] == made).all()
    weights = [store.load_model(r.run_id).state_dict() for r in rows if r.condition == "dm2"]
    assert not all(torch.equal(a, b) for a, b in zip(*[w.values() for w in weights], strict=True))

"""The synthetic condition: distils, logs the set and the model, is attacked, and is reused on rerun."""

import torch

from suite.manifest import validate_manifest
from suite.runner import run_manifest
from suite.tracking import Store

MANIFEST = {
    "experiment": {"name": "synthetic-e2e", "seeds": [0], "device": "cpu"},
    "data": {
        "dataset": "mnist-5k",
        "train_samples": 1000,
        "val_samples": 200,
        "attack_samples": 10,
    },
    "model": {"arch": "tiny"},
    "train": {"dropout": 0.0},
    "conditions": [
        {
            "name": "dm2",
            "kind": "synthetic",
            "method": "dm",
            "ipc": 2,
            "params": {"iterations": 10, "net_width": 32, "batch_real": 64},
            "eval": {"epochs": 30, "lr": 0.01, "batch_size": 20, "augment": False},
        },
        {
            "name": "random2",
            "kind": "synthetic",
            "method": "random",
            "ipc": 2,
            "eval": {"epochs": 30, "lr": 0.01, "batch_size": 20, "augment": False},
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
        names = {a.path for a in store.client.list_artifacts(row.run_id, "synthetic")}
        assert names == {"synthetic/set.pt", "synthetic/grid.png"}
        local = store.client.download_artifacts(
            row.run_id, "synthetic/set.pt", str(tmp_path / row.condition)
        )
        saved = torch.load(local)
        assert saved["x"].shape == (20, 1, 28, 28) and saved["y"].bincount().tolist() == [2] * 10
        assert saved["x"].min() >= 0.0 and saved["x"].max() <= 1.0
        assert 0.1 < row.test_acc <= 1.0  # trained on 20 images alone
        assert "cw" in row.attacks
    history = store.client.get_metric_history(rows[0].run_id, "distill_loss")
    assert len(history) >= 2
    again = run_manifest(manifest, store=store)
    assert all(r.reused for r in again)

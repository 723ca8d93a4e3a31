"""Device-correct by construction: every function that takes a model runs it on the model's own
device, whatever device the experiment names; the experiment's models live on its device.

A CPU-only machine has one real device, so the bug class (a model on one device meeting inputs
moved to another: the teacher returned on the CPU while soft labels went to CUDA) is made visible
with a `Probe` model that stays on the CPU when asked to move and refuses inputs from any other
device, run under an experiment whose device is `meta`. The same pipeline then runs for real on
the test device (SUITE_TEST_DEVICE=cuda on a GPU machine).
"""

from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from suite import schema
from suite.attacking import CPU_ATTACK_BATCH, GPU_ATTACK_ROWS, attack_batch_size, attack_model
from suite.cache import parent_run
from suite.conditions.defensive import run_defensive
from suite.data import load_splits
from suite.devices import model_device
from suite.job import Context
from suite.manifest import validate_manifest
from suite.models import build_model
from suite.progress import NullProgress
from suite.tracking import Store

MANIFEST = {
    "experiment": {"name": "device", "seeds": [0], "device": "cpu"},
    "data": {"dataset": "mnist-5k", "train_samples": 1000, "val_samples": 100, "attack_samples": 6},
    "model": {"arch": "tiny"},
    "train": {"epochs": 3, "batch_size": 64, "optimizer": "adam", "lr": 0.01, "dropout": 0.0},
    "conditions": [{"name": "t20", "kind": "defensive", "temperature": 20}],
    "attacks": [
        {
            "name": "cw",
            "kind": "cw-l2",
            "params": {"binary_steps": 2, "max_iterations": 10, "initial_const": 0.1},
        }
    ],
}


class Probe(nn.Module):
    """A model that stays where it is built (the CPU) when asked to move, and fails on inputs from
    another device: what a model placed apart from the experiment's device must survive. Records
    each call's (probe number, training, grad enabled, input dtype) in the class-wide `calls`, so
    the calls of copies (the masking diagnostic runs a float64 copy) count too."""

    calls: ClassVar[list[tuple[int, bool, bool, torch.dtype]]] = []
    built = 0

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.number = Probe.built
        Probe.built += 1

    def to(self, *args, **kwargs) -> "Probe":
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        own = model_device(self.net)
        assert x.device == own, f"input on {x.device}, model on {own}"
        Probe.calls.append((self.number, self.training, torch.is_grad_enabled(), x.dtype))
        return self.net(x)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """One store for the module (creating an SQLite store costs seconds); one experiment per test."""
    return Store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}")


def _pipeline(store: Store, experiment: str, device: torch.device):
    """Defensive distillation (teacher, soft labels, student), then C&W and the masking diagnostic
    on the student, with the experiment on `device`; returns (teacher, student, context)."""
    manifest = validate_manifest(MANIFEST, "test")
    d = manifest.data
    data = load_splits(d.dataset, None, d.train_samples, d.val_samples, d.split_seed)
    experiment_id = store.experiment_id(experiment)
    parent = parent_run(store, experiment_id, "t20", "defensive", "parent", data.digest)
    ctx = Context(
        manifest=manifest,
        data=data,
        store=store,
        experiment_id=experiment_id,
        device=device,
        progress=NullProgress(),
    )
    teacher, student = run_defensive(ctx=ctx, cond=manifest.conditions[0], seed=0, parent_id=parent)
    attacks, masking = attack_model(ctx, student, np.arange(d.attack_samples))
    assert attacks["cw"]["n_attacked"] == d.attack_samples and "saturated_fraction" in masking
    return teacher, student, ctx


def test_every_stage_runs_a_model_on_its_own_device_not_the_experiments(store, monkeypatch):
    """The experiment names `meta`; the models stay on the CPU. Training, soft labels, evaluation,
    attacks and the masking diagnostic must all feed each model on the CPU (the old code moved
    inputs to the experiment's device: the teacher crash on CUDA)."""
    monkeypatch.setattr(
        "suite.conditions.common.build_model",
        lambda arch, dropout: Probe(build_model(arch, dropout)),
    )
    monkeypatch.setattr(Probe, "calls", [])
    teacher, student, _ = _pipeline(store, "meta", torch.device("meta"))
    assert isinstance(teacher.model, Probe) and isinstance(student.model, Probe)
    t, s = teacher.model.number, student.model.number
    stages = {
        "teacher trained": (t, True, True, torch.float32),
        "teacher's soft labels and accuracy": (t, False, False, torch.float32),
        "student trained": (s, True, True, torch.float32),
        "student attacked (input gradients)": (s, False, True, torch.float32),
        "masking diagnostic (float64 gradients)": (s, False, True, torch.float64),
    }
    for stage, call in stages.items():
        assert call in Probe.calls, stage


def test_models_live_on_the_experiment_device_trained_logged_or_reused(store, device):
    """On the test device for real: teacher and student come back on it after training and logging,
    and again when the cached runs are reused (loaded from the store, which holds CPU copies)."""
    teacher, student, ctx = _pipeline(store, f"on-{device.type}", device)
    assert model_device(teacher.model) == device and model_device(student.model) == device
    again = run_defensive(
        ctx=ctx,
        cond=ctx.manifest.conditions[0],
        seed=0,
        parent_id=store.get(teacher.run_id).tags[schema.PARENT_RUN_ID],  # reuse keeps the parent
    )
    assert all(run.reused and model_device(run.model) == device for run in again)
    x = ctx.data.test.x[:50]
    with torch.no_grad():
        fresh = student.model(x.to(device)).cpu()
        loaded = again[1].model(x.to(device)).cpu()
    assert torch.allclose(fresh, loaded, atol=1e-5)


def test_model_device_is_where_the_parameters_are():
    assert model_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert model_device(nn.ReLU()) == torch.device("cpu")  # no parameters: computes on the CPU


@pytest.mark.parametrize(
    ("asked", "device_type", "n", "per", "want"),
    [
        (32, "cuda", 1000, 1, 32),  # the manifest's batch size wins everywhere
        (None, "cpu", 1000, 1, CPU_ATTACK_BATCH),
        (None, "cuda", 1000, 1, 1000),  # a GPU takes the whole attacked set at once
        (None, "cuda", 1000, 9, GPU_ATTACK_ROWS // 9),  # up to GPU_ATTACK_ROWS rows
    ],
)
def test_attack_batch_size(asked, device_type, n, per, want):
    assert attack_batch_size(asked, torch.device(device_type), n, per) == want

"""One job's context and the record of each model it produces: what every layer after the
manifest (conditions, attacking, the runner) passes along, so none imports another's package."""

from dataclasses import dataclass, field

import torch
from torch import nn

from suite.data import DataSplits
from suite.manifest import Manifest, flatten
from suite.progress import Progress
from suite.tracking import Store
from suite.training import Recipe


@dataclass
class Context:
    """Everything a condition needs that is shared by the whole experiment."""

    manifest: Manifest
    data: DataSplits
    store: Store
    experiment_id: str
    device: torch.device
    progress: Progress
    force: bool = False

    def data_config(self) -> dict:
        """The settings that fix the data split (part of every config hash)."""
        return self.data_config_of(self.manifest)

    @staticmethod
    def data_config_of(manifest: Manifest) -> dict:
        d = manifest.data
        return {
            "dataset": d.dataset,
            "train_samples": d.train_samples,
            "val_samples": d.val_samples,
            "split_seed": d.split_seed,
        }

    def recipe(self, epochs: int | None = None) -> Recipe:
        return self.recipe_of(self.manifest, epochs)

    @staticmethod
    def recipe_of(manifest: Manifest, epochs: int | None = None) -> Recipe:
        """The manifest's [train] table as the optimisation settings `training.fit` takes."""
        t = manifest.train
        return Recipe(
            epochs=epochs or t.epochs,
            batch_size=t.batch_size,
            optimizer=t.optimizer,
            lr=t.lr,
            momentum=t.momentum,
            nesterov=t.nesterov,
            weight_decay=t.weight_decay,
            lr_decay_epochs=tuple(t.lr_decay_epochs),
            lr_decay=t.lr_decay,
            precision=t.precision,
        )

    def place(self, model: nn.Module) -> nn.Module:
        """Move `model` to the experiment's device (in place) and return it: the one place where the
        suite moves a model, done when a model is built or loaded. Everything downstream runs a model
        on its own device (`suite.devices.model_device`), so a model never meets inputs elsewhere."""
        return model.to(self.device)

    def base_params(self) -> dict:
        m = self.manifest
        return flatten(
            {
                "data": {**self.data_config(), "source": self.data.source},
                "model": m.model,
                "train": m.train,
            }
        )


@dataclass
class Dependency:
    """The model another condition's models are made from (an ARD teacher, the accuracy-matched
    control's target): its run and validation accuracy, both part of the dependent's identity."""

    run_id: str
    val_acc: float


@dataclass
class ModelRun:
    """One trained (or reused) model, on the experiment's device, and where it is logged."""

    condition: str
    kind: str
    role: str
    seed: int
    run_id: str
    model: nn.Module
    reused: bool
    attack: bool
    val_acc: float
    test_acc: float
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)

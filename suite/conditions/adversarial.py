"""The positive control: adversarial training (Madry et al. 2018), or its fast FGSM-RS variant
(Wong, Rice & Kolter 2020). A model that is robust, so the study can show its instrument sees it."""

import math
from collections.abc import Iterator

import torch
from torch import nn

from suite import schema
from suite.adversarial_training import (
    PGDTraining,
    adversarial_batch,
    eps_schedule,
    robust_accuracy,
)
from suite.cache import cached_training
from suite.conditions.common import train_model
from suite.identity import ModelKey
from suite.job import Context, Dependency, ModelRun
from suite.manifest import AdversarialCondition, AdversarialSettings, Manifest, flatten


def adversarial_keys(
    m: Manifest, cond: AdversarialCondition, seed: int, dependency: Dependency | None = None
) -> list[ModelKey]:
    """The key of the condition's one model for `seed`."""
    epochs = cond.epochs or m.train.epochs
    s = cond.pgd_training()
    return [
        ModelKey(
            cond.name, cond.kind, schema.ROLE_MODEL, seed,
            (
                "adversarial", Context.data_config_of(m), m.model, m.train, epochs, s.identity(),
                cond.eps_warmup_epochs, cond.val_samples, cond.val_steps, seed,
            ),
            {**adversarial_params(cond), "train.epochs": epochs},
        )
    ]  # fmt: skip


def run_adversarial(
    *, ctx: Context, cond: AdversarialCondition, seed: int, parent_id: str
) -> list[ModelRun]:
    """Train (or reuse) one model of `model.arch` on its own PGD examples for this seed."""
    m = ctx.manifest
    epochs = cond.epochs or m.train.epochs
    s = cond.pgd_training()
    (key,) = adversarial_keys(m, cond, seed)

    def train(run_id: str):
        each = batch_settings(ctx, cond)
        return train_model(
            ctx,
            run_id,
            f"{cond.name} seed {seed}: {cond.method} ε={s.eps:g}",
            seed=seed,
            targets=ctx.data.train.y,
            epochs=epochs,
            batch_loss=lambda model, x, y, _labels: adversarial_batch(model, x, y, next(each)),
            epoch_metrics=robust_val_metric(ctx, cond, seed),
        )

    run = cached_training(ctx, parent_id, key, train, attack=True)
    return [run]


def batch_settings(ctx: Context, cond: AdversarialSettings) -> Iterator[PGDTraining]:
    """The PGD settings of each training batch: ε warmed up over `eps_warmup_epochs`."""
    batches = math.ceil(len(ctx.data.train.x) / ctx.manifest.train.batch_size)
    return eps_schedule(cond.pgd_training(), cond.eps_warmup_epochs * batches)


def adversarial_params(cond: AdversarialSettings) -> dict:
    """The resolved PGD training settings as MLflow params (`adversarial.eps`, ...)."""
    settings = {"method": cond.method, **cond.pgd_training().identity()}
    return flatten({**settings, "eps_warmup_epochs": cond.eps_warmup_epochs}, "adversarial")


def robust_val_metric(ctx: Context, cond: AdversarialSettings, seed: int):
    """`model -> {"val_robust_acc": ...}`: PGD robust accuracy at the training ε on `val_samples`
    validation digits, logged beside the clean curves after every epoch. The digits are a fixed
    random draw (the split is sorted by class, so a prefix would hold only the first classes)."""
    val = ctx.data.val
    pick = torch.randperm(len(val.x), generator=torch.Generator().manual_seed(0))[
        : cond.val_samples
    ]
    x, y = val.x[pick], val.y[pick]

    def metric(model: nn.Module) -> dict[str, float]:
        acc = robust_accuracy(
            model, x, y, cond.eps, steps=cond.val_steps, seed=seed, norm=cond.norm
        )
        return {"val_robust_acc": acc}

    return metric

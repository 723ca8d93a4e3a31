"""The positive control: adversarial training (Madry et al. 2018), or its fast FGSM-RS variant
(Wong, Rice & Kolter 2020). A model that is robust, so the study can show its instrument sees it."""

from dataclasses import asdict

from torch import nn

from suite.adversarial_training import adversarial_batch, robust_accuracy
from suite.conditions import Context, ModelRun, cached_training, train_model
from suite.manifest import AdversarialCondition, AdversarialSettings, config_hash, flatten


def run_adversarial(
    ctx: Context, cond: AdversarialCondition, seed: int, parent_id: str
) -> list[ModelRun]:
    """Train (or reuse) one model of `model.arch` on its own PGD examples for this seed."""
    m = ctx.manifest
    epochs = cond.epochs or m.train.epochs
    s = cond.pgd_training()
    cfg = config_hash(
        "adversarial", ctx.data_config(), m.model, m.train, epochs, asdict(s),
        cond.val_samples, cond.val_steps, seed,
    )  # fmt: skip
    run = cached_training(
        ctx,
        parent_id,
        condition=cond.name,
        kind=cond.kind,
        role="model",
        seed=seed,
        cfg_hash=cfg,
        params={**ctx.base_params(), **adversarial_params(cond), "seed": seed, "train.epochs": epochs},
        attack=True,
        train=lambda run_id: train_model(
            ctx,
            run_id,
            f"{cond.name} seed {seed}: {cond.method} ε={s.eps:g}",
            seed=seed,
            targets=ctx.data.train.y,
            epochs=epochs,
            batch_loss=lambda model, x, y, _labels: adversarial_batch(model, x, y, s),
            epoch_metrics=robust_val_metric(ctx, cond, seed),
        ),
    )
    return [run]


def adversarial_params(cond: AdversarialSettings) -> dict:
    """The resolved PGD training settings as MLflow params (`adversarial.eps`, ...)."""
    return flatten({"method": cond.method, **asdict(cond.pgd_training())}, "adversarial")


def robust_val_metric(ctx: Context, cond: AdversarialSettings, seed: int):
    """`model -> {"val_robust_acc": ...}`: PGD robust accuracy at the training ε on the first
    `val_samples` validation digits, logged beside the clean curves after every epoch."""
    x, y = ctx.data.val.x[: cond.val_samples], ctx.data.val.y[: cond.val_samples]

    def metric(model: nn.Module) -> dict[str, float]:
        acc = robust_accuracy(
            model, x, y, cond.eps, steps=cond.val_steps, seed=seed, device=ctx.device
        )
        return {"val_robust_acc": acc}

    return metric

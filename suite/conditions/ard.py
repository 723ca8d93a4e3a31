"""Adversarially Robust Distillation (Goldblum, Fowl, Feizi & Goldstein, AAAI 2020): distillation
meant to carry robustness. The student, of `model.arch`, is trained on its own PGD examples to match
the teacher's soft labels at temperature T on the clean inputs; the student is the model attacked.
"""

from suite import schema
from suite.adversarial_training import ard_batch
from suite.cache import cached_training
from suite.conditions.adversarial import adversarial_params, batch_settings, robust_val_metric
from suite.conditions.common import train_model
from suite.identity import ModelKey
from suite.job import Context, Dependency, ModelRun
from suite.manifest import ARDCondition, Manifest
from suite.training import predict_logits


def ard_keys(
    m: Manifest, cond: ARDCondition, seed: int, dependency: Dependency | None = None
) -> list[ModelKey]:
    """The key of the ARD student for `seed`, made from the teacher's model `dependency` (none
    without it: the student's identity is its teacher's run)."""
    if dependency is None:
        return []
    epochs = cond.epochs or m.train.epochs
    s = cond.pgd_training()
    return [
        ModelKey(
            cond.name, cond.kind, schema.ROLE_STUDENT, seed,
            (
                "ard", dependency.run_id, Context.data_config_of(m), m.model, m.train, epochs,
                s.identity(), cond.eps_warmup_epochs, cond.alpha, cond.temperature,
                cond.val_samples, cond.val_steps, seed,
            ),
            {
                **adversarial_params(cond),
                "train.epochs": epochs,
                "ard.teacher": cond.teacher,
                "ard.alpha": cond.alpha,
                "ard.temperature": cond.temperature,
            },
        )
    ]  # fmt: skip


def run_ard(*, ctx: Context, cond: ARDCondition, seed: int, parent_id: str) -> list[ModelRun]:
    """Get the teacher condition's model for this seed through `run_condition` (the registry:
    reused from the store when it was trained, as it is when listed first; trained here otherwise),
    then train (or reuse) the ARD student against it. The teacher is the last model its condition
    returns: the one that condition puts under attack (a defensive condition's student)."""
    m = ctx.manifest
    teacher_cond = next(c for c in m.conditions if c.name == cond.teacher)
    from suite.conditions import run_condition  # the registry lists this module: import it late

    teacher = run_condition(ctx=ctx, cond=teacher_cond, seed=seed, parent_id=parent_id)[-1]
    epochs = cond.epochs or m.train.epochs
    (key,) = ard_keys(m, cond, seed, Dependency(teacher.run_id, teacher.val_acc))

    def train(run_id: str):
        teacher_logits = predict_logits(teacher.model, ctx.data.train.x)
        each = batch_settings(ctx, cond)
        return train_model(
            ctx,
            run_id,
            f"{cond.name} seed {seed}: ARD from {cond.teacher}, T={cond.temperature:g}",
            seed=seed,
            targets=teacher_logits,
            epochs=epochs,
            batch_loss=lambda model, x, t_logits, y: ard_batch(
                model, x, y, t_logits, next(each), alpha=cond.alpha, temperature=cond.temperature
            ),
            epoch_metrics=robust_val_metric(ctx, cond, seed),
        )

    student = cached_training(
        ctx,
        parent_id,
        key,
        train,
        attack=True,
        tags={schema.TEACHER_RUN_ID: teacher.run_id, schema.TEACHER_CONDITION: cond.teacher},
    )
    return [student]

"""Defensive distillation (Papernot, McDaniel, Wu, Jha & Swami, IEEE S&P 2016).

The teacher is trained with softmax(logits / T) on hard labels; its soft labels
softmax(teacher logits / T) over the training set are computed once in eval mode; the student, of
the same architecture, is trained at the same T on them and deployed with its raw logits (T = 1).
"""

import torch
from torch.nn import functional as F

from suite import schema
from suite.cache import cached_training
from suite.conditions.common import train_model
from suite.identity import ModelKey
from suite.job import Context, Dependency, ModelRun
from suite.manifest import DefensiveCondition, Manifest, ModelSpec
from suite.training import predict_logits


def soft_labels(teacher: torch.nn.Module, x: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(teacher logits / T) over `x`, in eval mode (no dropout), computed on the teacher's
    device, returned on the CPU."""
    return F.softmax(predict_logits(teacher, x) / temperature, dim=1)


def defensive_keys(
    m: Manifest, cond: DefensiveCondition, seed: int, dependency: Dependency | None = None
) -> list[ModelKey]:
    """The keys of the teacher and of the student made from it, for `seed`."""
    t = cond.temperature
    teacher_epochs = cond.teacher_epochs or m.train.epochs
    student_epochs = cond.student_epochs or m.train.epochs
    model = ModelSpec(arch=cond.arch or m.model.arch)  # equal to m.model where arch is unset
    teacher_key = ModelKey(
        cond.name, cond.kind, schema.ROLE_TEACHER, seed,
        ("teacher", Context.data_config_of(m), model, m.train, t, teacher_epochs, seed),
        {"temperature": t, "train.epochs": teacher_epochs},
    )  # fmt: skip
    student_key = ModelKey(
        cond.name, cond.kind, schema.ROLE_STUDENT, seed,
        ("student", teacher_key.hash, student_epochs),
        {"temperature": t, "train.epochs": student_epochs},
    )  # fmt: skip
    return [teacher_key, student_key]


def run_defensive(
    *, ctx: Context, cond: DefensiveCondition, seed: int, parent_id: str
) -> list[ModelRun]:
    """Train (or reuse) the teacher, then the student, of the condition's `arch` (default
    `model.arch`), on its soft labels; both are logged and linked."""
    m = ctx.manifest
    arch = cond.arch or m.model.arch
    t = cond.temperature
    teacher_epochs = cond.teacher_epochs or m.train.epochs
    student_epochs = cond.student_epochs or m.train.epochs
    teacher_key, student_key = defensive_keys(m, cond, seed)
    teacher = cached_training(
        ctx,
        parent_id,
        teacher_key,
        lambda run_id: train_model(
            ctx,
            run_id,
            f"{cond.name} seed {seed}: teacher T={t:g}",
            seed=seed,
            targets=ctx.data.train.y,
            epochs=teacher_epochs,
            temperature=t,
            arch=arch,
        ),
        attack=cond.attack_teacher,
        tags={schema.STUDENT_CONFIG_HASH: student_key.hash},
        arch=arch,
    )

    def train_student(run_id: str):
        targets = soft_labels(teacher.model, ctx.data.train.x, t)
        return train_model(
            ctx,
            run_id,
            f"{cond.name} seed {seed}: student T={t:g}",
            seed=seed,
            targets=targets,
            epochs=student_epochs,
            temperature=t,
            arch=arch,
        )

    student = cached_training(
        ctx,
        parent_id,
        student_key,
        train_student,
        attack=True,
        tags={schema.TEACHER_RUN_ID: teacher.run_id},
        arch=arch,
    )
    ctx.store.set_tags(teacher.run_id, {"student_run_id": student.run_id})
    return [teacher, student]

"""Defensive distillation (Papernot, McDaniel, Wu, Jha & Swami, IEEE S&P 2016).

The teacher is trained with softmax(logits / T) on hard labels; its soft labels
softmax(teacher logits / T) over the training set are computed once in eval mode; the student, of
the same architecture, is trained at the same T on them and deployed with its raw logits (T = 1).
"""

import torch
from torch.nn import functional as F

from suite import schema
from suite.conditions.common import cached_training, train_model
from suite.job import Context, ModelRun
from suite.manifest import DefensiveCondition, config_hash
from suite.training import predict_logits


def soft_labels(teacher: torch.nn.Module, x: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(teacher logits / T) over `x`, in eval mode (no dropout), computed on the teacher's
    device, returned on the CPU."""
    return F.softmax(predict_logits(teacher, x) / temperature, dim=1)


def run_defensive(
    *, ctx: Context, cond: DefensiveCondition, seed: int, parent_id: str
) -> list[ModelRun]:
    """Train (or reuse) the teacher, then the student on its soft labels; both are logged and linked."""
    m = ctx.manifest
    t = cond.temperature
    teacher_epochs = cond.teacher_epochs or m.train.epochs
    student_epochs = cond.student_epochs or m.train.epochs
    teacher_hash = config_hash(
        "teacher", ctx.data_config(), m.model, m.train, t, teacher_epochs, seed
    )
    student_hash = config_hash("student", teacher_hash, student_epochs)
    common = {**ctx.base_params(), "seed": seed, "temperature": t}

    teacher = cached_training(
        ctx,
        parent_id,
        condition=cond.name,
        kind=cond.kind,
        role=schema.ROLE_TEACHER,
        seed=seed,
        cfg_hash=teacher_hash,
        params={**common, "train.epochs": teacher_epochs},
        attack=cond.attack_teacher,
        tags={schema.STUDENT_CONFIG_HASH: student_hash},
        train=lambda run_id: train_model(
            ctx,
            run_id,
            f"{cond.name} seed {seed}: teacher T={t:g}",
            seed=seed,
            targets=ctx.data.train.y,
            epochs=teacher_epochs,
            temperature=t,
        ),
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
        )

    student = cached_training(
        ctx,
        parent_id,
        condition=cond.name,
        kind=cond.kind,
        role=schema.ROLE_STUDENT,
        seed=seed,
        cfg_hash=student_hash,
        params={**common, "train.epochs": student_epochs},
        attack=True,
        tags={schema.TEACHER_RUN_ID: teacher.run_id},
        train=train_student,
    )
    ctx.store.set_tags(teacher.run_id, {"student_run_id": student.run_id})
    return [teacher, student]

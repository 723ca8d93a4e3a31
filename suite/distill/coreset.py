"""Real-image coreset baselines of the DC paper: random picks and herding (Welling, ICML 2009,
"Herding Dynamical Weights to Learn"). Both return training images unchanged, ipc per class."""

import torch
from pydantic import BaseModel, ConfigDict, Field

from suite.data import NUM_CLASSES
from suite.distill.common import (
    DistillMethod,
    DistillResult,
    Init,
    RealData,
    StepCallback,
    fresh_convnet,
)


class RandomParams(BaseModel):
    """Random real images per class; nothing to set."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class HerdingParams(BaseModel):
    """Herding in the embedding of a randomly initialised ConvNet (drawn from the seed; the DC paper
    herds in a trained ConvNet's features, which would need a full training run first)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    net_width: int = Field(default=128, gt=0, le=1024)
    net_depth: int = Field(default=3, ge=1, le=5)
    batch_size: int = Field(default=500, gt=0, le=65536)


def select_random(
    *, params: RandomParams, real: RealData, ipc: int, init: Init, on_step: StepCallback
) -> DistillResult:
    """ipc seeded random training images per class, class-sorted."""
    picks = [idx[torch.randperm(len(idx), generator=real.generator)[:ipc]] for idx in real.by_class]
    return DistillResult.chosen(real, torch.cat(picks), ipc)


def select_herding(
    *, params: HerdingParams, real: RealData, ipc: int, init: Init, on_step: StepCallback
) -> DistillResult:
    """ipc herded training images per class, class-sorted.

    Welling's herding with features φ and their class mean μ: w ← μ; repeat ipc times: pick the
    unpicked x maximising ⟨w, φ(x)⟩, then w ← w + μ − φ(x). The picks' running mean tracks μ.
    """
    net = fresh_convnet(params.net_width, params.net_depth, real).requires_grad_(False)
    picks = []
    for c in range(NUM_CLASSES):
        idx = real.by_class[c]
        with torch.no_grad():
            feats = torch.cat(
                [net.embed(real.x[part.to(real.device)]) for part in idx.split(params.batch_size)]
            ).double()
        mean = feats.mean(0)
        w = mean.clone()
        taken = torch.zeros(len(idx), dtype=torch.bool, device=feats.device)
        for _ in range(ipc):
            scores = (feats @ w).masked_fill(taken, float("-inf"))
            best = int(scores.argmax())
            taken[best] = True
            w += mean - feats[best]
            picks.append(int(idx[best]))
    return DistillResult.chosen(real, torch.tensor(picks, dtype=torch.long), ipc)


RANDOM = DistillMethod(name="random", params=RandomParams, run=select_random)
HERDING = DistillMethod(name="herding", params=HerdingParams, run=select_herding)

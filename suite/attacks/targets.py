"""Target classes for targeted attacks: which rows to attack and toward which class."""

import numpy as np
import torch
from torch import Tensor

from suite.attacks.common import AttackParams, TargetMode
from suite.attacks.rng import keyed_uniform

_TARGET_STREAM = 1


def rows_per_sample(params: AttackParams, num_classes: int) -> int:
    """Rows `choose_targets` gives each sample under these settings: one per other class with
    `target_mode = "all"`, else one (untargeted attacks too)."""
    if params.targeting() == "all":
        return num_classes - 1
    return 1


def choose_targets(
    mode: TargetMode, y: Tensor, clean_logits: Tensor, seed: int, sample_index: np.ndarray
) -> tuple[Tensor, Tensor]:
    """(row → sample position, row → target class), never the label. `all` gives one row per
    (sample, other class); every other mode gives one row per sample."""
    n, k = clean_logits.shape
    if mode == "all":
        sample = torch.arange(n).repeat_interleave(k - 1)
        offset = torch.arange(1, k).repeat(n)
        return sample, (y[sample] + offset) % k
    sample = torch.arange(n)
    if mode == "next":
        return sample, (y + 1) % k
    if mode == "random":
        u = torch.from_numpy(keyed_uniform(seed, _TARGET_STREAM, sample_index, 1)[:, 0])
        return sample, (y + 1 + (u * (k - 1)).long().clamp(max=k - 2)) % k
    others = clean_logits.scatter(1, y[:, None], float("inf"))
    return sample, others.argmin(1)

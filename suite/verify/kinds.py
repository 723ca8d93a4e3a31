"""The verification kinds a manifest can ask for (`[[verify]]`), their settings, and one function
that turns a batch of digits into per-digit records that pair by `sample_index` with the attacks'.

- `certified`: a lower bound on each digit's minimal adversarial distortion in `norm` (L∞, L2, L1):
  the largest radius at which CROWN (or IBP) proves the label wins, by bisection
  (`bounds.certified_radius`). No adversarial can exist below it, so any attack that reports one
  there is wrong.
- `exact`: the minimal L∞ or L1 distortion itself, by mixed-integer programming
  (`exact.minimal_distortion`, Tjeng et al. 2019), from the certified radius up to `eps_max`;
  where the time limit hits, the bracket it proved.

A record: `lower` (proved: no adversarial closer), `value` (the exact minimum where `solved`, else
NaN), `upper` (an adversarial exists at this distortion; inf where none was found within the
search), `status`, `seconds`. Misclassified digits get lower = value = upper = 0.
"""

import copy
import math
import time
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from suite.limits import MAX_L1_RADIUS
from suite.verify.bounds import Norm, certified_radius
from suite.verify.exact import minimal_distortion
from suite.verify.network import forward, linear_form


class CertifiedParams(BaseModel):
    """Certified radius settings: the bound (`crown`, tighter; `ibp`, cheaper) and the bisection
    steps over [0, the pixel box's largest distortion] (16 steps: 1.5e-5 at L∞, 4.3e-4 at L2,
    0.012 at L1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["crown", "ibp"] = "crown"
    steps: int = Field(default=16, ge=1, le=40)


class ExactParams(BaseModel):
    """Exact minimal-distortion settings: the largest ε searched (≤ 1 at L∞; at L1 the manifest
    sets it, e.g. 15), the bracket's width at which a digit counts as solved, and the solver's
    time per digit (then the bracket is recorded instead)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    eps_max: float = Field(default=0.5, gt=0, le=MAX_L1_RADIUS)
    tolerance: float = Field(default=1e-3, gt=0, le=0.1)
    time_limit: float = Field(default=60.0, gt=0, le=86_400)


VERIFY_PARAMS: dict[str, type[BaseModel]] = {"certified": CertifiedParams, "exact": ExactParams}
RECORD_COLUMNS = ["sample_index", "label", "lower", "value", "upper", "solved", "status", "seconds"]


def verify_digits(
    kind: str,
    params: BaseModel,
    norm: Norm,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    sample_index: np.ndarray,
    known: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-digit records (RECORD_COLUMNS) of verification `kind` on the digits `x` (labels `y`) of
    `model`, in float64 on the CPU (bounds are proofs: no float32 rounding in them). `known` is,
    per digit, the `norm` distortion of an adversarial an attack found (NaN: none), where `exact`
    starts its bracket's top."""
    ops = linear_form(copy.deepcopy(model).eval().cpu().double())
    x64, y = x.double().cpu(), y.cpu()
    with torch.no_grad():
        correct = (forward(ops, x64).argmax(1) == y).numpy()
    certify = params if isinstance(params, CertifiedParams) else CertifiedParams()
    start = time.perf_counter()
    lower = certified_radius(ops, x64, y, norm, method=certify.method, steps=certify.steps)
    lower = lower.numpy()  # searched from the pixel box's largest distortion down
    per_digit = (time.perf_counter() - start) / max(len(x), 1)
    rows: list[tuple] = []
    for i, ok in enumerate(correct):
        if not ok:
            rows.append((0.0, 0.0, 0.0, True, "misclassified", 0.0))
        elif isinstance(params, ExactParams):
            found = minimal_distortion(
                ops, x64[i : i + 1], int(y[i]), params.eps_max, norm=norm, floor=float(lower[i]),
                known=_finite(known, i), tolerance=params.tolerance, time_limit=params.time_limit,
            )  # fmt: skip
            rows.append((
                found.lower, found.value, found.upper, found.solved, found.status,
                found.seconds + per_digit,
            ))  # fmt: skip
        else:
            rows.append((float(lower[i]), math.nan, math.inf, False, "certified", per_digit))
    frame = pd.DataFrame(rows, columns=RECORD_COLUMNS[2:])
    frame.insert(0, "label", y.numpy().astype(np.int64))
    frame.insert(0, "sample_index", np.asarray(sample_index, dtype=np.int64))
    return frame


def _finite(values: np.ndarray | None, i: int) -> float | None:
    """values[i] where it is a finite number, else None."""
    if values is None or not np.isfinite(values[i]):
        return None
    return float(values[i])


def summarize_verification(records: pd.DataFrame) -> dict[str, float]:
    """A verification's metrics: the median certified radius over correctly classified digits,
    the share solved exactly and the median exact value over those."""
    clean = records[records["status"] != "misclassified"]
    solved = clean[clean["solved"].astype(bool)]
    return {
        "median_lower": float(clean["lower"].median()) if len(clean) else math.nan,
        "solved_fraction": len(solved) / len(clean) if len(clean) else math.nan,
        "median_value": float(solved["value"].median()) if len(solved) else math.nan,
    }

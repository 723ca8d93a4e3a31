"""Transfer attacks (Carlini & Wagner 2017 §VIII): adversarials crafted on one model, evaluated on
another, as they are and scaled to the other model's own median distortion.

No gradient of the evaluated model is used, so a model that only hides its gradient (gradient
masking) is fooled here as easily as the model they were crafted on.
"""

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from suite.attacks.common import rows
from suite.attacks.run import _hits, _logits, _records
from suite.devices import model_device

SCALABLE_NORMS = ("l2", "linf")  # norms a perturbation can be rescaled in (L0 counts pixels)


def transfer_records(
    model: nn.Module,
    x: Tensor,
    x_adv: Tensor,
    source: pd.DataFrame,
    *,
    scale_norm: str | None = None,
    scale_to: float | None = None,
    batch_size: int = 256,
) -> pd.DataFrame:
    """Records of `model` on the source attack's images: `x` and `x_adv` are row-aligned with the
    source's records `source` (label, target, success per row). Same schema as a direct attack, with
    the evaluated model's own clean prediction; `const` NaN and `grad_evals` 0 (nothing is
    computed on this model but two forward passes), the source's `eps` kept, plus
    `source_success`. With `scale_to`, each perturbation the source found is rescaled to that
    `scale_norm` norm (the model's own median distortion) and `success_scaled` records whether that
    fools the model."""
    dev = model_device(model)
    model = model.eval()
    y = torch.from_numpy(source["label"].to_numpy(np.int64, copy=True))
    target = (
        None
        if source["target"].isna().all()
        else torch.from_numpy(source["target"].to_numpy(dtype=np.int64, na_value=-1))
    )
    clean_pred = _logits(model, x, dev, batch_size).argmax(1)
    adv_pred = _logits(model, x_adv, dev, batch_size).argmax(1)
    clean_correct = clean_pred == y
    n = len(y)
    out = _records(
        source["sample_index"].to_numpy(np.int64), y, target, clean_pred, adv_pred, clean_correct,
        x, x_adv, torch.full((n,), float("nan"), dtype=torch.float64),
        torch.zeros(n, dtype=torch.int64),
    )  # fmt: skip
    if "eps" in source:
        out["eps"] = np.where(out["success"], source["eps"].to_numpy(float), np.nan)
        out.attrs["eps_list"] = source.attrs.get("eps_list")
    out["source_success"] = source["success"].to_numpy(bool)
    if scale_to is not None and scale_norm is not None:
        scaled = scale_perturbations(x, x_adv, scale_norm, scale_to)
        pred = _logits(model, scaled, dev, batch_size).argmax(1)
        won = _hits(pred, y, target) & clean_correct
        out["success_scaled"] = (
            won & torch.from_numpy(out["source_success"].to_numpy(bool, copy=True))
        ).numpy()
    return out


def scale_perturbations(x: Tensor, x_adv: Tensor, norm: str, size: float) -> Tensor:
    """x + δ·size/‖δ‖ (clipped to [0, 1]) for each row with δ = x_adv − x ≠ 0; rows the source left
    unchanged stay clean."""
    if norm not in SCALABLE_NORMS:
        raise ValueError(f"cannot rescale a perturbation in {norm}; choose one of {SCALABLE_NORMS}")
    delta = (x_adv - x).double()
    flat = delta.flatten(1)
    length = flat.norm(dim=1) if norm == "l2" else flat.abs().amax(1)
    factor = torch.where(length > 0, size / length.clamp_min(1e-12), torch.zeros_like(length))
    return (x.double() + delta * rows(factor)).clamp(0, 1).float()

"""One entry point for every attack: chunking, targets, verification and per-sample records.

Whatever an attack believes it found, the records are recomputed here from the returned image:
clipped to [0, 1], re-classified by the model, distortions measured against the clean input.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from suite.attacks.common import L0_TOLERANCE, NORM_TOLERANCE, AttackParams
from suite.attacks.kinds import attack_kind
from suite.attacks.targets import choose_targets
from suite.devices import model_device


@dataclass
class AttackResult:
    """Adversarial images (CPU, in [0, 1]; the clean input where the attack failed) and one
    record per attacked row: a sample, or a (sample, target) pair with target_mode = "all"."""

    x_adv: Tensor
    records: pd.DataFrame


def run_attack(
    kind: str,
    params: AttackParams,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    sample_index: np.ndarray,
    *,
    seed: int,
    batch_size: int = 256,
    on_batch: Callable[[int, int], None] | None = None,
) -> AttackResult:
    """Attack `x` (labels `y`, test-set positions `sample_index`) in chunks of `batch_size` rows,
    calling `on_batch(rows_done, successes_so_far)` after each. Runs on the model's own device
    (never moves it) in eval mode. Samples misclassified when clean are recorded but not attacked."""
    spec = attack_kind(kind)
    if not isinstance(params, spec.params):
        raise TypeError(f"{kind} takes {spec.params.__name__}, got {type(params).__name__}")
    dev = model_device(model)
    model = model.eval()
    x, y = x.float().cpu(), y.long().cpu()
    sample_index = np.asarray(sample_index, dtype=np.int64)

    clean_logits = _logits(model, x, dev, batch_size)
    clean_pred = clean_logits.argmax(1)
    mode = params.targeting()
    if mode is not None:
        rows, target = choose_targets(mode, y, clean_logits, seed, sample_index)
    else:
        rows, target = torch.arange(len(x)), None
    keys = sample_index[rows.numpy()] * (clean_logits.shape[1] + 1)
    if target is not None:
        keys = keys + target.numpy() + 1

    x_adv = x[rows].clone()
    const = torch.full((len(rows),), float("nan"), dtype=torch.float64)
    grad_evals = torch.zeros(len(rows), dtype=torch.int64)
    adv_pred = clean_pred[rows].clone()
    component = np.full(len(rows), "", dtype=object)
    attacked = clean_pred[rows] == y[rows]
    successes = 0
    for lo in range(0, len(rows), batch_size):
        chunk = torch.arange(lo, min(lo + batch_size, len(rows)))
        todo = chunk[attacked[chunk]]
        if len(todo):
            found = spec.attack(
                model=model,
                x=x[rows[todo]].to(dev),
                y=y[rows[todo]].to(dev),
                target=None if target is None else target[todo].to(dev),
                params=params,
                seed=seed,
                keys=keys[todo.numpy()],
            )
            x_adv[todo] = found.x_adv.detach().clamp(0, 1).cpu()
            const[todo] = found.const.cpu()
            grad_evals[todo] = found.grad_evals.cpu()
            if found.component is not None:
                component[todo.numpy()] = found.component
            adv_pred[todo] = _logits(model, x_adv[todo], dev, batch_size).argmax(1)
        won = _hits(adv_pred[chunk], y[rows[chunk]], None if target is None else target[chunk])
        successes += int((won & attacked[chunk]).sum())
        if on_batch is not None:
            on_batch(int(chunk[-1]) + 1, successes)

    records = _records(
        sample_index[rows.numpy()], y[rows], target, clean_pred[rows], adv_pred,
        attacked, x[rows], x_adv, const, grad_evals,
    )  # fmt: skip
    if spec.ensemble:
        records["component"] = np.where(records["success"].to_numpy(), component, "")
    if spec.budget is not None:
        norm, eps_list = spec.budget(params)
        records["eps"] = _smallest_eps(records[norm].to_numpy(), eps_list)
        records["norm"] = norm
        records.attrs["eps_list"] = eps_list
    return AttackResult(x_adv=x_adv, records=records)


def summarize(records: pd.DataFrame) -> dict[str, float]:
    """Success rate over clean-correct rows; mean/median L0, L2, L∞ over successes; for
    fixed-budget kinds the success rate at each ε (`success_rate@eps=<v>`); for transfer records
    with rescaled perturbations, `scaled_success_rate`."""
    correct = records["clean_correct"].to_numpy(bool)
    success = records["success"].to_numpy(bool)
    n_correct = int(correct.sum())
    out = {
        "n_attacked": float(len(records)),
        "n_clean_correct": float(n_correct),
        "success_rate": success[correct].mean() if n_correct else float("nan"),
    }
    for norm in ("l0", "l2", "linf"):
        values = records.loc[success, norm].to_numpy(float)
        out[f"mean_{norm}"] = float(values.mean()) if len(values) else float("nan")
        out[f"median_{norm}"] = float(np.median(values)) if len(values) else float("nan")
    if "success_scaled" in records:  # transfer: the source's perturbations at this model's median
        scaled = records["success_scaled"].to_numpy(bool)
        out["scaled_success_rate"] = scaled[correct].mean() if n_correct else float("nan")
    if "eps" in records:
        eps = records["eps"].to_numpy(float)
        for v in records.attrs.get("eps_list") or sorted(set(eps[~np.isnan(eps)])):
            hit = success & (eps <= v)
            out[f"success_rate@eps={v:g}"] = hit[correct].mean() if n_correct else float("nan")
    return {k: float(v) for k, v in out.items()}


@torch.inference_mode()
def _logits(model: nn.Module, x: Tensor, dev: torch.device, batch_size: int) -> Tensor:
    return torch.cat([model(xb.to(dev)).float().cpu() for xb in x.split(batch_size)])


def _hits(pred: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    return pred != y if target is None else pred == target


def distortions(x: Tensor, x_adv: Tensor) -> dict[str, np.ndarray]:
    """Per-sample L0 (pixels with |Δ| > L0_TOLERANCE), L2 and L∞ of x_adv − x, in float64."""
    delta = (x_adv.double() - x.double()).flatten(1)
    return {
        "l0": (delta.abs() > L0_TOLERANCE).sum(1).double().numpy(),
        "l2": delta.norm(dim=1).numpy(),
        "linf": delta.abs().amax(1).numpy(),
    }


def _records(
    sample_index: np.ndarray,
    y: Tensor,
    target: Tensor | None,
    clean_pred: Tensor,
    adv_pred: Tensor,
    clean_correct: Tensor,
    x: Tensor,
    x_adv: Tensor,
    const: Tensor,
    grad_evals: Tensor,
) -> pd.DataFrame:
    success = (_hits(adv_pred, y, target) & clean_correct).numpy()
    dist = {k: np.where(success, v, np.nan) for k, v in distortions(x, x_adv).items()}
    n = len(y)
    return pd.DataFrame(
        {
            "sample_index": sample_index.astype(np.int64),
            "label": y.numpy().astype(np.int64),
            "target": pd.array(
                [pd.NA] * n if target is None else target.numpy().astype(np.int64), dtype="Int64"
            ),
            "clean_pred": clean_pred.numpy().astype(np.int64),
            "adv_pred": adv_pred.numpy().astype(np.int64),
            "clean_correct": clean_correct.numpy().astype(bool),
            "success": success.astype(bool),
            **dist,
            "const": np.where(success, const.numpy(), np.nan),
            "grad_evals": grad_evals.numpy().astype(np.int64),
        }
    )


def _smallest_eps(norms: np.ndarray, eps_list: list[float]) -> np.ndarray:
    """The smallest listed ε whose ball holds the returned image (NaN for failures): the image
    itself proves an adversarial exists within that ε, up to NORM_TOLERANCE."""
    eps = np.asarray(eps_list, dtype=np.float64)
    pos = np.searchsorted(eps, norms - NORM_TOLERANCE, side="left")
    inside = ~np.isnan(norms) & (pos < len(eps))
    return np.where(inside, eps[np.minimum(pos, len(eps) - 1)], np.nan)

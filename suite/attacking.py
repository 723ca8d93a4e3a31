"""Attack one trained model with every attack of the manifest, on the experiment's shared subset.

Results are cached per (model run, attack config hash): a rerun skips attacks already logged.
"""

import math

import numpy as np
import pandas as pd
import torch

from suite.attacks import run_attack, summarize
from suite.conditions import Context, ModelRun
from suite.manifest import AttackSpec, config_hash


def attack_subset(n_test: int, size: int, seed: int) -> np.ndarray:
    """Test-set indices attacked by every condition: one seeded permutation, so smaller attacks
    take a prefix of the same images and everything pairs by `sample_index`."""
    return np.random.default_rng(seed).permutation(n_test)[: min(size, n_test)]


def attack_model(ctx: Context, run: ModelRun, subset: np.ndarray) -> dict[str, dict[str, float]]:
    """Run (or reuse) each manifest attack on `run.model`; return each attack's summary metrics."""
    summaries: dict[str, dict[str, float]] = {}
    for spec in ctx.manifest.attacks:
        summaries[spec.name] = _one_attack(ctx, run, spec, subset)
    return summaries


def _one_attack(ctx: Context, run: ModelRun, spec: AttackSpec, subset: np.ndarray) -> dict[str, float]:
    store = ctx.store
    idx = subset[: spec.samples or ctx.manifest.data.attack_samples]
    cfg = config_hash(spec, idx.tolist(), ctx.manifest.experiment.attack_seed)
    tag = f"attack.{spec.name}.config_hash"
    prefix = f"attack.{spec.name}."
    current = store.client.get_run(run.run_id)
    if not ctx.force and current.data.tags.get(tag) == cfg:
        return {k.removeprefix(prefix): v for k, v in current.data.metrics.items() if k.startswith(prefix)}

    x, y = ctx.data.test.x[idx], ctx.data.test.y[idx]
    task = ctx.progress.task(f"{run.condition} seed {run.seed} {run.role}: {spec.name}", total=len(idx))
    with store.active(run.run_id):
        try:
            result = run_attack(
                spec.kind, spec.params, run.model, x, y, idx,
                seed=ctx.manifest.experiment.attack_seed, device=ctx.device,
                batch_size=spec.batch_size,
                on_batch=lambda done, ok: task.update(done, success=f"{ok}/{done}"),
            )
        finally:
            task.close()
        summary = summarize(result.records)
        store.log_table(run.run_id, f"attacks/{spec.name}.parquet", result.records)
        store.log_artifact_bytes(
            run.run_id, f"attacks/{spec.name}.png",
            lambda p: example_grid(x, result.x_adv, result.records, p),
        )
        store.log_metrics(run.run_id, {prefix + metric_name(k): v for k, v in summary.items()})
        store.set_tags(run.run_id, {tag: cfg})
    return summary


def metric_name(key: str) -> str:
    """`success_rate@eps=0.1` → `success_rate.eps_0.1` (MLflow refuses '@' and '=' in names)."""
    return key.replace("@eps=", ".eps_")


def example_grid(x: torch.Tensor, x_adv: torch.Tensor, records: pd.DataFrame, path, k: int = 8) -> None:
    """PNG of clean / adversarial / perturbation for the first `k` successful samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = np.flatnonzero(records["success"].to_numpy())[:k]
    cols = max(len(ok), 1)
    fig, axes = plt.subplots(3, cols, figsize=(1.3 * cols, 4.2), squeeze=False)
    for c in range(cols):
        for r in range(3):
            axes[r, c].axis("off")
        if c >= len(ok):
            continue
        i = ok[c]
        row = records.iloc[i]
        delta = (x_adv[i] - x[i]).squeeze(0).numpy()
        bound = max(float(np.abs(delta).max()), 1e-6)
        axes[0, c].imshow(x[i].squeeze(0).numpy(), cmap="gray", vmin=0, vmax=1)
        axes[0, c].set_title(f"{int(row['label'])}", fontsize=8)
        axes[1, c].imshow(x_adv[i].squeeze(0).numpy(), cmap="gray", vmin=0, vmax=1)
        axes[1, c].set_title(f"→{int(row['adv_pred'])}", fontsize=8)
        axes[2, c].imshow(delta, cmap="seismic", vmin=-bound, vmax=bound)
        axes[2, c].set_title(f"L2 {row['l2']:.2f}" if not math.isnan(row["l2"]) else "", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

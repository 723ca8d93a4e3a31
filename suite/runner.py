"""Run a manifest: every condition × seed is trained (or reused), then attacked; returns summary rows."""

import math
from dataclasses import dataclass, field

from suite.attacking import attack_model, attack_subset
from suite.conditions import Context, ModelRun
from suite.conditions.defensive import run_defensive
from suite.conditions.standard import run_standard
from suite.conditions.synthetic import run_synthetic
from suite.data import load_splits
from suite.devices import resolve_device
from suite.errors import ManifestError, SuiteError
from suite.manifest import Manifest, config_hash
from suite.progress import NullProgress, Progress
from suite.tracking import Store

CONDITIONS = {"standard": run_standard, "defensive": run_defensive, "synthetic": run_synthetic}


@dataclass
class Row:
    """One line of the run summary: a model (or a failed condition/seed)."""

    condition: str
    kind: str
    seed: int
    role: str
    status: str
    val_acc: float = math.nan
    test_acc: float = math.nan
    seconds: float = math.nan
    reused: bool = False
    run_id: str = ""
    error: str = ""
    attacks: dict[str, dict[str, float]] = field(default_factory=dict)
    masking: dict[str, float] = field(default_factory=dict)


def run_manifest(
    manifest: Manifest,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
    force: bool = False,
    only: list[str] | None = None,
) -> list[Row]:
    """Train/reuse and attack every condition × seed of `manifest`, logging all of it to the store.

    `only` restricts the run to the named conditions. A user-fixable failure (diverged training, ...) of one condition/seed is recorded in its row and
    the rest still run; anything else is a bug and propagates.
    """
    progress = progress or NullProgress()
    names = [c.name for c in manifest.conditions]
    unknown = [name for name in only or [] if name not in names]
    if unknown:
        raise ManifestError(f"--only {', '.join(unknown)}: no such condition; the manifest has {names}")
    device = resolve_device(manifest.experiment.device)
    d = manifest.data
    data = load_splits(d.dataset, d.root, d.train_samples, d.val_samples, d.split_seed)
    store = store or Store()
    experiment_id = store.experiment_id(manifest.experiment.name)
    store.reap_stale(experiment_id)
    ctx = Context(manifest, data, store, experiment_id, device, progress, force)
    subset = attack_subset(len(data.test.x), manifest.attack_subset_size(), manifest.experiment.attack_seed)

    rows: list[Row] = []
    for cond in manifest.conditions:
        if only and cond.name not in only:
            continue
        parent_hash = config_hash(ctx.data_config(), manifest.model, manifest.train, cond)
        parent_id = store.parent_run(experiment_id, cond.name, cond.kind, parent_hash)
        with store.scope(parent_id):
            store.log_text(parent_id, "manifest.resolved.json", manifest.model_dump_json(indent=2))
            for seed in manifest.experiment.seeds:
                rows.extend(_run_job(ctx, cond, seed, parent_id, subset))
    return rows


def _run_job(ctx: Context, cond, seed: int, parent_id: str, subset) -> list[Row]:
    """One condition × seed: its models, each attacked; a SuiteError becomes a FAILED row."""
    try:
        runs: list[ModelRun] = CONDITIONS[cond.kind](ctx, cond, seed, parent_id)
        rows = []
        for run in runs:
            attacks, masking = attack_model(ctx, run, subset) if run.attack else ({}, {})
            rows.append(
                Row(run.condition, run.kind, seed, run.role, "FINISHED", run.val_acc, run.test_acc,
                    run.seconds, run.reused, run.run_id, attacks=attacks, masking=masking)
            )
        return rows
    except SuiteError as exc:
        ctx.progress.log(f"[red]{cond.name} seed {seed} failed:[/red] {exc}")
        return [Row(cond.name, cond.kind, seed, "-", "FAILED", error=str(exc))]

"""Verify one trained model with every `[[verify]]` entry of the manifest on the experiment's shared
test subset (the attacks' digits, so records pair by `sample_index`), caching each result per
(model run, config hash) as the attacks do. The bounds themselves are in `suite.verify`."""

import numpy as np
import pandas as pd

from suite import schema
from suite.attacks import attack_kind
from suite.cache import cached_result
from suite.identity import config_hash
from suite.job import Context, ModelRun
from suite.manifest import AttackSpec, Manifest, VerifySpec
from suite.verify.kinds import summarize_verification, verify_digits

VERIFY_BATCH = 16
"""Digits per bound batch: CROWN's back-substitution holds 2 × units coefficient rows per digit."""


def verify_model(ctx: Context, run: ModelRun, subset: np.ndarray) -> dict[str, dict[str, float]]:
    """Run (or reuse) each manifest verification that covers `run`'s condition on `run.model`; each
    one's summary metrics."""
    out = {}
    for spec in ctx.manifest.verify:
        if not spec.covers(run.condition):
            continue
        idx, cfg = verify_identity(ctx.manifest, spec, subset)
        out[spec.name] = cached_result(
            ctx, run, schema.verify_result(spec.name), cfg, _computation(ctx, run, spec, idx)
        )
    return out


def verify_identity(
    manifest: Manifest, spec: VerifySpec, subset: np.ndarray
) -> tuple[np.ndarray, str]:
    """The digits verification `spec` runs on (a prefix of `subset`) and the config hash its
    stored result carries (the exact L∞ solver's also names the attacks it starts from)."""
    idx = subset[: spec.samples or manifest.data.attack_samples]
    starts = _linf_attacks(manifest) if _starts_from_attacks(spec) else []
    return idx, config_hash("verify", spec, idx.tolist(), *starts)


def _starts_from_attacks(spec: VerifySpec) -> bool:
    """Whether the exact solver's first ball is the attacks' best (L∞; no attack records L1)."""
    return spec.kind == "exact" and spec.norm == "linf"


def _linf_attacks(manifest: Manifest) -> list[AttackSpec]:
    """The manifest's own minimal-L∞ attacks (not transfers): where the exact solver starts."""
    return [
        a for a in manifest.attacks
        if a.source is None and attack_kind(a.kind).minimal_norm == "linf"
    ]  # fmt: skip


def _best_linf(ctx: Context, run: ModelRun, idx: np.ndarray) -> np.ndarray:
    """Per digit of `idx`, the smallest L∞ distortion of a successful adversarial among the
    manifest's minimal-L∞ attacks on `run` (NaN where none succeeded)."""
    best = pd.Series(np.nan, index=idx)
    for spec in _linf_attacks(ctx.manifest):
        records = ctx.store.load_table(run.run_id, schema.attack_records(spec.name))
        won = records[records["success"].astype(bool)].groupby("sample_index")["linf"].min()
        best = best.combine(won.reindex(idx), lambda a, b: np.fmin(a, b))
    return best.to_numpy(dtype=np.float64)


def _computation(ctx: Context, run: ModelRun, spec: VerifySpec, idx: np.ndarray):
    """The work of one verification: its records in batches under a progress bar, logged as a
    table; returns its summary metrics."""

    def compute() -> dict[str, float]:
        known = _best_linf(ctx, run, idx) if _starts_from_attacks(spec) else None
        task = ctx.progress.task(
            f"{run.condition} seed {run.seed} {run.role}: {spec.name}", len(idx)
        )
        parts = []
        try:
            for lo in range(0, len(idx), VERIFY_BATCH):
                part = idx[lo : lo + VERIFY_BATCH]
                parts.append(
                    verify_digits(
                        spec.kind, spec.params, spec.norm, run.model,
                        ctx.data.test.x[part], ctx.data.test.y[part], part,
                        None if known is None else known[lo : lo + VERIFY_BATCH],
                    )
                )  # fmt: skip
                task.update(lo + len(part))
        finally:
            task.close()
        records = pd.concat(parts, ignore_index=True)
        ctx.store.log_table(run.run_id, schema.verify_records(spec.name), records)
        return summarize_verification(records)

    return compute

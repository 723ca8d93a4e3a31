"""Read an experiment back from the MLflow store into the tidy frames of `ReportData`.

For each condition the newest parent run is taken (the current manifest's settings); under it the
newest run per (seed, role). Runs that did not finish are listed in `missing`, never dropped silently.
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from suite.attacks import FIXED_BUDGET_KINDS, budget_eps, is_gradient_free
from suite.errors import StoreError
from suite.manifest import ManifestFieldError, SyntheticEval, baselines
from suite.report.frames import ReportData
from suite.tracking import Store

CURVE_METRICS = ("val_acc", "test_acc", "train_loss", "train_acc")
LEVEL = "suite.level"
ATTACK_COLUMNS = [
    "condition", "kind", "seed", "attack", "attack_kind", "sample_index", "label", "target",
    "clean_pred", "adv_pred", "clean_correct", "success", "l0", "l2", "linf", "const",
    "grad_evals", "eps",
]  # fmt: skip


def latest_experiment(store: Store) -> str:
    """The experiment with the most recently started suite run."""
    runs = store.client.search_runs(
        [e.experiment_id for e in store.client.search_experiments()],
        "tags.condition != ''",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise StoreError(f"the store {store.uri} holds no suite runs; run `suite run FILE` first")
    return store.client.get_experiment(runs[0].info.experiment_id).name


DEFAULT_ACCURACY_FLOOR: float = SyntheticEval.model_fields["min_test_acc"].default


def collect(store: Store, experiment: str, baseline: str | None = None) -> ReportData:
    """Everything the report needs about `experiment`, read from the store.

    Each condition is compared with its baseline from the logged manifest (the same rule as
    `suite.manifest.baselines`); `baseline` names one condition to compare every other with.
    """
    exp_id = store.experiment_id(experiment, create=False)
    runs = store.client.search_runs([exp_id], order_by=["attributes.start_time DESC"])
    parents: dict[str, object] = {}
    for run in runs:
        if run.data.tags.get(LEVEL) == "condition":
            parents.setdefault(run.data.tags["condition"], run)
    if not parents:
        raise StoreError(f"experiment {experiment!r} has no condition runs; run its manifest first")
    manifest = _manifest(store, next(iter(parents.values())))
    order = [c["name"] for c in manifest.get("conditions", [])] or list(parents)
    kinds = {name: p.data.tags.get("kind", "") for name, p in parents.items()}

    chosen, missing = {}, []
    for run in runs:
        tags = run.data.tags
        parent = parents.get(tags.get("condition", ""))
        if parent is None or tags.get("mlflow.parentRunId") != parent.info.run_id:
            continue
        key = (tags["condition"], int(tags["seed"]), tags.get("role", "model"))
        chosen.setdefault(key, run)
    for (cond, seed, role), run in sorted(chosen.items()):
        if run.info.status != "FINISHED":
            reason = run.data.tags.get("suite.error", "")
            missing.append(
                f"{cond} seed {seed} ({role}): {run.info.status}"
                + (f" — {reason}" if reason else "")
            )
    for cond in order:
        if cond not in parents:
            missing.append(f"{cond}: no runs in the store (not run yet)")

    accuracy, curves, attacks, masking, examples = [], [], [], [], {}
    attack_kinds = {a["name"]: a["kind"] for a in manifest.get("attacks", [])}
    for (cond, seed, role), run in chosen.items():
        m = run.data.metrics
        accuracy.append({
            "condition": cond, "kind": kinds.get(cond, ""), "role": role, "seed": seed,
            "val_acc": m.get("final_val_acc", np.nan), "test_acc": m.get("final_test_acc", np.nan),
            "status": run.info.status, "error": run.data.tags.get("suite.error", ""),
        })  # fmt: skip
        for metric in CURVE_METRICS:
            if metric in m:
                for point in store.client.get_metric_history(run.info.run_id, metric):
                    curves.append({"condition": cond, "role": role, "seed": seed, "epoch": point.step,
                                   "metric": metric, "value": point.value})  # fmt: skip
        label = cond if role in ("model", "student") else f"{cond}/{role}"
        for name, kind in attack_kinds.items():
            if f"attack.{name}.config_hash" not in run.data.tags:
                continue
            rows = store.load_table(run.info.run_id, f"attacks/{name}.parquet")
            rows.insert(0, "condition", label)
            rows.insert(1, "kind", kinds.get(cond, ""))
            rows.insert(2, "seed", seed)
            rows.insert(3, "attack", name)
            rows.insert(4, "attack_kind", kind)
            if "eps" not in rows:
                rows["eps"] = np.nan  # the frame's contract: NaN unless the attack is fixed-budget
            attacks.append(rows)
            if f"{label}/{name}" not in examples or seed == min(manifest["experiment"]["seeds"]):
                found = _examples(store, run.info.run_id, name)
                if found is not None:
                    examples[f"{label}/{name}"] = found
        if "masking.flagged" in m:
            masking.append({
                "condition": label, "seed": seed,
                "saturated_fraction": m["masking.saturated_fraction"],
                "softmax_success": m["masking.softmax_success"], "cw_success": m["masking.cw_success"],
                "cw_median_l2": m["masking.cw_median_l2"], "flagged": bool(m["masking.flagged"]),
            })  # fmt: skip

    matched = _baselines(manifest, order, baseline, experiment)
    for name, base in matched.items():
        if base not in parents:
            raise StoreError(
                f"baseline condition {base!r} of {name!r} has no runs in {experiment!r}; run it, "
                f"or choose one of {sorted(parents)} with --baseline"
            )
    for cond in manifest.get("conditions", []):  # attacked teachers: the condition's baseline
        if cond.get("attack_teacher") and cond["name"] in matched:
            matched[f"{cond['name']}/teacher"] = matched[cond["name"]]
    first = next(iter(chosen.values()), None)
    return ReportData(
        experiment=experiment,
        setup=_setup(manifest, first.data.tags if first else {}, store.uri)
        | {"data_source": first.data.params.get("data.source", "unknown") if first else "unknown"},
        baselines=matched,
        accuracy=_frame(
            accuracy,
            ["condition", "kind", "role", "seed", "val_acc", "test_acc", "status", "error"],
        ),
        curves=_frame(curves, ["condition", "role", "seed", "epoch", "metric", "value"]),
        attacks=pd.concat(attacks, ignore_index=True) if attacks else _frame([], ATTACK_COLUMNS),
        masking=_frame(
            masking,
            [
                "condition",
                "seed",
                "saturated_fraction",
                "softmax_success",
                "cw_success",
                "cw_median_l2",
                "flagged",
            ],
        ),  # fmt: skip
        examples=examples,
        missing=missing,
        floors={
            c["name"]: (c.get("eval") or {}).get("min_test_acc", DEFAULT_ACCURACY_FLOOR)
            for c in manifest.get("conditions", [])
        },
        budgets={
            a["name"]: budget_eps(a["kind"], a.get("params") or {})
            for a in manifest.get("attacks", [])
            if a["kind"] in FIXED_BUDGET_KINDS
        },
        gradient_free=[
            a["name"]
            for a in manifest.get("attacks", [])
            if is_gradient_free(a["kind"], a.get("params") or {})
        ],
    )


def _baselines(
    manifest: dict, order: list[str], baseline: str | None, experiment: str
) -> dict[str, str]:
    """Condition → baseline: every other condition against `baseline` when given, else the
    logged manifest's per-condition baselines."""
    if baseline is not None:
        return {c: baseline for c in order if c != baseline}
    try:
        return baselines(
            manifest.get("conditions", []),
            manifest.get("train", {}).get("epochs", 0),
            manifest.get("model", {}).get("arch", ""),
        )
    except ManifestFieldError as exc:
        raise StoreError(
            f"experiment {experiment!r}: {exc.loc}: {exc.message}; choose one with --baseline"
        ) from None


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def _manifest(store: Store, parent) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = store.client.download_artifacts(
                parent.info.run_id, "manifest.resolved.json", tmp
            )
        except Exception as exc:  # an artifact store that lost the file: say which run
            raise StoreError(
                f"run {parent.info.run_id} lacks manifest.resolved.json ({type(exc).__name__}); "
                "rerun the manifest to rebuild it"
            ) from None
        return json.loads(Path(path).read_text())


def _examples(store: Store, run_id: str, attack: str) -> np.ndarray | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return np.load(
                store.client.download_artifacts(run_id, f"attacks/{attack}.examples.npy", tmp)
            )
        except Exception:  # older runs have no examples: the figure is simply left out
            return None


def _setup(manifest: dict, tags: dict, uri: str) -> dict[str, object]:
    """The report's Set-up section, read from the logged manifest and run tags (not re-typed)."""
    data, train = manifest.get("data", {}), manifest.get("train", {})
    setup: dict[str, object] = {
        "dataset": data.get("dataset"),
        "train_samples": data.get("train_samples") or "all",
        "val_samples": data.get("val_samples"),
        "split_seed": data.get("split_seed"),
        "model.arch": manifest.get("model", {}).get("arch"),
        **{f"train.{k}": v for k, v in train.items()},
        "seeds": manifest.get("experiment", {}).get("seeds"),
        "attack_seed": manifest.get("experiment", {}).get("attack_seed"),
        "conditions": [
            f"{c['name']}: " + ", ".join(f"{k}={v}" for k, v in c.items() if k != "name")
            for c in manifest.get("conditions", [])
        ],
        "attacks": [
            f"{a['name']}: {a['kind']}, samples={a.get('samples') or data.get('attack_samples')}, "
            + ", ".join(f"{k}={v}" for k, v in a.get("params", {}).items())
            for a in manifest.get("attacks", [])
        ],
        "suite_version": tags.get("suite_version", "unknown"),
        "git_commit": tags.get("git_commit", "unknown"),
        "store": uri,
    }
    return setup

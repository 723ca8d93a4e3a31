"""Does today's code reproduce a stored attack result? Rerun a manifest's direct attacks on stored
models and compare the per-digit records with the ones in the store, column by column.

`suite publish` refuses to pool an attack's results made by commits between which the attack's
code changed. When that change was a refactor (docstrings, renamed helpers, a removed option no
manifest sets), this benchmark is the evidence that pooling is sound: for each model run of
`--condition` at `--seed` under attack, each direct attack of the manifest is recomputed with the
stored config (same digits, attack seed and batch size as `suite run` uses on a CPU) and compared
with the stored records: rows, success, and every numeric column (max |difference|, rows equal).
Baseline: the stored records and the commit that computed them (its tag).
`python bench/reproduce_stored.py manifests/dataset-distillation.toml --condition dm-ipc10 --seed 0`
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from suite import schema
from suite.attacking import attack_batch_size
from suite.attacks import run_attack
from suite.data import load_splits
from suite.manifest import load_manifest
from suite.provenance import git_commit
from suite.runner import attacked_digits
from suite.schema import Status
from suite.stored import attack_identity
from suite.tracking import Store

KEYS = ["sample_index", "target"]  # a record's identity (target only for per-target attacks)


def _numbers(frame: pd.DataFrame | pd.Series) -> np.ndarray:
    """Values as float64, a missing one (a nullable column's NA) as NaN."""
    return frame.to_numpy(dtype=float, na_value=np.nan)


def compare(stored: pd.DataFrame, now: pd.DataFrame) -> dict:
    """Rows, and per shared numeric column the rows equal and the largest |difference| (NaN where
    both are NaN counts as equal), after sorting both by the record keys."""
    keys = [k for k in KEYS if k in stored.columns and k in now.columns]
    a = stored.sort_values(keys).reset_index(drop=True)
    b = now.sort_values(keys).reset_index(drop=True)
    out: dict = {"rows_stored": len(a), "rows_now": len(b), "columns": {}}
    if len(a) != len(b) or not np.array_equal(_numbers(a[keys]), _numbers(b[keys]), equal_nan=True):
        out["identical"] = False
        return out
    for col in a.columns.intersection(b.columns):
        if col in keys or not (
            pd.api.types.is_numeric_dtype(a[col]) or pd.api.types.is_bool_dtype(a[col])
        ):
            continue
        x, y = _numbers(a[col]), _numbers(b[col])
        both_nan = np.isnan(x) & np.isnan(y)
        same = (x == y) | both_nan
        diff = np.where(same, 0.0, np.abs(x - y))
        out["columns"][col] = {
            "equal_rows": int(same.sum()),
            "max_abs_diff": float(np.nan_to_num(diff, nan=np.inf).max(initial=0.0)),
        }
    out["identical"] = all(c["equal_rows"] == len(a) for c in out["columns"].values())
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest", type=Path)
    p.add_argument("--condition", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attack", action="append", help="only these attacks (default: every direct)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_manifest(args.manifest)
    store = Store(read_only=True)
    experiment = store.experiment_id(spec.experiment.name, create=False)
    d = spec.data
    splits = load_splits(d.dataset, d.root, d.train_samples, d.val_samples, d.split_seed)
    subset = attacked_digits(spec, splits)
    runs = [
        r
        for r in store.search(
            experiment,
            f"tags.`{schema.CONDITION}` = '{args.condition}' and tags.`{schema.SEED}` = '{args.seed}'",
        )
        if r.tags.get(schema.ROLE) in schema.ATTACKED_ROLES and r.status == Status.FINISHED
    ]
    if not runs:
        sys.exit(f"{args.manifest}: no finished model run of {args.condition} seed {args.seed}")
    run = max(runs, key=lambda r: r.start_ms or 0)
    model = store.load_model_of(run).eval()
    commit = git_commit()
    results = []
    for attack in spec.attacks:
        if args.attack and attack.name not in args.attack:
            continue
        if attack.source is not None and attack.source != args.condition:
            continue  # a transfer attack: an evaluation of another model's images
        idx, cfg = attack_identity(spec, attack, subset)
        result = schema.attack_result(attack.name)
        if run.tags.get(schema.result_tag(result)) != cfg:
            results.append({"attack": attack.name, "status": "not stored with this config"})
            continue
        stored = store.load_table(run.run_id, schema.attack_records(attack.name))
        chunk = attack_batch_size(attack.batch_size, torch.device("cpu"), len(idx), rows_per=1)
        now = []
        for lo in range(0, len(idx), chunk):
            part = idx[lo : lo + chunk]
            now.append(
                run_attack(
                    attack.kind, attack.params, model, splits.test.x[part], splits.test.y[part],
                    part, seed=spec.experiment.attack_seed, batch_size=chunk,
                ).records
            )  # fmt: skip
        row = {
            "attack": attack.name,
            "stored_commit": run.tags.get(schema.result_commit(result), "unknown"),
            "commit_now": commit,
            **compare(stored.drop(columns=["source"], errors="ignore"), pd.concat(now)),
        }
        results.append(row)
        print(f"{attack.name}: identical={row.get('identical')}", file=sys.stderr, flush=True)
    report = {"manifest": str(args.manifest), "condition": args.condition, "seed": args.seed,
              "run_id": run.run_id, "baseline": "the stored records and the commit that made them",
              "results": results}  # fmt: skip
    print(json.dumps(report, indent=1))
    print(
        f"\n{'attack':<16} {'stored by':<14} {'now':<14} {'rows':>5} {'identical':>9}  worst column"
    )
    for r in results:
        if "columns" not in r:
            print(f"{r['attack']:<16} {r.get('status', 'rows differ')}")
            continue
        differing = {k: v for k, v in r["columns"].items() if v["equal_rows"] < r["rows_now"]}
        worst = max(differing.items(), key=lambda kv: kv[1]["max_abs_diff"], default=("-", {}))
        print(
            f"{r['attack']:<16} {r['stored_commit'][:12]:<14} {r['commit_now'][:12]:<14} "
            f"{r['rows_now']:>5} {str(r['identical']):>9}  {worst[0]} {worst[1].get('max_abs_diff', 0):.3g}"
        )
    return 0 if all(r.get("identical", True) for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

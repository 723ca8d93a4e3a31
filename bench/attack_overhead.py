"""Where an attack's time goes: each attack of a manifest at its settings, against the bare model.

For every direct attack of `--manifest` (transfer attacks are evaluations, not attacks), run on
the first `--samples` test digits of a cw-mnist model: wall seconds, the model evaluations it
reports (`grad_evals`, summed over digits: gradients, and for AutoAttack's Square forward passes),
the sample-gradients per second, and the overhead: wall ÷ (evaluations × the seconds per sample of
a bare forward and backward with respect to the input at the attack's batch size, measured in
the same process just before). Overhead 1.0 is an attack that only computes gradients; the tail
where few digits are still active, per-iteration bookkeeping and Python loops show as more.
Goal (issue 27): ≤ 1.2 for every minimal-norm attack and AutoAttack's components.

The model: `--run RUN_ID` loads one from the store (e.g. a study's undistilled model), else
cw-mnist is trained here on mnist-5k for `--epochs` (bf16, seconds). `--threads` torch threads
(default 1). Prints JSON, then a table.
`python bench/attack_overhead.py [--manifest manifests/defensive-distillation.toml] [--samples 50]`
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from suite.attacks import run_attack
from suite.data import load_splits
from suite.manifest import load_manifest
from suite.models import build_model
from suite.training import Recipe, fit


def bare_seconds_per_sample(model: torch.nn.Module, x: torch.Tensor, repeats: int = 5) -> float:
    """Seconds per sample of one forward and backward with respect to the input on batch `x`."""

    def step() -> None:
        xi = x.clone().requires_grad_(True)
        model(xi).sum().backward()

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / (repeats * len(x))


def model_under_attack(args, splits) -> torch.nn.Module:
    """A model from the store (`--run`), or cw-mnist trained here for `--epochs` on mnist-5k."""
    if args.run:
        from suite.tracking import Store

        return Store(read_only=True).load_model(args.run).eval()
    torch.manual_seed(0)
    model = build_model("cw-mnist")
    recipe = Recipe(epochs=args.epochs, optimizer="adam", lr=1e-3, precision="bf16")
    fit(model, splits.train.x, splits.train.y, splits.train.y, recipe, seed=0)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=Path("manifests/defensive-distillation.toml"))
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--run", help="an MLflow run id whose model to attack")
    ap.add_argument("--only", help="comma list of attack names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    manifest = load_manifest(args.manifest)
    splits = load_splits("mnist-5k", None, None, 500, 0)
    model = model_under_attack(args, splits)
    x, y = splits.test.x[: args.samples], splits.test.y[: args.samples]
    index = np.arange(len(x))
    chosen = set(args.only.split(",")) if args.only else None
    rows = []
    for spec in manifest.attacks:
        if spec.source is not None or (chosen and spec.name not in chosen):
            continue
        batch = spec.batch_size or 256
        per_sample = bare_seconds_per_sample(model, x[:batch])
        start = time.perf_counter()
        records = run_attack(spec.kind, spec.params, model, x, y, index, seed=0, batch_size=batch)
        wall = time.perf_counter() - start
        evals = int(records.records["grad_evals"].sum())
        rows.append(
            {
                "attack": spec.name,
                "kind": spec.kind,
                "digits": len(x),
                "wall_s": round(wall, 2),
                "evaluations_per_digit": round(evals / len(x), 1),
                "sample_gradients_per_s": round(evals / wall, 1) if wall > 0 else None,
                "bare_sample_gradients_per_s": round(1 / per_sample, 1),
                "overhead": round(wall / (evals * per_sample), 3) if evals else None,
            }
        )
        print(f"  {spec.name}: {wall:.1f} s", file=sys.stderr, flush=True)
    result = {
        "manifest": str(args.manifest),
        "model": args.run or f"cw-mnist, {args.epochs} epochs on mnist-5k",
        "threads": torch.get_num_threads(),
        "baseline": "a bare forward and backward with respect to the input at the attack's batch "
        "size, per sample, in this process",
        "goal_overhead": 1.2,
        "rows": rows,
    }
    print(json.dumps(result, indent=2))
    print(f"\n{'attack':<24}{'kind':<12}{'wall s':>8}{'evals/digit':>13}{'grads/s':>10}"
          f"{'bare/s':>9}{'overhead':>10}")  # fmt: skip
    for r in rows:
        over = "-" if r["overhead"] is None else f"{r['overhead']:.2f}"
        print(
            f"{r['attack']:<24}{r['kind']:<12}{r['wall_s']:>8.1f}{r['evaluations_per_digit']:>13.1f}"
            f"{r['sample_gradients_per_s'] or 0:>10.0f}{r['bare_sample_gradients_per_s']:>9.0f}"
            f"{over:>10}"
        )
    print("overhead = wall ÷ (evaluations × bare seconds per sample); goal ≤ 1.2")


if __name__ == "__main__":
    main()

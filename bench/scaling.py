"""Executor scaling: the same small sweep with `--executor local` and `--executor ray` on this machine.

Baseline: the local executor (one job after another in one process, torch using every core).
Each executor gets a fresh SQLite store so nothing is reused. Prints JSON, then a table.
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from suite.manifest import validate_manifest  # noqa: E402
from suite.runner import run_manifest  # noqa: E402
from suite.tracking import Store  # noqa: E402


def sweep(seeds: int, epochs: int) -> dict:
    """`seeds` jobs of the tiny net on mnist-5k: train, then C&W L2 on 20 digits."""
    return {
        "experiment": {"name": "scaling", "seeds": list(range(seeds)), "device": "cpu"},
        "data": {"dataset": "mnist-5k", "train_samples": 2000, "val_samples": 300, "attack_samples": 20},
        "model": {"arch": "tiny"},
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": "adam", "lr": 0.003, "dropout": 0.0},
        "conditions": [{"name": "base", "kind": "standard"}],
        "attacks": [{"name": "cw", "kind": "cw-l2",
                     "params": {"binary_steps": 4, "max_iterations": 100, "initial_const": 0.1}}],
    }  # fmt: skip


def timed(executor, raw: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/mlflow.db")
        start = time.perf_counter()
        rows = run_manifest(validate_manifest(raw, "bench"), store=store, executor=executor)
        elapsed = time.perf_counter() - start
    assert all(r.status == "FINISHED" for r in rows), [r.error for r in rows]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from suite.ray_executor import ray_executor
    from suite.runner import local_executor

    raw = sweep(args.jobs, args.epochs)
    local = timed(local_executor, raw)
    ray = timed(ray_executor(num_cpus=args.cpus), raw)
    result = {
        "jobs": args.jobs,
        "cpus": args.cpus,
        "local_seconds": local,
        "ray_seconds_including_startup": ray,
        "local_jobs_per_minute": 60 * args.jobs / local,
        "ray_jobs_per_minute": 60 * args.jobs / ray,
        "ray_over_local": local / ray,
    }
    print(json.dumps(result, indent=2))
    print(f"\n{'executor':<10}{'seconds':>10}{'jobs/min':>10}")
    print(f"{'local':<10}{local:>10.1f}{result['local_jobs_per_minute']:>10.2f}")
    print(f"{'ray':<10}{ray:>10.1f}{result['ray_jobs_per_minute']:>10.2f}")
    print(f"ray/local throughput ratio = {result['ray_over_local']:.2f}")


if __name__ == "__main__":
    main()

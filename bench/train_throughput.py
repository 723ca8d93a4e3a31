"""Training throughput: `suite.training.fit` vs the raw forward+backward+step loop on the same batches.

Baseline: a bare PyTorch loop (no metrics, no callbacks, no NaN checks) over the identical batch
order. Goal: ratio (suite samples/s ÷ raw samples/s) ≥ 0.9. Prints JSON, then a table.
"""

import argparse
import json
import time

import torch
from torch.nn import functional as F

from suite.data import load_splits
from suite.models import build_model
from suite.training import Recipe, fit, make_optimizer


def raw_loop(x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int) -> float:
    """Seconds for the bare loop over the same batches `fit` would draw."""
    torch.manual_seed(seed)
    model = build_model("cw-mnist")
    model.train()
    opt = make_optimizer(list(model.parameters()), recipe)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(recipe.epochs):
        for idx in torch.randperm(len(x), generator=gen).split(recipe.batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def suite_loop(x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int) -> float:
    """Seconds for `fit` (train loss/accuracy, NaN checks, callbacks; no per-epoch evaluation)."""
    torch.manual_seed(seed)
    model = build_model("cw-mnist")
    start = time.perf_counter()
    fit(model, x, y, y, recipe, seed=seed, device=torch.device("cpu"), on_batch=lambda b, n: None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    splits = load_splits("mnist-5k", None, args.samples, 500, 0)
    x, y = splits.train.x, splits.train.y
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size)
    raw_loop(x, y, Recipe(epochs=1, batch_size=args.batch_size), 0)  # warm-up
    raw = min(raw_loop(x, y, recipe, 0) for _ in range(args.repeats))
    ours = min(suite_loop(x, y, recipe, 0) for _ in range(args.repeats))
    n = len(x) * args.epochs
    result = {
        "model": "cw-mnist",
        "samples_per_epoch": len(x),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "raw_samples_per_s": n / raw,
        "suite_samples_per_s": n / ours,
        "ratio": raw / ours,
        "goal_ratio": 0.9,
    }
    print(json.dumps(result, indent=2))
    print(f"\n{'loop':<8}{'samples/s':>12}")
    print(f"{'raw':<8}{result['raw_samples_per_s']:>12.0f}")
    print(f"{'suite':<8}{result['suite_samples_per_s']:>12.0f}")
    print(f"ratio suite/raw = {result['ratio']:.3f} (goal ≥ 0.9)")


if __name__ == "__main__":
    main()

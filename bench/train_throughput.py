"""Training throughput: `suite.training.fit` vs the raw forward+backward+step loop on the same batches.

Baseline: a bare PyTorch loop (no metrics, no callbacks, no NaN checks) over the identical batch
order, with the training set already on the device as `fit` keeps it. Goal: ratio (suite
samples/s ÷ raw samples/s) ≥ 0.9. `--device cuda` times both on a GPU (synchronised before the
clock stops); `--quick` is a seconds-long smoke run. Prints JSON, then a table.
"""

import argparse
import json
import time

import torch
from torch.nn import functional as F

from suite.data import load_splits
from suite.devices import resolve_device
from suite.models import build_model
from suite.training import Recipe, fit, make_optimizer


def raw_loop(
    x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int, device: torch.device
) -> float:
    """Seconds for the bare loop over the same batches `fit` would draw."""
    torch.manual_seed(seed)
    model = build_model("cw-mnist").to(device)
    model.train()
    opt = make_optimizer(list(model.parameters()), recipe)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    x, y = x.to(device), y.to(device)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x), generator=gen).to(device)
        for idx in order.split(recipe.batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    _synchronize(device)
    return time.perf_counter() - start


def suite_loop(
    x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int, device: torch.device
) -> float:
    """Seconds for `fit` (train loss/accuracy, NaN checks, callbacks; no per-epoch evaluation)."""
    torch.manual_seed(seed)
    model = build_model("cw-mnist").to(device)
    start = time.perf_counter()
    fit(model, x, y, y, recipe, seed=seed, on_batch=lambda b, n: None)
    _synchronize(device)
    return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so the clock measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument(
        "--quick", action="store_true", help="500 samples, 1 epoch, 1 repeat: a smoke run"
    )
    args = parser.parse_args()
    if args.quick:
        args.samples, args.epochs, args.repeats = min(args.samples, 500), 1, 1
    device = resolve_device(args.device)

    splits = load_splits("mnist-5k", None, args.samples, 500, 0)
    x, y = splits.train.x, splits.train.y
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size)
    raw_loop(x, y, Recipe(epochs=1, batch_size=args.batch_size), 0, device)  # warm-up
    raw = min(raw_loop(x, y, recipe, 0, device) for _ in range(args.repeats))
    ours = min(suite_loop(x, y, recipe, 0, device) for _ in range(args.repeats))
    n = len(x) * args.epochs
    result = {
        "device": str(device),
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

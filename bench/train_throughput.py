"""Training throughput: `suite.training.fit` vs the raw forward+backward+step loop on the same batches.

Baseline: a bare PyTorch loop (no metrics, no callbacks, no NaN checks) over the identical batch
order, with the training set already on the device as `fit` keeps it, in float32. Goal: ratio
(suite samples/s ÷ raw samples/s) ≥ 0.9 at the same precision. `--precision fp32,bf16` also
times mixed precision (`train.precision = "bf16"`: bfloat16 autocast, channels-last) in both
loops and reports its speed-up over float32. `--device cuda` times both on a GPU (synchronised
before the clock stops); `--quick` is a seconds-long smoke run. Prints JSON, then a table.
"""

import argparse
import json
import time
from dataclasses import replace

import torch
from torch.nn import functional as F

from suite.data import load_splits
from suite.devices import resolve_device
from suite.models import build_model
from suite.training import Recipe, fit, make_optimizer


def raw_loop(
    x: torch.Tensor, y: torch.Tensor, recipe: Recipe, seed: int, device: torch.device
) -> float:
    """Seconds for the bare loop over the same batches `fit` would draw, at the recipe's
    precision (bf16: autocast and channels-last, as `fit` runs it)."""
    mixed = recipe.precision == "bf16"
    torch.manual_seed(seed)
    model = build_model("cw-mnist").to(device)
    if mixed:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = make_optimizer(list(model.parameters()), recipe)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    x, y = x.to(device), y.to(device)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x), generator=gen).to(device)
        for idx in order.split(recipe.batch_size):
            xb = x[idx].contiguous(memory_format=torch.channels_last) if mixed else x[idx]
            with torch.autocast(device.type, torch.bfloat16, enabled=mixed):
                loss = F.cross_entropy(model(xb).float(), y[idx])
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
    parser.add_argument("--precision", default="fp32", help="comma list of fp32, bf16")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument(
        "--quick", action="store_true", help="500 samples, 1 epoch, 1 repeat: a smoke run"
    )
    args = parser.parse_args()
    if args.quick:
        args.samples, args.epochs, args.repeats = min(args.samples, 500), 1, 1
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    splits = load_splits("mnist-5k", None, args.samples, 500, 0)
    x, y = splits.train.x, splits.train.y
    rows = []
    for precision in args.precision.split(","):
        recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, precision=precision)
        raw_loop(x, y, replace(recipe, epochs=1), 0, device)  # warm-up
        raw = min(raw_loop(x, y, recipe, 0, device) for _ in range(args.repeats))
        ours = min(suite_loop(x, y, recipe, 0, device) for _ in range(args.repeats))
        n = len(x) * args.epochs
        rows.append(
            {
                "precision": precision,
                "raw_samples_per_s": n / raw,
                "suite_samples_per_s": n / ours,
                "ratio": raw / ours,
            }
        )
    fp32 = next((r for r in rows if r["precision"] == "fp32"), None)
    for r in rows:
        r["speedup_over_fp32"] = (
            None if fp32 is None else r["suite_samples_per_s"] / fp32["suite_samples_per_s"]
        )
    result = {
        "device": str(device),
        "model": "cw-mnist",
        "samples_per_epoch": len(x),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "baseline": "the raw loop at the same precision (ratio); fit in float32 (speedup)",
        "goal_ratio": 0.9,
        "rows": rows,
    }
    print(json.dumps(result, indent=2))
    print(
        f"\n{'precision':<10}{'raw samples/s':>15}{'suite samples/s':>17}{'ratio':>8}{'vs fp32':>9}"
    )
    for r in rows:
        speedup = "-" if r["speedup_over_fp32"] is None else f"{r['speedup_over_fp32']:.2f}x"
        print(
            f"{r['precision']:<10}{r['raw_samples_per_s']:>15.0f}{r['suite_samples_per_s']:>17.0f}"
            f"{r['ratio']:>8.3f}{speedup:>9}"
        )
    print("ratio = suite / raw at the same precision (goal ≥ 0.9)")


if __name__ == "__main__":
    main()

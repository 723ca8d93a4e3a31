"""Training cost of adversarial training relative to standard training, per batch of `fit`.

The same model (`cw-mnist`), batches and optimiser for each objective: standard cross-entropy,
FGSM-RS (Wong et al. 2020) and PGD with k steps (Madry et al. 2018). Timed in CPU seconds of this
process (one torch thread), interleaved over rounds, minimum kept: on a shared machine wall time
mostly measures the neighbours. An epoch is the batch cost times the batches per epoch, so the
ratio is the cost per epoch relative to standard training (the per-epoch robust-accuracy check
comes on top). Prints JSON, then a table.
"""

import argparse
import json
import time

import torch

from suite.adversarial_training import PGDTraining, adversarial_batch
from suite.data import load_splits
from suite.models import build_model
from suite.training import Recipe, fit


def seconds_per_batch(x, y, batch_size: int, batches: int, settings: PGDTraining | None) -> float:
    """CPU seconds (this process) per training batch of `fit` with this objective (None: standard
    cross-entropy): on a shared machine CPU time, unlike wall time, does not count the waiting."""
    torch.manual_seed(0)
    model = build_model("cw-mnist")
    n = batch_size * batches
    loss = (
        None if settings is None else (lambda m, xb, t, yb: adversarial_batch(m, xb, yb, settings))
    )
    recipe = Recipe(epochs=1, batch_size=batch_size, optimizer="adam", lr=1e-3)
    start = time.process_time()
    fit(model, x[:n], y[:n], y[:n], recipe, seed=0, batch_loss=loss)
    return (time.process_time() - start) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pgd-steps", type=int, nargs="+", default=[10, 40])
    args = parser.parse_args()

    splits = load_splits("mnist-5k", None, None, 500, 0)
    perm = torch.randperm(len(splits.train.x), generator=torch.Generator().manual_seed(0))
    x, y = splits.train.x[perm], splits.train.y[perm]
    objectives: dict[str, PGDTraining | None] = {
        "standard": None,
        "fgsm-rs": PGDTraining(eps=0.3, steps=1, step_size=1.25),
        **{f"pgd-{k}": PGDTraining(eps=0.3, steps=k, step_size=1 / 30) for k in args.pgd_steps},
    }
    best = {name: float("inf") for name in objectives}
    for _ in range(args.rounds):
        for name, settings in objectives.items():
            s = seconds_per_batch(x, y, args.batch_size, args.batches, settings)
            best[name] = min(best[name], s)
    result = {
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "seconds_per_batch": best,
        "relative_to_standard": {k: v / best["standard"] for k, v in best.items()},
    }
    print(json.dumps(result))
    print(f"{'objective':<10} {'s/batch':>8} {'× standard':>11}")
    for name, s in best.items():
        print(f"{name:<10} {s:8.3f} {s / best['standard']:11.1f}")


if __name__ == "__main__":
    main()

"""What BEARD's attack pipeline does to an MNIST digit before any perturbation.

BEARD (Zhou et al. 2024; code at commit 1e70313b) attacks normalised tensors with torchattacks
without declaring the normalisation, so the library's clamp to [0, 1] acts on the normalised
image: on MNIST (mean 0.1307, std 0.3081) every pixel ends in [0.131, 0.439]. This measures the
clean accuracy of stored models on test digits with and without that clamp (perturbation zero),
per condition and seed of `--experiment`, read from the store. Baseline: the same digits unclamped.
Prints JSON, then a table.
`python bench/beard_clamp.py [--experiment seed-study] [--digits 2000]`
"""

import argparse
import json
import statistics

import torch

from suite import schema
from suite.data import load_splits
from suite.tracking import Store

MEAN, STD = 0.1307, 0.3081  # MNIST's, as BEARD's loader normalises


def beard_view(x: torch.Tensor) -> torch.Tensor:
    """The pixels the model sees after BEARD's clamp of the normalised image, zero perturbation."""
    return MEAN + STD * ((x - MEAN) / STD).clamp(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="seed-study")
    ap.add_argument("--digits", type=int, default=2000)
    ap.add_argument("--root", default="data")
    args = ap.parse_args()
    store = Store(read_only=True)
    experiment = store.experiment_id(args.experiment, create=False)
    test = load_splits("mnist", args.root, 1000, 100, 0).test
    x, y = test.x[: args.digits], test.y[: args.digits]
    clamped = beard_view(x)
    rows: dict[str, list[tuple[int, float, float]]] = {}
    for run in store.runs(experiment):
        tags = run.tags
        if tags.get(schema.ROLE) not in schema.ATTACKED_ROLES or run.status != "FINISHED":
            continue
        if schema.MODEL_ID not in tags:
            continue
        model = store.load_model(run.run_id).eval()
        with torch.no_grad():
            plain = (model(x).argmax(1) == y).float().mean().item()
            beard = (model(clamped).argmax(1) == y).float().mean().item()
        rows.setdefault(tags[schema.CONDITION], []).append((int(tags[schema.SEED]), plain, beard))
    table = [
        {
            "condition": condition,
            "seeds": len(accs),
            "clean_acc": round(statistics.fmean(a for _, a, _ in accs), 4),
            "beard_clamped_acc": round(statistics.fmean(b for _, _, b in accs), 4),
            "drop_points": round(100 * statistics.fmean(a - b for _, a, b in accs), 2),
        }
        for condition, accs in sorted(rows.items())
    ]
    print(
        json.dumps(
            {
                "experiment": args.experiment,
                "digits": len(x),
                "pixel_range_after_clamp": [float(clamped.min()), float(clamped.max())],
                "baseline": "the same digits without the clamp",
                "rows": table,
            },
            indent=2,
        )
    )
    print(f"\n{'condition':<16}{'seeds':>6}{'clean %':>9}{'clamped %':>11}{'drop pt':>9}")
    for r in table:
        print(
            f"{r['condition']:<16}{r['seeds']:>6}{100 * r['clean_acc']:>9.1f}"
            f"{100 * r['beard_clamped_acc']:>11.1f}{r['drop_points']:>9.2f}"
        )


if __name__ == "__main__":
    main()

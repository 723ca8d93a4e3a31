"""The exact minimal-L∞ solver's time per digit (`suite.verify.exact`, Tjeng et al. 2019's encoding
in HiGHS) on naturally trained and defensively distilled (T = 100) MLPs of full MNIST.

For each network of `--archs` (`mlp-small`: 784-20-20-10, `mlp`: 784-100-100-10) it trains an
undistilled model and a defensive T = 100 student with `manifests/exact.toml`'s recipe (30,000
digits, 20 epochs of Adam at 0.01 divided by 10 after 12, seed 0),
attacks the first `--digits` correctly classified test digits with FMN-L∞ (1,000 steps; the
solver's starting bracket top, as in a study), certifies them with CROWN, then solves each digit
with the solver as the suite runs it (HiGHS's primal heuristics off) and, as the baseline, with
HiGHS's defaults (heuristics on: what scipy's `milp` runs). Per model and variant: seconds per
digit (median, max), the share solved within `--time-limit`, the median bracket width of the
unsolved, and FMN's median gap above the exact value where solved. One torch thread, one HiGHS
thread. Prints JSON, then a table.
`python bench/exact_speed.py [--archs mlp-small,mlp] [--digits 20] [--time-limit 8] [--tolerance 5e-4]`
"""

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import suite.verify.exact as exact
from suite.attacks import ATTACK_PARAMS
from suite.attacks.run import run_attack
from suite.conditions.defensive import soft_labels
from suite.data import load_splits
from suite.models import build_model
from suite.training import Recipe, accuracy, fit
from suite.verify.bounds import certified_radius
from suite.verify.network import linear_form

TEMPERATURE = 100.0
SUITE_OPTIONS = dict(exact.HEURISTICS_OFF)
VARIANTS = {"heuristics off (suite)": SUITE_OPTIONS, "HiGHS defaults (baseline)": {}}


def train(arch: str, x, targets, labels, temperature: float = 1.0):
    torch.manual_seed(0)
    model = build_model(arch, dropout=0.0)
    recipe = Recipe(epochs=20, optimizer="adam", lr=0.01, lr_decay_epochs=(12,))
    fit(model, x, targets, labels, recipe, seed=0, temperature=temperature)
    return model.eval()


def models(arch: str, data) -> dict[str, torch.nn.Module]:
    """The undistilled model and the defensive student of `arch`."""
    x, y = data.train.x, data.train.y
    plain = train(arch, x, y, y)
    teacher = train(arch, x, y, y, TEMPERATURE)
    student = train(arch, x, soft_labels(teacher, x, TEMPERATURE), y, TEMPERATURE)
    return {"undistilled": plain, f"defensive T={TEMPERATURE:g}": student}


def solve_all(model, x, y, known, cert, args, options) -> list[exact.Exact]:
    ops = linear_form(copy.deepcopy(model).double())
    exact.HEURISTICS_OFF = options  # the variant: the solver reads its options at each solve
    out = []
    for i in range(len(x)):
        out.append(exact.minimal_distortion(
            ops, x[i : i + 1].double(), int(y[i]), 0.5, floor=float(cert[i]),
            known=float(known[i]) if np.isfinite(known[i]) else None,
            tolerance=args.tolerance, time_limit=args.time_limit,
        ))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="mlp-small,mlp")
    parser.add_argument("--digits", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=8.0)
    parser.add_argument("--tolerance", type=float, default=5e-4)
    parser.add_argument("--root", default="data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_splits("mnist", Path(args.root), 30_000, 5_000, 0)
    rows = []
    for arch in args.archs.split(","):
        for name, model in models(arch, data).items():
            with torch.no_grad():
                right = (model(data.test.x[:500]).argmax(1) == data.test.y[:500]).nonzero()
            pick = right.flatten()[: args.digits]
            x, y = data.test.x[pick], data.test.y[pick]
            fmn = run_attack("fmn-linf", ATTACK_PARAMS["fmn-linf"](steps=1000), model, x, y,
                             pick.numpy(), seed=0).records  # fmt: skip
            known = np.where(fmn["success"], fmn["linf"], np.nan)
            cert = certified_radius(linear_form(copy.deepcopy(model).double()), x.double(), y,
                                    "linf", steps=16, upper=1.0).numpy()  # fmt: skip
            for variant, options in VARIANTS.items():
                start = time.perf_counter()
                found = solve_all(model, x, y, known, cert, args, options)
                solved = [f for f in found if f.solved]
                open_ = [f.upper - f.lower for f in found if not f.solved and np.isfinite(f.upper)]
                gaps = [
                    known[i] / f.value - 1 for i, f in enumerate(found) if f.solved and f.value > 0
                ]
                seconds = [f.seconds for f in found]
                rows.append({
                    "arch": arch, "model": name, "variant": variant,
                    "test_acc": round(accuracy(model, data.test.x, data.test.y), 4),
                    "digits": len(found), "solved": round(len(solved) / len(found), 3),
                    "s_per_digit_median": round(statistics.median(seconds), 2),
                    "s_per_digit_max": round(max(seconds), 2),
                    "s_total": round(time.perf_counter() - start, 1),
                    "median_certified": round(float(np.median(cert)), 5),
                    "median_exact": round(statistics.median(f.value for f in solved), 5)
                    if solved else float("nan"),
                    "median_open_width": round(statistics.median(open_), 5) if open_ else 0.0,
                    "fmn_gap_median": round(statistics.median(gaps), 4) if gaps else float("nan"),
                })  # fmt: skip
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    exact.HEURISTICS_OFF = SUITE_OPTIONS
    result = {
        "baseline": "the same solver under HiGHS's default options (primal heuristics on, as "
        "scipy's milp runs it), same digits, same machine, same process",
        "threads": 1,
        "time_limit_s": args.time_limit,
        "tolerance": args.tolerance,
        "rows": rows,
    }
    print(json.dumps(result, indent=1))
    head = f"{'arch':10} {'model':16} {'variant':27} solved  med s  max s  FMN gap"
    print(head)
    for r in rows:
        print(
            f"{r['arch']:10} {r['model']:16} {r['variant']:27} {r['solved']:6.2f} "
            f"{r['s_per_digit_median']:6.1f} {r['s_per_digit_max']:6.1f} "
            f"{r['fmn_gap_median']:8.4f}"
        )


if __name__ == "__main__":
    main()

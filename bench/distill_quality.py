"""Distilled-set quality against the published numbers (a benchmark, not a test: CPU hours).

For each dataset × method × ipc: distil from the training split (or read a set kept by `--save`
with `--load`), train a fresh model of each `--arch` on the synthetic set alone with that
architecture's recipe, exactly as the suite's synthetic condition does (suite/distill/evaluate.py
RECIPES; `convnet`, the papers' ConvNet of width 128 and depth 3 on MNIST-standardised inputs: SGD
0.01, momentum 0.9, weight decay 5e-4, lr ×0.1 at half the epochs, DSA without `flip`), and report
test accuracy, wall times and the gap to the paper's (ConvNet) number. `--eval-models N` averages N
fresh models per set (the papers: 20 models × 5 sets). Prints one JSON document, then a table.

    python bench/distill_quality.py --dataset mnist-5k --methods random,herding,dm,dc --ipc 1,10
    python bench/distill_quality.py --methods random --ipc 10 --arch convnet,cw-mnist --eval-models 2

`--convergence 0,100,300,1000` is the convergence mode: one DM run per --ipc (full MNIST from
--root by default, `--batch-real` real images per class, the paper's 256), its set evaluated on
every --arch at each listed iteration, with the seconds per DM iteration of each stretch and the
gain per doubling of the iterations (a curve has flattened where that gain is under 0.3 points).

    python bench/distill_quality.py --convergence 0,100,300,1000,3000 --ipc 1,10,50 --dataset mnist

`--train-samples` and `--val-samples` cut the split as a manifest's `[data]` does, so that with the
manifest's settings and `--seed` equal to its `set_seed` the curve is that of the study's own set.

What it measured, with the commands: `docs/distillation.md`.
"""

import argparse
import dataclasses
import json
import math
import shlex
import statistics
import sys
import time
import tomllib
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from suite.data import load_splits
from suite.distill import (
    RECIPES,
    DCParams,
    DDParams,
    DistillResult,
    DMParams,
    EvalRecipe,
    HerdingParams,
    RandomParams,
    distill,
    dsa,
    train_on_synthetic,
)
from suite.distill.common import RealData, initial_images
from suite.distill.dm import dm_iterations
from suite.distill.published import PROVENANCE, PUBLISHED
from suite.models import build_model

METHODS = ("random", "herding", "dd", "dc", "dsa", "dm")

# CPU-sized iteration counts (the papers': dm 20,000; dc/dsa 1,000; dd thousands), and --quick's.
ITERATIONS = {"dm": {1: 200, 10: 200, 50: 200}, "dd": {1: 100, 10: 100, 50: 100}}
ITERATIONS["dc"] = ITERATIONS["dsa"] = {1: 100, 10: 3, 50: 1}
QUICK_ITERATIONS = {"dm": 5, "dd": 3, "dc": 1, "dsa": 1}


def method_settings(
    method: str, ipc: int, quick: bool, iterations: dict[str, int]
) -> tuple[str, object]:
    """(distill method name, params) for one bench run; `iterations` (by method) overrides the
    table."""
    if method == "random":
        return "random", RandomParams()
    if method == "herding":
        return "herding", HerdingParams()
    if method in iterations:
        iterations = iterations[method]
    else:
        iterations = QUICK_ITERATIONS[method] if quick else ITERATIONS[method].get(ipc, 1)
    if method == "dm":
        return "dm", DMParams(iterations=iterations, batch_real=64)
    if method == "dd":
        return "dd", DDParams(iterations=iterations, batch_real=256)
    return "dc", DCParams(iterations=iterations, batch_real=64, dsa=method == "dsa")


def test_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        correct = sum(
            (model(xb).argmax(1) == yb).sum().item()
            for xb, yb in zip(x.split(1000), y.split(1000), strict=True)
        )
    return 100.0 * correct / len(y)


def learned_steps_accuracy(result, ipc: int, params: DDParams, model: nn.Module, splits) -> float:
    """Wang et al.'s own evaluation of dd: a fresh net trained only by the learned steps."""
    steps = params.inner_steps or ipc
    per_step = ipc // steps
    for i, lr in enumerate(result.lrs.tolist()):
        s = i % steps
        idx = torch.tensor([c * ipc + s * per_step + j for c in range(10) for j in range(per_step)])
        loss = F.cross_entropy(model(result.x_syn[idx]), result.y_syn[idx])
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads, strict=True):
                p -= lr * g
    return test_accuracy(model.eval(), splits.test.x, splits.test.y)


def evaluate(result, splits, arch: str, recipe: EvalRecipe, seed: int) -> float:
    """Test accuracy of one fresh `arch` model (init from `seed`) trained on the synthetic set
    alone with `recipe`, exactly as the suite's synthetic condition trains it."""
    torch.manual_seed(seed)
    model = build_model(arch, dropout=recipe.dropout)
    train_on_synthetic(model, result.x_syn, result.y_syn, recipe, seed=seed)
    return test_accuracy(model, splits.test.x, splits.test.y)


def obtain_set(splits, dataset: str, method: str, ipc: int, args) -> tuple[DistillResult, dict]:
    """The synthetic set: distilled now (kept under --save), or read from --load; and its facts."""
    name, params = method_settings(method, ipc, args.quick, args.iterations)
    file = f"{dataset}-{method}-ipc{ipc}-seed{args.seed}.pt"
    init = "noise" if name == "dd" else "real"
    facts = {"init": init, "params": params.model_dump()}
    if args.load:
        saved = torch.load(args.load / file)
        result = DistillResult(saved["x_syn"], saved["y_syn"], [], saved["lrs"])
        return result, {**facts, "loaded_from": str(args.load / file)}
    train = splits.train
    start = time.perf_counter()

    def progress(i: int, total: int, loss: float) -> None:
        if i == 1 or i % 10 == 0 or i == total:
            elapsed = time.perf_counter() - start
            print(
                f"  {dataset} {method} ipc={ipc}: iteration {i}/{total} loss {loss:.4g} "
                f"({elapsed:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    result = distill(
        name, params, train.x, train.y, ipc=ipc, init=init, seed=args.seed, on_step=progress
    )
    facts["distill_s"] = round(time.perf_counter() - start, 1)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"x_syn": result.x_syn, "y_syn": result.y_syn, "lrs": result.lrs}, args.save / file
        )
    curve = result.loss_curve
    facts["loss_first"], facts["loss_last"] = (curve[0], curve[-1]) if curve else (None, None)
    if name == "dd":
        torch.manual_seed(args.seed)
        fresh = build_model("convnet")
        facts["test_acc_learned_steps"] = round(
            learned_steps_accuracy(result, ipc, params, fresh, splits), 2
        )
    return result, facts


def run_one(splits, dataset: str, method: str, ipc: int, args) -> list[dict]:
    """One set, evaluated on every --arch with that architecture's recipe: one row per arch."""
    result, facts = obtain_set(splits, dataset, method, ipc, args)
    rows = []
    for arch in args.arch:
        recipe = dataclasses.replace(RECIPES[arch], **args.recipe)
        start = time.perf_counter()
        accs = [
            evaluate(result, splits, arch, recipe, args.seed + k) for k in range(args.eval_models)
        ]
        eval_s = (time.perf_counter() - start) / args.eval_models
        acc = statistics.fmean(accs)
        paper_key = "mnist" if dataset == "mnist-5k" else dataset
        published = PUBLISHED.get(paper_key, {}).get(method, {}).get(ipc)  # ConvNet numbers
        published = published if arch == "convnet" else None
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "ipc": ipc,
                "arch": arch,
                "recipe": dataclasses.asdict(recipe),
                "status": "ok",
                "test_acc": round(acc, 2),
                "test_acc_std": round(statistics.pstdev(accs), 2),
                "test_accs": [round(a, 2) for a in accs],
                "published": published,
                "gap": None if published is None else round(acc - published, 2),
                "eval_s": round(eval_s, 1),
                **facts,
            }
        )
    return rows


def convergence(splits, dataset: str, ipc: int, args) -> list[dict]:
    """One DM run at `ipc`, its set evaluated at each iteration of --convergence (0: the random
    real images it starts from): one row per (checkpoint, arch) with the accuracy, the seconds per
    DM iteration since the previous checkpoint (evaluation not counted) and the gain per doubling
    of the iterations from it."""
    checkpoints = sorted(set(args.convergence))
    params = DMParams(
        iterations=max(max(checkpoints), 1), batch_real=args.batch_real, real_bf16=args.real_bf16
    )
    train = splits.train

    def real_data() -> RealData:
        generator = torch.Generator().manual_seed(args.seed)
        return RealData(
            train.x, train.y, torch.device("cpu"), generator, compile=not args.no_compile
        )

    rows: list[dict] = []
    clock = {"distill_s": 0.0, "resumed": time.perf_counter(), "it": 0, "at_last": 0.0}

    def checkpoint(it: int, real: RealData, syn: torch.Tensor) -> None:
        span = it - clock["it"]
        per_it = (clock["distill_s"] - clock["at_last"]) / span if span > 0 else None
        result = DistillResult.learned(real, syn.detach().clone(), ipc, [])
        for arch in args.arch:
            recipe = dataclasses.replace(RECIPES[arch], **args.recipe)
            accs = [
                evaluate(result, splits, arch, recipe, args.seed + k)
                for k in range(args.eval_models)
            ]
            acc = statistics.fmean(accs)
            before = next(
                (r for r in reversed(rows) if r["arch"] == arch and 0 < r["iteration"] < it), None
            )
            gain = None
            if before is not None:
                gain = round((acc - before["test_acc"]) / math.log2(it / before["iteration"]), 2)
            published = PUBLISHED["mnist"]["dm"].get(ipc) if arch == "convnet" else None
            row = {
                "dataset": dataset,
                "method": "dm",
                "ipc": ipc,
                "arch": arch,
                "iteration": it,
                "batch_real": args.batch_real,
                "real_bf16": args.real_bf16,
                "test_acc": round(acc, 2),
                "test_accs": [round(a, 2) for a in accs],
                "gain_per_doubling": gain,
                "s_per_iteration": None if per_it is None else round(per_it, 3),
                "distill_s": round(clock["distill_s"], 1),
                "published": published,
                "gap": None if published is None else round(acc - published, 2),
                "status": "ok",
            }
            rows.append(row)
            print("RUN " + json.dumps(row), file=sys.stderr, flush=True)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            name = f"{dataset}-dm-ipc{ipc}-it{it}-seed{args.seed}.pt"
            torch.save(
                {"x_syn": result.x_syn, "y_syn": result.y_syn, "lrs": None}, args.save / name
            )
        clock["it"], clock["at_last"] = it, clock["distill_s"]

    if 0 in checkpoints:  # the same draw dm_iterations starts from
        start_from = real_data()
        checkpoint(0, start_from, initial_images(start_from, ipc, "real"))
    real = real_data()
    clock["resumed"] = time.perf_counter()
    for it, _, syn in dm_iterations(params, real, ipc, "real"):
        clock["distill_s"] += time.perf_counter() - clock["resumed"]
        if it in checkpoints:
            checkpoint(it, real, syn)
        elif it % 50 == 0:
            print(f"  dm ipc={ipc}: iteration {it} ({clock['distill_s']:.0f} s)", file=sys.stderr)
        if clock["distill_s"] > 60 * args.budget_minutes:
            print(f"  dm ipc={ipc}: budget spent at iteration {it}", file=sys.stderr, flush=True)
            break
        clock["resumed"] = time.perf_counter()
    return rows


def print_table(runs: list[dict]) -> None:
    header = (
        f"{'dataset':<14}{'method':<9}{'ipc':>4}{'arch':>10}{'acc %':>8}{'sd':>6}{'paper %':>9}"
    )
    header += f"{'gap':>7}"
    print(header + f"{'distill s':>11}{'eval s':>8}  status")
    for r in runs:
        acc = f"{r['test_acc']:.2f}" if r.get("test_acc") is not None else "-"
        sd = f"{r['test_acc_std']:.2f}" if r.get("test_acc_std") is not None else "-"
        paper = f"{r['published']:.1f}" if r.get("published") is not None else "-"
        gap = f"{r['gap']:+.2f}" if r.get("gap") is not None else "-"
        dist = f"{r['distill_s']:.0f}" if r.get("distill_s") is not None else "-"
        ev = f"{r['eval_s']:.0f}" if r.get("eval_s") is not None else "-"
        print(
            f"{r['dataset']:<14}{r['method']:<9}{r['ipc']:>4}{r.get('arch', '-'):>10}{acc:>8}{sd:>6}"
            f"{paper:>9}{gap:>7}"
            f"{dist:>11}{ev:>8}  {r['status']}"
        )


def print_convergence(runs: list[dict]) -> None:
    """ipc × iteration → accuracy, the gain per doubling and the seconds per DM iteration."""
    print(
        f"{'ipc':>4}{'arch':>10}{'iteration':>11}{'acc %':>8}{'gain/doubling':>15}"
        f"{'s/iteration':>13}{'paper %':>9}{'gap':>7}"
    )
    for r in runs:
        gain = "-" if r["gain_per_doubling"] is None else f"{r['gain_per_doubling']:+.2f}"
        per_it = "-" if r["s_per_iteration"] is None else f"{r['s_per_iteration']:.2f}"
        paper = "-" if r["published"] is None else f"{r['published']:.1f}"
        gap = "-" if r["gap"] is None else f"{r['gap']:+.2f}"
        print(
            f"{r['ipc']:>4}{r['arch']:>10}{r['iteration']:>11}{r['test_acc']:>8.2f}{gain:>15}"
            f"{per_it:>13}{paper:>9}{gap:>7}"
        )
    print("a curve has flattened where the gain per doubling of the iterations is under 0.3 points")


def positive_int(text: str) -> int:
    """An integer ≥ 1, or argparse's one-line error."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"need an integer >= 1, got {text!r}")
    return int(text)


def recipe_overrides(text: str) -> dict[str, object]:
    """'optimizer=sgd,lr=0.01,dropout=0.5' → overrides of every --arch's recipe, each value read as
    TOML (a bare word is a string); argparse's one-line error for an unknown field or strategy."""
    fields = {f.name for f in dataclasses.fields(EvalRecipe)}
    out: dict[str, object] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key not in fields:
            raise argparse.ArgumentTypeError(f"no recipe field {key!r}; fields: {sorted(fields)}")
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value
    try:
        dsa.check_strategy(str(out.get("dsa_strategy", "crop")))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return out


def arch_list(text: str) -> list[str]:
    """'convnet,cw-mnist' → the names, or argparse's one-line error naming an unknown arch."""
    archs = text.split(",")
    unknown = sorted(set(archs) - set(RECIPES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown archs {unknown}; choose from {sorted(RECIPES)}")
    return archs


def parse_iterations(text: str) -> dict[str, int]:
    """'600' → every learned method 600; 'dm=600,dc=3' → per method."""
    if "=" not in text:
        return dict.fromkeys(QUICK_ITERATIONS, int(text))
    pairs = dict(item.split("=", 1) for item in text.split(","))
    unknown = sorted(set(pairs) - set(QUICK_ITERATIONS))
    if unknown:
        raise argparse.ArgumentTypeError(f"no iterations to set for {unknown}")
    return {k: int(v) for k, v in pairs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="random,herding,dm,dc,dsa,dd")
    parser.add_argument("--ipc", default="1,10")
    parser.add_argument("--dataset", default="mnist-5k", help="comma list: mnist-5k,fashion-mnist")
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument(
        "--arch",
        default="convnet",
        type=arch_list,
        help="comma list of model archs to evaluate each set on, each with its RECIPES entry",
    )
    parser.add_argument(
        "--recipe",
        type=recipe_overrides,
        default={},
        help="override recipe fields for every arch, e.g. epochs=500,dropout=0.5 or "
        "dsa_strategy=color_crop_cutout_flip_scale_rotate (the papers' DSA, which mirrors digits)",
    )
    parser.add_argument(
        "--eval-models", type=positive_int, default=1, help="fresh models per set (the papers: 20)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, help="folder to keep each synthetic set in (.pt)")
    parser.add_argument(
        "--load", type=Path, help="folder of sets kept by --save: evaluate them, distil nothing"
    )
    parser.add_argument(
        "--iterations",
        type=parse_iterations,
        default={},
        help="override the learned methods' iterations: N for all, or e.g. dm=600,dc=3",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: few iterations/epochs")
    parser.add_argument(
        "--convergence",
        type=lambda t: [int(v) for v in t.split(",")],
        help="DM iterations to evaluate the set at, e.g. 0,100,300,1000 (the convergence mode)",
    )
    parser.add_argument("--root", default="data", help="where full MNIST is (the IDX files)")
    parser.add_argument(
        "--train-samples",
        type=positive_int,
        help="a stratified subset of the training split, as a manifest's data.train_samples",
    )
    parser.add_argument(
        "--val-samples", type=int, help="held out of training, as data.val_samples (default 0)"
    )
    parser.add_argument("--batch-real", type=int, default=256, help="convergence: real per class")
    parser.add_argument("--real-bf16", action="store_true", help="convergence: DMParams.real_bf16")
    parser.add_argument("--no-compile", action="store_true", help="run DM eagerly")
    args = parser.parse_args()
    if args.quick:
        args.recipe["epochs"] = min(args.recipe.get("epochs", 20), 20)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    ipcs = [int(v) for v in args.ipc.split(",")]
    start, runs = time.perf_counter(), []
    for dataset in args.dataset.split(","):
        root = None if dataset == "mnist-5k" else args.root
        val = args.val_samples if args.val_samples is not None else 500 * (dataset == "mnist-5k")
        splits = load_splits(dataset, root, args.train_samples, val, 0)
        if args.convergence:
            for ipc in ipcs:
                runs.extend(convergence(splits, dataset, ipc, args))
            continue
        for ipc in ipcs:
            for method in methods:
                if time.perf_counter() - start > 60 * args.budget_minutes:
                    runs.append(
                        {
                            "dataset": dataset,
                            "method": method,
                            "ipc": ipc,
                            "status": "skipped: budget spent",
                        }
                    )
                    continue
                for row in run_one(splits, dataset, method, ipc, args):
                    runs.append(row)
                    print("RUN " + json.dumps(row), file=sys.stderr, flush=True)
    report = {
        "command": shlex.join(["python", *sys.argv]),
        "torch_threads": torch.get_num_threads(),
        "recipe_overrides": args.recipe,
        "eval_models": args.eval_models,
        "iterations_override": args.iterations,
        "wall_minutes": round((time.perf_counter() - start) / 60, 1),
        "published_provenance": PROVENANCE,
        "runs": runs,
    }
    print(json.dumps(report, indent=2))
    print()
    (print_convergence if args.convergence else print_table)(runs)


if __name__ == "__main__":
    main()

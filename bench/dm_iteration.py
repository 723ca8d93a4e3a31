"""One DM iteration (Zhao & Bilen 2023) against the bare passes over the same tensors.

For each ipc: a DM iteration as the paper code runs it (per class, one real forward under no_grad and
one synthetic forward; the baseline), the suite's (`suite.distill.dm.Matcher`: the real batches
class by class, the synthetic images of all classes in one forward and backward), eager and
compiled (channels-last), each with the real embedding in float32 and under bfloat16 autocast,
and the bare passes: a forward of the same real batches without autograd, class by class, plus a
forward and backward of the same synthetic images, in float32, without DSA or any draw.
Overhead = the variant's seconds ÷ the bare seconds; below 1 where compilation or bfloat16 beat
eager float32 kernels.
For bfloat16 it also reports how far the synthetic images' gradient moves: the cosine between the
gradient with the bfloat16 real embedding and with the float32 one, on the same draws.

Times are the median over `--repeats` iterations after one warm-up, with `--threads` torch
threads, on full MNIST's training split (or --dataset). Prints JSON, then a table.
`python bench/dm_iteration.py [--ipc 1,10,50] [--batch-real 256] [--threads 1] [--quick]`
"""

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from suite.data import NUM_CLASSES, load_splits
from suite.distill import DMParams
from suite.distill.common import RealData, fresh_convnet, initial_images
from suite.distill.dm import Matcher, draw_batches
from suite.models import ConvNet


def paper_loop_loss(net: ConvNet, x_real: list[torch.Tensor], x_syn: list[torch.Tensor]):
    """The paper code's iteration: two embeddings per class (the baseline)."""
    loss = x_syn[0].new_zeros(())
    for xr, xs in zip(x_real, x_syn, strict=True):
        with torch.no_grad():
            target = net.embed(xr).mean(0)
        loss = loss + (target - net.embed(xs).mean(0)).pow(2).sum()
    return loss


def timed(step: Callable[[], None], repeats: int) -> tuple[float, float]:
    """(seconds of the first call, which compiles where compiled; median seconds of `step` over
    `repeats` calls after it)."""
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def variants(params: DMParams, real: RealData, ipc: int) -> dict[str, Callable[[], None]]:
    """name → one full iteration (redrawn net, draws, loss, backward) or the bare passes."""
    syn = initial_images(real, ipc, "real").requires_grad_(True)

    def iteration(real_bf16: bool, compiled: bool) -> Callable[[], None]:
        matcher = Matcher(
            params.model_copy(update={"real_bf16": real_bf16}), real, compiled=compiled
        )

        def step() -> None:
            matcher.redraw(real)
            x_real, x_syn = draw_batches(params, real, syn, ipc)
            loss = matcher.loss(x_real, x_syn)
            syn.grad = None
            loss.backward()

        return step

    def paper_loop() -> None:
        net = fresh_convnet(params.net_width, params.net_depth, real).requires_grad_(False)
        x_real, x_syn = draw_batches(params, real, syn, ipc)
        syn.grad = None
        paper_loop_loss(net, x_real, x_syn).backward()

    fixed_real = [real.of_class(c, params.batch_real) for c in range(NUM_CLASSES)]
    fixed_net = fresh_convnet(params.net_width, params.net_depth, real).requires_grad_(False)

    def bare() -> None:
        with torch.no_grad():
            for x in fixed_real:
                fixed_net.embed(x)
        syn.grad = None
        fixed_net.embed(syn).sum().backward()

    return {
        "paper loop": paper_loop,
        "suite, eager": iteration(False, False),
        "suite, eager, bf16 real": iteration(True, False),
        "suite, compiled": iteration(False, True),
        "suite, compiled, bf16 real": iteration(True, True),
        "bare fp32": bare,
    }


def bf16_gradient_cosine(params: DMParams, real: RealData, ipc: int, draws: int) -> list[float]:
    """Cosine between the synthetic gradient under a bfloat16 and a float32 real embedding, each
    on the same net and draws."""
    syn = initial_images(real, ipc, "real").requires_grad_(True)
    out = []
    for _ in range(draws):
        net = fresh_convnet(params.net_width, params.net_depth, real).requires_grad_(False)
        x_real, x_syn = draw_batches(params, real, syn, ipc)
        grads = []
        for bf16 in (False, True):
            matcher = Matcher(params.model_copy(update={"real_bf16": bf16}), real, compiled=False)
            matcher.net.load_state_dict(net.state_dict())
            (g,) = torch.autograd.grad(matcher.loss(x_real, x_syn), syn, retain_graph=True)
            grads.append(g.flatten())
        out.append(float(F.cosine_similarity(grads[0], grads[1], dim=0)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipc", default="1,10,50")
    ap.add_argument("--batch-real", type=int, default=256, help="real images per class (paper 256)")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--root", default="data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="ipc 1, 32 real per class, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.ipc, args.batch_real, args.repeats = "1", 32, 1
    torch.set_num_threads(args.threads)
    root = None if args.dataset == "mnist-5k" else args.root
    splits = load_splits(args.dataset, root, None, 0 if args.dataset != "mnist-5k" else 500, 0)
    params = DMParams(batch_real=args.batch_real)
    rows = []
    for ipc in [int(v) for v in args.ipc.split(",")]:
        generator = torch.Generator().manual_seed(0)
        real = RealData(splits.train.x, splits.train.y, torch.device("cpu"), generator)
        seconds = {
            name: timed(step, args.repeats) for name, step in variants(params, real, ipc).items()
        }
        cosines = bf16_gradient_cosine(params, real, ipc, max(args.repeats, 2))
        base = seconds["bare fp32"][1]
        for name, (first, s) in seconds.items():
            rows.append(
                {
                    "ipc": ipc,
                    "variant": name,
                    "seconds": round(s, 4),
                    "overhead": round(s / base, 3),
                    "first_call_s": round(first, 1),
                }
            )
        rows.append({"ipc": ipc, "variant": "bf16 gradient cosine (min)", "value": min(cosines)})
        print(f"ipc {ipc} done", file=sys.stderr, flush=True)
    result = {
        "baseline": "bare fp32: a forward of the same real batch without autograd plus a forward "
        "and backward of the same synthetic images, no DSA, no draws",
        "dataset": args.dataset,
        "batch_real": args.batch_real,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    print(json.dumps(result, indent=2))
    print(f"\n{'ipc':>4}  {'variant':<28}{'s/iteration':>12}{'overhead':>10}{'first call s':>14}")
    for r in rows:
        if "seconds" in r:
            print(
                f"{r['ipc']:>4}  {r['variant']:<28}{r['seconds']:>12.3f}{r['overhead']:>10.2f}"
                f"{r['first_call_s']:>14.1f}"
            )
        else:
            print(f"{r['ipc']:>4}  {r['variant']:<28}{r['value']:>12.6f}")


if __name__ == "__main__":
    main()

"""Our C&W L0 and L∞ against ART's `CarliniL0Method` / `CarliniLInfMethod` on the same model and digits.

cw-mnist trained 12 epochs on the 4,000 mnist-5k training digits (weights cached under --cache,
shared with bench/attack_vs_foolbox.py); the first --samples correctly classified held-out digits;
untargeted. Ours runs at its defaults (the paper code's: l0_attack.py, li_attack.py) and, as an
ablation, with the other setting of its stall rule (gives up a c early: on by default for L0,
off for L∞, where it cost +1.3% median L∞); ART runs at its defaults, batched for L0. Both sides
run through one model wrapper that counts, per digit, the rows of every backward pass (gradient
evaluations) and of every forward pass; success, L0 (pixels with |Δ| > 1e-5) and L∞ are
recomputed here from the returned images.

ART's L0 has not finished 2 digits in 900 s here, so `fmn-l0` adds an independent L0 figure:
FMN (Pintor et al. 2021) at L0, 1,000 steps, as adv-lib 0.2.8 implements it (bench/
l2_ensemble_vs_fmn.py says how to install it); without adv-lib the bench stops at once and says
so (or pass `--skip fmn-l0`).

ART's `CarliniL0Method` loops over `x.shape[1]` (the features of tabular data): on images in
NCHW it would freeze at most one pixel, so both ART attacks get digits shaped 784×1×1 and a model
that reshapes them.
Prints one JSON document, then a table.   `python bench/attack_vs_art.py [--skip art-l0]`
"""

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from art.attacks.evasion import CarliniL0Method, CarliniLInfMethod
from art.estimators.classification import PyTorchClassifier
from attack_throughput import attacked_digits, trained_cw_mnist
from l2_ensemble_vs_fmn import adv_lib_fmn
from torch import Tensor, nn

from suite.attacks import distortions, run_attack
from suite.attacks.cw_l0 import CWL0Params
from suite.attacks.cw_linf import CWLinfParams
from suite.data import load_splits

_PER_DIGIT = ("l0", "linf", "success")
RUNS = (
    "ours-l0", "ours-l0-no-stall", "art-l0", "fmn-l0", "ours-linf", "ours-linf-stall", "art-linf",
)  # fmt: skip
FMN_STEPS = 1000


class _Counted(torch.autograd.Function):
    """Identity on the logits that adds the rows of every backward pass through it to a counter."""

    @staticmethod
    def forward(ctx, logits: Tensor, counter: "_Counting") -> Tensor:
        ctx.counter = counter
        return logits.view_as(logits)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        ctx.counter.backward_rows += len(grad)
        return grad, None


class _Counting(nn.Module):
    """Forwards to `model` (reshaping flat inputs to 1×28×28), counting forward and backward rows:
    a backward pass per row is one gradient evaluation, however many passes share one forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_rows = 0
        self.backward_rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.forward_rows += len(x)
        logits = self.model(x.view(-1, 1, 28, 28))
        return _Counted.apply(logits, self) if torch.is_grad_enabled() else logits


def main() -> None:
    args = _parse()
    torch.set_num_threads(args.threads)
    splits = load_splits("mnist-5k", root=None, train_samples=None, val_samples=0, split_seed=0)
    model = trained_cw_mnist(splits, args.epochs, Path(args.cache))
    x, y, index, accuracy = attacked_digits(model, splits.test.x, splits.test.y, args.samples)
    fmn = None if "fmn-l0" in args.skip else adv_lib_fmn()
    runs = [
        _run(name, model, x, y, index, args.art_linf_iter, fmn)
        for name in RUNS
        if name not in args.skip
    ]
    result = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "model": f"cw-mnist, {args.epochs} epochs on {len(splits.train.x)} mnist-5k digits, "
        f"held-out accuracy {accuracy:.4f}",
        "digits": len(x),
        "runs": runs,
    }
    print(json.dumps(result, indent=2))
    _table(runs)


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--samples", type=int, default=20, help="attacked held-out digits (20)")
    ap.add_argument("--epochs", type=int, default=12, help="training epochs of cw-mnist (12)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--skip", nargs="*", default=[], choices=RUNS, help="runs to leave out")
    ap.add_argument(
        "--art-linf-iter", type=int, default=10, help="ART L∞ Adam steps per (τ, c) (default 10)"
    )
    ap.add_argument(
        "--cache",
        default=os.path.join(tempfile.gettempdir(), "suite-bench"),
        help="where the trained weights are cached",
    )
    return ap.parse_args()


def _run(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    index: np.ndarray,
    art_linf_iter: int,
    fmn: Callable[..., Tensor] | None,
) -> dict:
    """One attack on all digits; success, L0 and L∞ recomputed from the returned images."""
    counting = _Counting(model).eval()
    ablation = {
        "ours-l0-no-stall": {"abort_window": 10**9},  # the check then never fires after iteration 0
        "ours-linf-stall": {"give_up_stalled": True},  # off by default: +1.3% median L∞
    }
    t = time.perf_counter()
    if name == "fmn-l0":
        x_adv = fmn(counting, x, y, norm=0, steps=FMN_STEPS).detach()
    elif name.startswith("ours"):
        kind = "cw-l0" if "l0" in name else "cw-linf"
        params = (CWL0Params if kind == "cw-l0" else CWLinfParams)(**ablation.get(name, {}))
        x_adv = run_attack(kind, params, counting, x, y, index, seed=0, batch_size=len(x)).x_adv
    else:
        classifier = PyTorchClassifier(
            counting, loss=nn.CrossEntropyLoss(), input_shape=(784, 1, 1), nb_classes=10,
            clip_values=(0.0, 1.0), device_type="cpu",
        )  # fmt: skip
        attack = (
            CarliniL0Method(classifier, batch_size=len(x), verbose=False)
            if name == "art-l0"
            else CarliniLInfMethod(classifier, max_iter=art_linf_iter, verbose=False)
        )
        flat = attack.generate(x.view(-1, 784, 1, 1).numpy(), y.numpy())
        x_adv = torch.from_numpy(flat).view_as(x)
    wall = time.perf_counter() - t
    x_adv = x_adv.clamp(0, 1)
    with torch.inference_mode():
        success = (model(x_adv).argmax(1) != y).numpy()
    dist = distortions(x, x_adv)
    row = {
        "name": name + (f" (max_iter {art_linf_iter})" if name == "art-linf" else ""),
        "success_rate": float(success.mean()),
        "median_l0": float(np.median(dist["l0"][success])) if success.any() else None,
        "median_linf": float(np.median(dist["linf"][success])) if success.any() else None,
        "l0": dist["l0"].tolist(),
        "linf": dist["linf"].tolist(),
        "success": success.tolist(),
        "grad_evals_per_digit": counting.backward_rows / len(x),
        "forwards_per_digit": counting.forward_rows / len(x),
        "wall_s": wall,
    }
    print(f"done: {json.dumps({k: v for k, v in row.items() if k not in _PER_DIGIT})}",
          file=sys.stderr, flush=True)  # fmt: skip
    return row


def _table(runs: list[dict]) -> None:
    print(f"\n{'attack':<22}{'success':>9}{'median L0':>11}{'median L∞':>11}"
          f"{'grads/digit':>13}{'fwds/digit':>12}{'wall s':>9}")  # fmt: skip
    for r in runs:
        l0 = f"{r['median_l0']:.1f}" if "l0" in r["name"] and r["median_l0"] is not None else "-"
        li = f"{r['median_linf']:.4f}" if r["median_linf"] is not None else "-"
        print(
            f"{r['name']:<22}{r['success_rate']:>9.0%}{l0:>11}{li:>11}"
            f"{r['grad_evals_per_digit']:>13.0f}{r['forwards_per_digit']:>12.0f}{r['wall_s']:>9.1f}"
        )


if __name__ == "__main__":
    main()

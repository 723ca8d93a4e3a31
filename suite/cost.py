"""What a manifest will cost before it runs: the passes each job makes and their predicted time.

A pass is one sample through the network: forward only (Square's queries, soft labels, herding's
embeddings), forward and backward to the input (an attack's or adversarial training's step), or to
the weights (a training step). Counts come
from the manifest's sizes and each method's loop structure; the time per pass is measured here, in
the calling process, on the bare network at the batch size the job uses (`measure_rates`). Where a
loop stops early per digit (PGD, AutoAttack on fooled digits, the accuracy-matched control) the
count is its budget, an upper bound, and says so. A verification is counted in bound evaluations
(one CROWN or IBP certificate of one digit at one bisection radius, timed on the bare network like
a pass) and, for the exact solver, its time limit per digit (an upper bound). Loops whose length
depends on the data (C&W L∞'s and L0's outer searches, Wang et al.'s unrolled training) are not
predicted, rather than guessed.
Issue 27 (`suite run --dry-run`); the attacks' overhead over these bare passes is measured by
`bench/attack_overhead.py`.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from suite.attacking import attack_batch_size
from suite.attacks import ATTACK_PARAMS
from suite.data import NUM_CLASSES
from suite.distill import RECIPES
from suite.manifest import (
    AdversarialCondition,
    ARDCondition,
    DefensiveCondition,
    Manifest,
    MatchedCondition,
    StandardCondition,
)
from suite.models import build_model
from suite.schema import ROLE_TEACHER as TEACHER

AA_COMPONENTS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}  # the authors' versions (autoattack.AutoAttack); "plus" restarts 5 times, "rand" averages 20
AA_REPEATS = {"standard": 1, "plus": 5, "rand": 20}
Grad = Literal["none", "input", "weights", "bound-linf", "bound-l2", "bound-l1", "bound-ibp"]
"""What a pass computes beyond the forward: nothing, the input's or the weights' gradient, or a
certificate at one radius: CROWN's in one norm, or IBP's (`suite.verify.bounds.certified`)."""


@dataclass(frozen=True)
class Work:
    """One part of a job: `passes` samples through `net` (a model registry name) in batches of
    `batch`, with a backward pass to `grad` ("none": forward only), under bfloat16 autocast where
    `bf16`; `bound` where the loop may stop sooner; `passes` None where its length depends on the
    data. `role` is the model the part makes or attacks (None: the job's model under attack), and
    `attack` the attack (`verify` the verification) it runs, so that a dry run can tell which parts
    the store already holds."""

    what: str
    passes: float | None
    batch: int
    net: str
    grad: Grad = "input"
    bound: bool = False
    bf16: bool = False
    role: str | None = None
    attack: str | None = None
    verify: str | None = None
    budget_s: float = 0.0  # seconds on top of the passes: the exact solver's time limits


def attack_work(kind: str, params: dict, digits: int, batch: int, name: str, net: str) -> Work:
    """The passes of one attack of `kind` with `params` (the manifest's table) on `digits` digits
    of `net`."""
    p = ATTACK_PARAMS[kind].model_validate(params)
    per_digit: float | None
    bound, grad = False, "input"
    if kind == "cw-l2":
        per_digit = p.binary_steps * p.max_iterations
        bound = p.abort_failing
    elif kind in ("ddn", "fmn", "fmn-linf"):
        per_digit = p.steps
    elif kind in ("pgd-linf", "pgd-l2"):
        per_digit, bound = len(p.eps) * p.restarts * p.steps, True  # fooled digits stop
    elif kind == "fgsm":
        per_digit = len(p.eps)
    elif kind == "autoattack":
        components = p.attacks if p.version == "custom" else AA_COMPONENTS[p.version]
        repeats = 1 if p.version == "custom" else AA_REPEATS[p.version]
        grads = sum(_aa_passes(c, p.iterations) for c in components if c != "square")
        queries = p.square_queries if "square" in components else 0
        grad = "input" if grads else "none"
        # Square's forward-only queries counted as a third of a forward+backward pass each
        per_digit = len(p.eps) * repeats * (grads + (queries / 3 if grads else queries))
        bound = True  # AutoAttack passes on only the digits still robust
    else:  # cw-linf, cw-l0: outer searches over constants whose length depends on the digit
        per_digit = None
    passes = None if per_digit is None else per_digit * digits
    return Work(f"attack {name}", passes, min(batch, digits), net, grad=grad, bound=bound)


def _aa_passes(component: str, iterations: int) -> int:
    """Forward+backward passes per digit of one AutoAttack component (targeted ones: 9 targets;
    FAB takes every class's gradient: 10 backward passes per step untargeted, 2 targeted)."""
    return {
        "apgd-ce": iterations,
        "apgd-dlr": iterations,
        "apgd-t": (NUM_CLASSES - 1) * iterations,
        "fab": NUM_CLASSES * iterations,
        "fab-t": (NUM_CLASSES - 1) * 2 * iterations,
    }[component]


def job_parts(
    manifest: Manifest, condition: str, seed: int, n_train: int, device: torch.device
) -> list[Work]:
    """The training (or distillation) and attack passes of `condition`'s job for `seed` on
    `device`, `n_train` being the training digits the data split holds."""
    cond = next(c for c in manifest.conditions if c.name == condition)
    train, digits = manifest.train, manifest.data.attack_samples
    net = getattr(cond, "arch", None) or manifest.model.arch
    epochs = getattr(cond, "epochs", None) or train.epochs

    def fit(what: str, passes: float, grad: Grad = "weights", bound: bool = False) -> Work:
        return Work(what, passes, train.batch_size, net, grad, bound, train.precision == "bf16")

    parts: list[Work] = []
    attacked: list[str | None] = [None]
    if isinstance(cond, StandardCondition):
        parts.append(fit("train", n_train * epochs))
    elif isinstance(cond, MatchedCondition):
        parts.append(fit("train (until matched)", n_train * epochs, bound=True))
    elif isinstance(cond, DefensiveCondition):
        parts += [
            replace(fit("train teacher", n_train * (cond.teacher_epochs or epochs)), role=TEACHER),
            fit("soft labels", n_train, "none"),
            fit("train student", n_train * (cond.student_epochs or epochs)),
        ]
        attacked += [TEACHER] if cond.attack_teacher else []
    elif isinstance(cond, AdversarialCondition | ARDCondition):
        steps = cond.pgd_training().steps
        parts += [
            fit(f"PGD-{steps} training examples", n_train * epochs * steps, "input"),
            fit("train", n_train * epochs),
            fit("robust validation", cond.val_samples * cond.val_steps * epochs, "input", True),
        ]
        if isinstance(cond, ARDCondition):
            parts.append(fit("teacher's soft labels", n_train * epochs, "none"))
    else:
        first = cond.set_seed is None or seed == manifest.seeds_of(condition)[0]
        parts += _synthetic_parts(cond, net, n_train, distil=first)
    for role in attacked:
        of = f" ({role})" if role else ""
        for attack in manifest.attacks:
            n = attack.samples or digits
            batch = attack_batch_size(attack.batch_size, device, n, rows_per=1)
            work = attack_work(attack.kind, attack.params.model_dump(), n, batch, attack.name, net)
            if attack.source is not None and attack.source != condition:  # crafted on the source
                work = Work(f"attack {attack.name} (evaluated)", n, work.batch, net, grad="none")
            parts.append(replace(work, what=work.what + of, role=role, attack=attack.name))
        for spec in manifest.verify:
            if spec.covers(condition):
                parts.append(replace(verify_work(spec, digits, net), role=role))
    return parts


def verify_work(spec, digits: int, net: str) -> Work:
    """A verification's bound evaluations (every bisection step of every digit; the exact solver
    certifies first at the certificate's defaults) and, for the exact solver, its time limit per
    digit: an upper bound."""
    from suite.verify.kinds import CertifiedParams, ExactParams
    from suite.verifying import VERIFY_BATCH

    n = spec.samples or digits
    certify = spec.params if isinstance(spec.params, CertifiedParams) else CertifiedParams()
    grad = f"bound-{spec.norm}" if certify.method == "crown" else "bound-ibp"
    budget = n * spec.params.time_limit if isinstance(spec.params, ExactParams) else 0.0
    return Work(
        f"verify {spec.name}", certify.steps * n, min(VERIFY_BATCH, n), net, grad,  # type: ignore[arg-type]
        bound=budget > 0, verify=spec.name, budget_s=budget,
    )  # fmt: skip


def _synthetic_parts(cond, net: str, n_train: int, distil: bool) -> list[Work]:
    """Distilling (or choosing) the set on the ConvNet where `distil` (a set shared by every seed
    is made once), then training `net` on it alone."""
    images, p, method = cond.ipc * NUM_CLASSES, cond.params, cond.method
    made: list[Work] = []
    if method == "dm":  # per iteration: the synthetic set through the net and back, the real
        made = [  # digits through it forward only (their embedding needs no gradient)
            Work("DM synthetic", p.iterations * images, images, "convnet"),
            Work(
                "DM real",
                p.iterations * p.batch_real * NUM_CLASSES,
                p.batch_real,
                "convnet",
                grad="none",
                bf16=p.real_bf16,  # timed under bfloat16 autocast where DM embeds so
            ),  # fmt: skip
        ]
    elif method == "dc":  # per outer loop: real and synthetic gradients per class, then training
        outer, inner = p.loops(cond.ipc)
        per_iteration = outer * (NUM_CLASSES * (p.batch_real + cond.ipc) + inner * images)
        made = [Work("DC", p.iterations * per_iteration, p.batch_real, "convnet", "weights")]
    elif method == "herding":
        made = [Work("herding embeddings", n_train, p.batch_size, "convnet", grad="none")]
    elif method != "random":  # dd: unrolled training, second-order terms: not predicted
        made = [Work(method.upper(), None, 1, "convnet")]
    recipe = RECIPES[net]
    epochs = cond.eval.epochs or recipe.epochs
    batch = min(cond.eval.batch_size or recipe.batch_size, images)
    trained = Work("train on the set", images * epochs, batch, net, grad="weights")
    return [*(made if distil else []), trained]


RateKey = tuple[str, int, Grad, bool]  # (net, batch, grad, bf16)
Rates = dict[RateKey, float]  # → seconds per sample


def rate_key(work: Work) -> RateKey:
    return (work.net, work.batch, work.grad, work.bf16)


def measure_rates(keys: set[RateKey], device: torch.device, seconds: float = 0.5) -> Rates:
    """Seconds per sample of each bare network (fresh weights) at each batch size: forward only
    (eval mode, no autograd), or forward and backward to the input (eval mode, frozen weights: an
    attack's step) or to the weights (train mode: a training step); in bfloat16 autocast and
    channels-last where asked, as `training.fit` runs. Timed here after one warm-up batch."""
    rates: Rates = {}
    for name, batch, grad, bf16 in sorted(keys):
        torch.manual_seed(0)
        if grad.startswith("bound-"):
            rates[(name, batch, grad, bf16)] = _bound_rate(name, batch, grad[6:], seconds)
            continue
        net = build_model(name).to(device).train(grad == "weights")
        x = torch.rand(batch, 1, 28, 28, device=device)
        if bf16:
            net, x = (
                net.to(memory_format=torch.channels_last),
                x.to(memory_format=torch.channels_last),
            )
        for weight in net.parameters():
            weight.requires_grad_(grad == "weights")
        x.requires_grad_(grad == "input")
        y = torch.randint(0, NUM_CLASSES, (batch,), device=device)
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
        per_call = _seconds_per_call(_step(net, x, y, grad, bf16), seconds, sync)
        rates[(name, batch, grad, bf16)] = per_call / batch
    return rates


def _seconds_per_call(
    step: Callable[[], None], seconds: float, sync: Callable[[], None] | None = None
) -> float:
    """The mean seconds of `step` over at least `seconds` (and two calls) after one warm-up call;
    `sync` waits for queued device work before the clock is read."""
    step()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count < 2:
        step()
        count += 1
    if sync is not None:
        sync()
    return (time.perf_counter() - start) / count


def _bound_rate(name: str, batch: int, norm: str, seconds: float) -> float:
    """Seconds per digit of one CROWN certificate in `norm` (IBP's where `norm` is "ibp": its box
    is the same whatever the norm) of the bare network `name` (fresh weights, float64 on the CPU,
    as `suite.verify.kinds` runs it) on a batch of `batch` digits."""
    from suite.verify.bounds import certified, first_row_norms
    from suite.verify.network import linear_form

    ops = linear_form(build_model(name).eval().double())
    x = torch.rand(batch, 1, 28, 28, dtype=torch.float64)
    labels = torch.zeros(batch, dtype=torch.long)
    eps = torch.full((batch,), 0.01 if norm == "linf" else 0.1, dtype=torch.float64)
    method, norm = ("ibp", "linf") if norm == "ibp" else ("crown", norm)
    norms = first_row_norms(ops, norm) if norm != "linf" else None  # type: ignore[arg-type]

    def step() -> None:
        with torch.no_grad():
            certified(ops, x, labels, eps, norm, method, norms)  # type: ignore[arg-type]

    return _seconds_per_call(step, seconds) / batch


def _step(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, grad: Grad, bf16: bool
) -> Callable[[], None]:
    def run() -> None:
        with torch.autocast(x.device.type, torch.bfloat16, enabled=bf16):
            if grad == "none":
                with torch.inference_mode():
                    net(x)
                return
            loss = F.cross_entropy(net(x), y)
        net.zero_grad(set_to_none=True)
        x.grad = None
        loss.backward()

    return run


def predict(parts: list[Work], rates: Rates) -> list[float | None]:
    """Each part's seconds at the measured rates (None where its passes are not predicted)."""
    return [None if w.passes is None else w.passes * rates[rate_key(w)] + w.budget_s for w in parts]


@dataclass(frozen=True)
class JobEstimate:
    """One job's parts and their predicted seconds; `stored` marks the parts whose result the
    store already holds (a run reuses them: they count as no time), empty where nobody looked."""

    condition: str
    seed: int
    parts: list[Work]
    seconds: list[float | None]
    stored: tuple[bool, ...] = ()

    @property
    def done(self) -> tuple[bool, ...]:
        """Per part, whether the store holds it (all False where nobody looked)."""
        return self.stored or (False,) * len(self.parts)

    def _left(self) -> list[tuple[Work, float | None]]:
        return [
            (w, s) for w, s, d in zip(self.parts, self.seconds, self.done, strict=True) if not d
        ]

    @property
    def total(self) -> float:
        """The predicted seconds of the parts that are predicted and not stored."""
        return sum(s for _, s in self._left() if s is not None)

    @property
    def bounded(self) -> float:
        """The part of `total` that is the budget of loops that may stop sooner."""
        return sum(s for w, s in self._left() if w.bound and s)


def estimate(
    manifest: Manifest, jobs: list[tuple[str, int]], n_train: int, device: torch.device
) -> list[JobEstimate]:
    """Each (condition, seed) job's parts, timed at the rates measured now on `device`."""
    parts = {job: job_parts(manifest, job[0], job[1], n_train, device) for job in jobs}
    keys = {rate_key(w) for ws in parts.values() for w in ws if w.passes is not None}
    rates = measure_rates(keys, device)
    return [JobEstimate(c, s, ws, predict(ws, rates)) for (c, s), ws in parts.items()]

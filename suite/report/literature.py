"""The literature beside the answer: the benchmarks that report models trained on distilled data as
more robust, their protocol as far as their papers and code state it, and which of this report's
comparisons speaks to theirs (with this run's numbers).

The protocols below were read from the benchmarks' code (DD-RobustBench at commit 9e775088,
BEARD at 1e70313b; `manifests/synthetic.toml` reproduces them beside the suite's attacks); nothing
here is measured by this module.
"""

import math

import pandas as pd

from suite.attacks import SOFTMAX_KINDS
from suite.manifest import PROTOCOLS
from suite.report.formatting import ci, code, esc, pct
from suite.report.frames import ReportData, attack_kinds, primary_attack

BENCHMARKS = (
    "DD-RobustBench (Wu et al. 2024, arXiv:2403.13322) trains ConvNets on sets distilled by DC, "
    "DSA, DM, MTT and others and reports their robust accuracy over the whole test set under "
    "torchattacks 3.4.0 fixed-ε attacks run in pixel space (FGSM at 2 to 8/255, PGD of 5 or 10 "
    "steps of 2/255, AutoAttack at 1 to 4/255 with 10 APGD iterations, and an L∞ PGD on C&W's "
    "margin loss it calls CW), on CIFAR, TinyImageNet and ImageNet subsets; it publishes no MNIST "
    "result",
    "BEARD (Zhou et al. 2024) does the same with torchattacks 3.5.1 and finds models trained on "
    'distilled data "consistently" more robust; read from its code, its attacks run on normalised '
    "tensors without telling the library, so ε is in normalised units (its 8/255 is 0.0097 on "
    "MNIST's pixel scale) and the library's clamp to [0, 1] acts on the normalised image (on "
    "MNIST it maps every pixel into [0.131, 0.439] before the model sees it), its C&W uses a "
    "fixed c = 1 for 100 steps rather than a search over c, and its robustness score is relative "
    "to each model's own clean accuracy; it publishes no MNIST result either",
)


def literature(data: ReportData, compared: pd.DataFrame, order: list[str]) -> str:
    """One paragraph: the two benchmarks' claim and protocol, then this run's fixed-ε comparisons
    of the models trained on synthetic sets (their question) at each ε, beside the primary
    endpoint (which they do not measure); "" where no synthetic condition ran."""
    kinds = data.accuracy.drop_duplicates("condition").set_index("condition")["kind"]
    synthetic = [c for c in order if kinds.get(c) == "synthetic"]
    if not synthetic:
        return ""
    text = (
        f"{BENCHMARKS[0]}; {BENCHMARKS[1]}. Their question is this report's comparison of each "
        "model trained on a synthetic or coreset set with the model trained on the full data, "
        "at fixed ε."
    )
    fixed = compared[
        (compared["scope"] == "pooled")
        & (compared["subset"] == "all digits")
        & compared["eps"].notna()
        & compared["condition"].isin(synthetic)
    ]
    text += _protocols(data, compared, synthetic)
    text += _under_their_protocols(data, compared, synthetic)
    strongest = _strongest(fixed, attack_kinds(data.attacks))
    if strongest is None:
        return text + " No fixed-ε attack ran on those models here."
    rows = fixed[fixed["attack"] == strongest]
    items = []
    for eps, at in rows.groupby("eps", sort=True):
        cells = [
            f"{code(r.condition)} {pct(r.robust_other)} vs {pct(r.robust_base)}"
            for r in at.itertuples()
            if not math.isnan(r.robust_other)
        ]
        items.append(f"ε {eps:g}: " + ", ".join(cells))
    return (
        f"{text} Under {esc(strongest)} (robust accuracy of the model vs its full-data baseline, "
        f"secondary comparisons in the paired tables): {'; '.join(items)}. A higher robust "
        "accuracy at fixed ε with a smaller minimal distortion (the primary endpoint above) means "
        "the attack at that ε is weaker on that model, not that the model is further from its "
        "decision boundary; the same-size real-image coresets show whether distillation or the "
        "small training set is the cause."
    )


def _protocols(data: ReportData, compared: pd.DataFrame, synthetic: list[str]) -> str:
    """A sentence per attack the manifest keeps out of the best-of (another paper's protocol, such
    as BEARD's fixed-c C&W): its success on each model's clean-correct digits and its ratio for the
    synthetic-set models, beside the primary endpoint's; "" where none ran."""
    pooled = compared[(compared["scope"] == "pooled") & (compared["subset"] == "all digits")]
    out = ""
    for attack in [a for a in data.outside_ensemble if a in set(pooled["attack"])]:
        rows = data.attacks[data.attacks["attack"] == attack]
        correct = rows[rows["clean_correct"].astype(bool)]
        success = correct["success"].astype(bool).groupby(correct["condition"]).mean()
        bases = {data.baselines.get(c) for c in synthetic} - {None}
        shown = [c for c in [*sorted(bases), *synthetic] if c in success.index]
        rates = ", ".join(f"{code(c)} {pct(success[c])}" for c in shown)
        mine = pooled[(pooled["attack"] == attack) & pooled["condition"].isin(synthetic)]
        ratios = "; ".join(
            f"{code(r.condition)} {ci(r.ratio, r.ratio_lo, r.ratio_hi)} ({esc(r.verdict)})"
            for r in mine.itertuples()
        )
        out += (
            f" Under {esc(attack)}, run as that protocol and kept out of the best-of, the attack "
            f"fools {rates} of the clean-correct digits; its distortion ratios: {ratios}."
        )
    return out


def _under_their_protocols(data: ReportData, compared: pd.DataFrame, synthetic: list[str]) -> str:
    """Per reproduced protocol (`data.protocols`) and synthetic-set model: at how many of the
    protocol's (fixed-ε attack, ε) points it holds more digits than its full-data baseline, fewer,
    or as many (McNemar, unadjusted p < 0.05), beside its primary-endpoint verdict; "" where no
    attack reproduces a protocol."""
    pooled = compared[(compared["scope"] == "pooled") & (compared["subset"] == "all digits")]
    primary = pooled[pooled["attack"] == primary_attack(data, pooled["attack"].unique())]
    out = ""
    for protocol in dict.fromkeys(data.protocols.values()):
        attacks = [a for a, p in data.protocols.items() if p == protocol]
        rows = pooled[pooled["attack"].isin(attacks) & pooled["eps"].notna()]
        items = []
        for condition in [c for c in synthetic if c in set(rows["condition"])]:
            mine = rows[rows["condition"] == condition]
            clear = mine["p"] < 0.05
            more = int((clear & (mine["robust_other"] > mine["robust_base"])).sum())
            fewer = int((clear & (mine["robust_other"] < mine["robust_base"])).sum())
            head = primary[primary["condition"] == condition]
            ours = (
                "no primary-endpoint verdict"
                if head.empty
                else f"under the primary endpoint {esc(head.iloc[0].verdict)} "
                f"{ci(head.iloc[0].ratio, head.iloc[0].ratio_lo, head.iloc[0].ratio_hi)}"
            )
            items.append(
                f"{code(condition)} holds more digits than {code(mine.iloc[0].baseline)} at "
                f"{more}, fewer at {fewer}, as many at {len(mine) - more - fewer} of its "
                f"{len(mine)} (attack, ε) points ({ours})"
            )
        if items:
            names = ", ".join(esc(a) for a in attacks)
            out += (
                f" Under {PROTOCOLS.get(protocol, esc(protocol))} protocol as reproduced here "
                f"({names}; McNemar, unadjusted p < 0.05): {'; '.join(items)}."
            )
    return out


def _strongest(fixed: pd.DataFrame, kinds: dict[str, str]) -> str | None:
    """The usable fixed-budget attack (no "not used" row) that ran at the most ε values, AutoAttack
    before a softmax-gradient attack among equals."""
    usable = fixed[~fixed["verdict"].str.startswith("not used")]
    if usable.empty:
        return None
    counts = usable.groupby("attack", sort=False)["eps"].nunique()
    ranked = sorted(counts.index, key=lambda a: (-counts[a], kinds.get(a) in SOFTMAX_KINDS))
    return str(ranked[0])

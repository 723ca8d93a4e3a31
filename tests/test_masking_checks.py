"""The three matched-budget gradient-masking checks (margin, gradient-free, transfer) and the
conclusion's rule that only a condition they clear is called robust."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from suite.report.masking import CLEAR, INCOMPLETE, MASKED, three_way

N = 40  # digits per seed
SEEDS = (0, 1)


def _rows(condition: str, attack: str, kind: str, hit: np.ndarray, eps=None, linf=None, **extra):
    """Per-(seed, digit) attack rows: `hit` [seeds, N] successes; eps (fixed budget) or linf norms."""
    out = []
    for s, seed in enumerate(SEEDS):
        for i in range(N):
            out.append({
                "condition": condition, "seed": seed, "attack": attack, "attack_kind": kind,
                "sample_index": i, "target": pd.NA, "clean_correct": True,
                "success": bool(hit[s, i]),
                "eps": (eps if hit[s, i] else np.nan) if eps is not None else np.nan,
                "linf": np.nan if linf is None else float(linf[s, i]),
                **extra,
            })  # fmt: skip
    frame = pd.DataFrame(out)
    frame["target"] = frame["target"].astype("Int64")
    return frame


def _ones(k: int) -> np.ndarray:
    """Successes on the first k digits of every seed."""
    hit = np.zeros((len(SEEDS), N), bool)
    hit[:, :k] = True
    return hit


def _study(square_t100: int = 30, transfer_linf: float = 0.2, with_square: bool = True):
    """base: PGD and Square fool every digit. t100: PGD fools 5 per seed, Square `square_t100`,
    the undistilled model's transfers fool 25 per seed at L∞ `transfer_linf`. No margin attack."""
    direct = [
        _rows("base", "pgd", "pgd-linf", _ones(N), eps=0.3),
        _rows("t100", "pgd", "pgd-linf", _ones(5), eps=0.3),
    ]
    if with_square:
        direct += [
            _rows("base", "square", "autoattack", _ones(N), eps=0.3),
            _rows("t100", "square", "autoattack", _ones(square_t100), eps=0.3),
        ]
    linf = np.full((len(SEEDS), N), transfer_linf)
    transfer = pd.concat([
        _rows("base", "moved", "cw-l2", _ones(N), linf=linf, source="base"),
        _rows("t100", "moved", "cw-l2", _ones(25), linf=linf, source="base"),
    ])  # fmt: skip
    budgets = {"pgd": [0.1, 0.2, 0.3], "square": [0.3]}
    return pd.concat(direct, ignore_index=True), transfer, budgets


def test_square_and_transfer_inside_the_budget_expose_masking():
    direct, transfer, budgets = _study()
    table = three_way(direct, transfer, ["square"], budgets, ["base", "t100"], 0.05)
    rows = table.set_index("condition")
    t100 = rows.loc["t100"]
    # Square alone fools 25 digits per seed that PGD could not, PGD none that Square could not
    assert (t100["gradient_free_only"], t100["softmax_only_gradient_free"]) == (50, 0)
    assert t100["gradient_free_p"] == pytest.approx(binomtest(50, 50, 0.5, "greater").pvalue)
    assert t100["softmax_success_at_gradient_free_eps"] == pytest.approx(5 / N)
    assert t100["gradient_free_success"] == pytest.approx(30 / N)
    assert t100["transfer_only"] == 40 and t100["transfer_flagged"]
    assert t100["verdict"] == MASKED and pd.isna(t100["margin_p"])
    # the baseline: Square and PGD agree; it is the transfer's source, so the transfer check does
    # not apply and the other two clear it
    base = rows.loc["base"]
    assert base["gradient_free_only"] == 0 and not base["gradient_free_flagged"]
    assert pd.isna(base["transfer_p"]) and base["transfer_source"] == "base"
    assert base["verdict"] == CLEAR


def test_transfers_outside_the_budget_prove_nothing_and_agreement_clears():
    direct, transfer, budgets = _study(square_t100=5, transfer_linf=0.45)
    table = three_way(direct, transfer, ["square"], budgets, ["base", "t100"], 0.05)
    t100 = table.set_index("condition").loc["t100"]
    assert t100["transfer_success"] == 0 and not t100["transfer_flagged"]
    assert t100["gradient_free_only"] == 0 and not t100["gradient_free_flagged"]
    assert t100["verdict"] == CLEAR


def test_without_a_gradient_free_attack_the_verdict_is_incomplete():
    direct, transfer, budgets = _study(square_t100=5, transfer_linf=0.45, with_square=False)
    table = three_way(direct, transfer, [], budgets, ["base", "t100"], 0.05)
    t100 = table.set_index("condition").loc["t100"]
    assert pd.isna(t100["gradient_free_p"]) and t100["verdict"] == INCOMPLETE


def test_a_model_robust_inside_the_ball_is_not_called_masking_and_margin_attacks_expose_masking():
    """Issue 25: the old logit check set PGD inside ε against C&W with no bound (always 100%), so
    an adversarially trained model was flagged on every seed. Here `adv` resists PGD, AutoAttack's
    APGD-T, Square and the transfers alike inside ε 0.3 (within a digit): no masking. `t100`
    resists PGD only, and the margin attack at the same ε exposes it even without Square."""
    direct = pd.concat([
        _rows("base", "pgd", "pgd-linf", _ones(N), eps=0.3),
        _rows("base", "aa", "autoattack", _ones(N), eps=0.3),
        _rows("base", "square", "autoattack", _ones(N), eps=0.3),
        _rows("adv", "pgd", "pgd-linf", _ones(4), eps=0.3),
        _rows("adv", "aa", "autoattack", _ones(5), eps=0.3),
        _rows("adv", "square", "autoattack", _ones(4), eps=0.3),
        _rows("t100", "pgd", "pgd-linf", _ones(3), eps=0.3),
        _rows("t100", "aa", "autoattack", _ones(N), eps=0.3),
    ], ignore_index=True)  # fmt: skip
    linf = np.full((len(SEEDS), N), 0.25)
    transfer = pd.concat([
        _rows("base", "moved", "cw-l2", _ones(N), linf=linf, source="base"),
        _rows("adv", "moved", "cw-l2", _ones(2), linf=linf, source="base"),
        _rows("t100", "moved", "cw-l2", _ones(2), linf=linf, source="base"),
    ])  # fmt: skip
    budgets = {"pgd": [0.1, 0.3], "aa": [0.1, 0.3], "square": [0.3]}
    table = three_way(direct, transfer, ["square"], budgets, ["base", "adv", "t100"], 0.05)
    rows = table.set_index("condition")
    adv, t100 = rows.loc["adv"], rows.loc["t100"]
    assert adv["margin_attack"] == "aa" and adv["margin_eps"] == 0.3
    assert (adv["margin_only"], adv["softmax_only_margin"]) == (2, 0)
    assert not adv["margin_flagged"] and not adv["gradient_free_flagged"]
    assert adv["verdict"] == CLEAR
    assert t100["margin_flagged"] and t100["margin_only"] == 2 * (N - 3)
    assert pd.isna(t100["gradient_free_p"]) and t100["verdict"] == MASKED


def test_the_conclusion_calls_robust_only_what_the_checks_clear():
    from suite.report.conclusion import conclusion
    from suite.report.frames import ReportData

    accuracy = pd.DataFrame(
        [[c, k, "model", 0, 0.97, 0.97, "FINISHED", ""]
         for c, k in {"base": "standard", "t100": "defensive", "t50": "defensive"}.items()],
        columns=["condition", "kind", "role", "seed", "val_acc", "test_acc", "status", "error"],
    )  # fmt: skip
    compared = pd.DataFrame(
        [{"condition": c, "attack": "cw-l2", "scope": "pooled", "subset": "all digits",
          "test": "wilcoxon", "norm": "l2", "ratio": 1.6, "ratio_lo": 1.4, "ratio_hi": 1.8,
          "p_adj": 0.001, "verdict": "more robust", "seeds": ""} for c in ("t100", "t50")]
    )  # fmt: skip
    data = ReportData(
        experiment="x", setup={}, baselines={"t100": "base", "t50": "base"}, accuracy=accuracy,
        curves=pd.DataFrame(), attacks=pd.DataFrame(), masking=pd.DataFrame(), primary="cw-l2",
    )  # fmt: skip
    checks = pd.DataFrame({"condition": ["t100", "t50"], "verdict": [MASKED, CLEAR]})
    attacked = pd.Series({"base": 0.98, "t100": 0.97, "t50": 0.97})
    text = conclusion(data, attacked, compared, ["base", "t100", "t50"], checks)
    assert "`t100` is not called robust: attacks that do not use its gradient" in text
    assert "`t50` is robust by this evidence" in text
    unchecked = conclusion(data, attacked, compared, ["base", "t100", "t50"])
    assert (
        "`t100` and `t50` are not called robust: the transfer or gradient-free check did not run "
        "on them" in unchecked
    )


def test_a_small_significant_gap_is_a_weak_attack_not_masking():
    """PGD misses 4 digits per seed that Square finds (p 0.004) but fools 90% of them: the seed
    study's undistilled model, where PGD-20 reached 95.7% and Square 100%."""
    direct, transfer, budgets = _study()
    direct = direct[direct["condition"] == "base"]
    weak = pd.concat(
        [direct[direct["attack"] == "square"], _rows("base", "pgd", "pgd-linf", _ones(36), eps=0.3)]
    )
    table = three_way(weak, transfer, ["square"], budgets, ["base"], 0.05)
    base = table.set_index("condition").loc["base"]
    assert (base["gradient_free_only"], base["softmax_only_gradient_free"]) == (8, 0)
    assert base["gradient_free_p"] < 0.01 and not base["gradient_free_flagged"]


def test_a_robust_models_few_extra_digits_under_a_stronger_attack_are_not_masking():
    """The PGD-trained control of the defensive study, seed 0: PGD fools 4% at ε 0.3, AutoAttack
    and Square 8%: under half as many, and with 80 digits per seed significant, but a gap of a few
    points is a stronger attack on a robust model (Croce & Hein 2020), not a masked gradient; at
    a 10-point gap with the same ratio it is flagged."""
    from suite.report.masking import MASKING_GAP

    def checked(pgd: int, square: int) -> pd.Series:
        rows = pd.concat([
            _rows("robust", "pgd", "pgd-linf", _ones(pgd), eps=0.3),
            _rows("robust", "square", "autoattack", _ones(square), eps=0.3),
        ], ignore_index=True)  # fmt: skip
        moved = _rows("robust", "moved", "cw-l2", _ones(0), linf=np.full((2, N), 0.2), source="b")
        table = three_way(
            rows, moved, ["square"], {"pgd": [0.3], "square": [0.3]}, ["robust"], 0.05
        )
        return table.set_index("condition").loc["robust"]

    small = checked(pgd=2, square=5)  # 5% vs 12.5% of 40 digits, per seed
    assert small["gradient_free_only"] == 6 and small["gradient_free_p"] < 0.05
    assert small["softmax_success_at_gradient_free_eps"] < 0.5 * small["gradient_free_success"]
    assert (
        small["gradient_free_success"] - small["softmax_success_at_gradient_free_eps"] < MASKING_GAP
    )
    assert not small["gradient_free_flagged"] and small["verdict"] == CLEAR
    large = checked(pgd=4, square=12)  # 10% vs 30%: the same ratio, a 20-point gap
    assert large["gradient_free_flagged"] and large["verdict"] == MASKED


def test_a_gain_under_a_secondary_attack_is_never_a_verdict_or_a_robustness_claim():
    """Issue 25: DM's FGSM-only "gain" grouped it as more robust; only the primary endpoint speaks."""
    from suite.report.conclusion import conclusion
    from suite.report.frames import ReportData

    accuracy = pd.DataFrame(
        [[c, k, "model", 0, 0.97, 0.97, "FINISHED", ""]
         for c, k in {"base": "standard", "dm": "synthetic"}.items()],
        columns=["condition", "kind", "role", "seed", "val_acc", "test_acc", "status", "error"],
    )  # fmt: skip
    compared = pd.DataFrame(
        [{"condition": "dm", "attack": a, "scope": "pooled", "subset": "all digits",
          "test": t, "norm": "l2", "ratio": r, "ratio_lo": r, "ratio_hi": r,
          "p_adj": p, "verdict": v, "seeds": ""}
         for a, t, r, p, v in (("fgsm", "mcnemar", 2.0, float("nan"), "secondary"),
                               ("cw-l2", "wilcoxon", 0.78, 0.001, "less robust"))]
    )  # fmt: skip
    data = ReportData(
        experiment="x", setup={}, baselines={"dm": "base"}, accuracy=accuracy,
        curves=pd.DataFrame(), attacks=pd.DataFrame(), masking=pd.DataFrame(), primary="cw-l2",
    )  # fmt: skip
    checks = pd.DataFrame({"condition": ["dm"], "verdict": [CLEAR]})
    text = conclusion(data, pd.Series({"base": 0.98, "dm": 0.94}), compared, ["base", "dm"], checks)
    assert "under the primary endpoint cw-l2: less robust: `dm`." in text
    assert "secondary, without a verdict: fgsm" in text
    assert "more robust" not in text and "robust by this evidence" not in text
    # the seed report's claim is about defensive distillation: DM gets its own paragraph instead
    assert "seed report's claim" not in text
    assert "Models trained only on synthetic or coreset images" in text
    assert "`dm` -4.0 pp, ratio 0.780 [0.780, 0.780] (less robust)" in text


def _records(model, kind, params, x, y, idx, condition, attack, source=None):
    """A real attack on `model` as the report's per-digit rows (one seed)."""
    from suite.attacks import ATTACK_PARAMS, run_attack

    rec = run_attack(kind, ATTACK_PARAMS[kind](**params), model, x, y, idx, seed=0).records
    rec = rec.assign(condition=condition, seed=0, attack=attack, attack_kind=kind, target=pd.NA)
    if source is not None:
        rec["source"] = source
    rec["target"] = rec["target"].astype("Int64")
    return rec


def test_real_adversarial_training_is_not_masking_and_real_defensive_distillation_is(
    trained_tiny, mnist5k_splits
):
    """Issue 25, item 7, on real models: a tiny net adversarially trained at ε 0.1 resists PGD
    about as well as it resists AutoAttack's APGD-T and Square inside that ε (no masking); a
    T = 100 defensively distilled one resists PGD only (masking). Transfers: high-confidence C&W
    adversarials of the plain net."""
    import torch
    import torch.nn.functional as F
    from conftest import torch_threads

    from suite.adversarial_training import PGDTraining, adversarial_batch
    from suite.models import build_model
    from suite.training import Recipe, fit

    splits = mnist5k_splits
    xtr, ytr = splits.train.x, splits.train.y
    recipe = Recipe(epochs=2, batch_size=64, optimizer="adam", lr=3e-3)
    with torch_threads(1):
        torch.manual_seed(0)
        adv = build_model("tiny", dropout=0.0)
        s = PGDTraining(eps=0.1, steps=2, step_size=0.75)
        fit(adv, xtr, ytr, ytr, recipe, seed=0,
            batch_loss=lambda m, x, t, y: adversarial_batch(m, x, y, s))  # fmt: skip
        torch.manual_seed(0)
        teacher = build_model("tiny", dropout=0.0)
        fit(teacher, xtr, ytr, ytr, recipe, seed=0, temperature=100.0)
        with torch.inference_mode():
            soft = F.softmax(teacher(xtr) / 100.0, dim=1)
        torch.manual_seed(0)
        student = build_model("tiny", dropout=0.0)
        fit(student, xtr, soft, ytr, recipe, seed=0, temperature=100.0)
        idx = np.arange(0, 1000, 25)
        x, y = splits.test.x[idx], splits.test.y[idx]
        fixed = {"eps": [0.1]}
        aa = {"version": "custom", "attacks": ["apgd-ce", "apgd-t"], "iterations": 20, **fixed}
        square = {"version": "custom", "attacks": ["square"], "square_queries": 300, **fixed}
        direct, transfer = [], []
        for name, model in (("plain", trained_tiny), ("adv", adv), ("t100", student.eval())):
            direct += [
                _records(model, "pgd-linf", {"steps": 40, "step_size": 0.0625, **fixed}, x, y,
                         idx, name, "pgd"),
                _records(model, "autoattack", aa, x, y, idx, name, "aa"),
                _records(model, "autoattack", square, x, y, idx, name, "square"),
            ]  # fmt: skip
        moved = run_attack_transfer(trained_tiny, [adv, student], x, y, idx)
        transfer = pd.concat(moved, ignore_index=True)
    direct = pd.concat(direct, ignore_index=True)
    budgets = {"pgd": [0.1], "aa": [0.1], "square": [0.1]}
    table = three_way(direct, transfer, ["square"], budgets, ["plain", "adv", "t100"], 0.05)
    rows = table.set_index("condition")
    assert rows.loc["adv", "verdict"] == CLEAR, rows.loc["adv"].to_dict()
    assert rows.loc["t100", "verdict"] == MASKED, rows.loc["t100"].to_dict()
    assert rows.loc["t100", "margin_flagged"]


def run_attack_transfer(source, targets, x, y, idx):
    """C&W L2 adversarials of `source` at κ = 5 (high confidence), evaluated on each target model:
    the report's transfer rows (success and the perturbation's L∞ norm)."""
    import torch

    from suite.attacks import ATTACK_PARAMS, run_attack

    p = ATTACK_PARAMS["cw-l2"](binary_steps=4, max_iterations=100, initial_const=0.1, lr=0.1,
                               confidence=5.0)  # fmt: skip
    made = run_attack("cw-l2", p, source, x, y, idx, seed=0)
    linf = (made.x_adv - x).flatten(1).abs().amax(1).numpy()
    out = [made.records.assign(condition="plain", linf=linf)]
    for name, model in zip(("adv", "t100"), targets, strict=True):
        with torch.inference_mode():
            clean = model(x).argmax(1).numpy()
            fooled = model(made.x_adv).argmax(1).numpy() != y.numpy()
        out.append(
            pd.DataFrame({"sample_index": idx, "clean_correct": clean == y.numpy(),
                          "success": fooled & made.records["success"].to_numpy(), "linf": linf})
            .assign(condition=name)
        )  # fmt: skip
    for frame in out:
        frame["seed"], frame["attack"], frame["attack_kind"] = 0, "moved", "cw-l2"
        frame["source"], frame["target"], frame["eps"] = "plain", pd.NA, np.nan
        frame["target"] = frame["target"].astype("Int64")
    return out

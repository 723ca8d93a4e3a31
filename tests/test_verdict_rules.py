"""Issue 25's verdict rules on synthetic per-digit data: every ε of a fixed-budget attack tested,
"not testable" where both models sit at 0% or 100%, only sound attacks speak (single-step,
masked, weaker on the baseline: "not used"), PGD's strength checked by its settings and against
APGD-CE."""

import re

import numpy as np
import pandas as pd
import pytest

from suite.report import soundness, tables
from suite.report.masking import COLUMNS, MASKED

N, SEEDS = 50, (0, 1, 2, 3, 4)


def _fixed(condition, attack, kind, first_eps, component=""):
    """Fixed-budget rows: `first_eps[s, i]` is the smallest ε that fooled digit i of seed s (NaN:
    none did)."""
    out = []
    for s, seed in enumerate(SEEDS):
        for i in range(N):
            e = first_eps[s, i]
            out.append({"condition": condition, "seed": seed, "attack": attack,
                        "attack_kind": kind, "sample_index": i, "target": pd.NA,
                        "clean_correct": True, "success": not np.isnan(e), "eps": e,
                        "l2": np.nan, "linf": e,
                        "component": "" if np.isnan(e) else component})  # fmt: skip
    frame = pd.DataFrame(out)
    frame["target"] = frame["target"].astype("Int64")
    return frame


def _eps(fooled_at: dict[float, int]) -> np.ndarray:
    """Per seed: the first `k` digits fooled at ε (cumulative counts by ε), the rest never."""
    out = np.full((len(SEEDS), N), np.nan)
    for eps, k in sorted(fooled_at.items(), reverse=True):
        out[:, :k] = eps
    return out


BUDGETS = {"pgd": [0.1, 0.2, 0.3], "aa": [0.1, 0.2, 0.3], "fgsm": [0.1, 0.2, 0.3]}


def test_fixed_budget_attacks_are_compared_at_every_eps_and_floor_ties_are_not_testable():
    attacks = pd.concat([
        _fixed("base", "aa", "autoattack", _eps({0.1: 5, 0.2: 30, 0.3: N})),
        _fixed("dm", "aa", "autoattack", _eps({0.1: 20, 0.2: 45, 0.3: N})),
    ], ignore_index=True)  # fmt: skip
    table = tables.comparisons(
        attacks, {"dm": "base"}, {}, 0.05, 0, budgets={"aa": [0.1, 0.2, 0.3]}
    )
    pooled = table[(table["scope"] == "pooled") & (table["subset"] == "all digits")]
    rows = pooled.set_index("eps")
    assert list(rows.index) == [0.1, 0.2, 0.3]
    assert rows.loc[0.1, "robust_base"] == pytest.approx(0.9)
    assert rows.loc[0.1, "robust_other"] == pytest.approx(0.6)
    assert rows.loc[0.1, "diff"] == pytest.approx(-0.3)
    assert rows.loc[0.1, "diff_lo"] <= -0.3 <= rows.loc[0.1, "diff_hi"]
    assert rows.loc[0.1, "n_base_larger"] == 15 * len(SEEDS) and rows.loc[0.1, "p"] < 1e-6
    assert rows.loc[0.1, "verdict"] == "secondary"
    # at 0.3 every digit of both models is fooled: a tie at the floor is no evidence either way
    assert rows.loc[0.3, "verdict"] == "not testable at ε 0.3: both models at 0% robust accuracy"
    assert np.isnan(rows.loc[0.3, "p"])


def _masked_checks(condition: str) -> pd.DataFrame:
    return pd.DataFrame([{"condition": condition, "verdict": MASKED}]).reindex(columns=COLUMNS)


def test_single_step_masked_and_weaker_attacks_give_no_verdict():
    """An FGSM-only "gain" (issue 25: DM grouped as more robust under FGSM alone) is not used; PGD on
    a model the masking checks flag is not used there; an attack that on the baseline fools 10
    points fewer digits than AutoAttack at the same ε is not used for any model."""
    attacks = pd.concat([
        _fixed("base", "aa", "autoattack", _eps({0.1: 10, 0.2: 40, 0.3: N}), "apgd-ce"),
        _fixed("base", "pgd", "pgd-linf", _eps({0.1: 10, 0.2: 40, 0.3: N - 5})),
        _fixed("base", "fgsm", "fgsm", _eps({0.1: 10, 0.2: 40, 0.3: N})),
        _fixed("dm", "aa", "autoattack", _eps({0.1: 30, 0.3: N}), "apgd-ce"),
        _fixed("dm", "pgd", "pgd-linf", _eps({0.1: 30, 0.3: N})),
        _fixed("dm", "fgsm", "fgsm", _eps({0.1: 2, 0.2: 5})),
        _fixed("t100", "aa", "autoattack", _eps({0.3: N}), "apgd-t"),
        _fixed("t100", "pgd", "pgd-linf", _eps({0.3: 2})),
        _fixed("t100", "fgsm", "fgsm", _eps({0.3: 2})),
    ], ignore_index=True)  # fmt: skip
    baselines = {"dm": "base", "t100": "base"}
    params = {"pgd": {"eps": [0.1, 0.2, 0.3], "steps": 40, "step_size": 0.0625, "restarts": 2}}
    strength = soundness.pgd_strength(attacks, baselines, BUDGETS, params)
    unsound = soundness.unsound(attacks, baselines, BUDGETS, _masked_checks("t100"), strength)
    assert unsound[("fgsm", "dm")] == "not used: single-step"
    # PGD misses 5 of 50 digits at 0.3 that APGD-CE fools on the baseline: 90% vs 100%
    assert unsound[("pgd", "dm")] == (
        "not used: weaker than APGD-CE on the baseline (90.0% vs 100.0% at ε 0.3)"
    )
    assert unsound[("pgd", "t100")].startswith("not used: gradient masked on this model")
    assert ("aa", "dm") not in unsound and ("aa", "t100") not in unsound
    table = tables.comparisons(attacks, baselines, {}, 0.05, 0, budgets=BUDGETS, unsound=unsound)
    pooled = table[(table["scope"] == "pooled") & (table["subset"] == "all digits")]
    dm_fgsm = pooled[(pooled["condition"] == "dm") & (pooled["attack"] == "fgsm")]
    assert set(dm_fgsm["verdict"]) == {"not used: single-step"}
    assert not pooled[pooled["attack"] == "fgsm"]["p_adj"].notna().any()

    # a weaker attack of the same norm and budget: Square at 80% where AutoAttack fools 100%
    weak = pd.concat([
        attacks[attacks["attack"] == "aa"],
        _fixed("base", "square", "autoattack", _eps({0.3: 40})),
        _fixed("dm", "square", "autoattack", _eps({0.3: 45})),
    ], ignore_index=True)  # fmt: skip
    budgets = {"aa": [0.1, 0.2, 0.3], "square": [0.3]}
    found = soundness.unsound(weak, {"dm": "base"}, budgets, pd.DataFrame(columns=COLUMNS),
                              soundness.pgd_strength(weak, {"dm": "base"}, budgets, {}))  # fmt: skip
    assert found[("square", "dm")] == (
        "not used: weaker than aa on the baseline (80.0% vs 100.0% at ε 0.3)"
    )


def test_pgd_that_travels_one_eps_is_flagged_and_madrys_budget_is_not():
    assert soundness.pgd_settings_problem("pgd-linf", {"steps": 20, "step_size": 0.05}) == (
        "under-budgeted: travels 1 ε (< 2.5 ε), 20 steps (< 40), no random restart"
    )
    at_budget = {"steps": 40, "step_size": 0.0625, "restarts": 2}
    assert soundness.pgd_settings_problem("pgd-linf", at_budget) == ""
    assert soundness.pgd_settings_problem("fgsm", {}) == ""  # single-step: its own rule
    attacks = pd.concat([
        _fixed("base", "aa", "autoattack", _eps({0.1: 10, 0.3: N}), "apgd-ce"),
        _fixed("base", "pgd", "pgd-linf", _eps({0.1: 10, 0.3: N})),
        _fixed("dm", "pgd", "pgd-linf", _eps({0.1: 10, 0.3: N})),
    ], ignore_index=True)  # fmt: skip
    short = {"pgd": {"eps": [0.1, 0.3], "steps": 20, "step_size": 0.05}}
    budgets = {"pgd": [0.1, 0.3], "aa": [0.1, 0.3]}
    strength = soundness.pgd_strength(attacks, {"dm": "base"}, budgets, short)
    assert strength["flagged"].all()
    assert (strength["pgd_success"] == strength["apgd_ce_success"]).all()  # as strong, yet flagged
    unsound = soundness.unsound(attacks, {"dm": "base"}, budgets, pd.DataFrame(columns=COLUMNS),
                                strength)  # fmt: skip
    assert unsound[("pgd", "dm")].startswith("not used: under-budgeted: travels 1 ε")


def test_the_literature_paragraph_names_both_benchmarks_and_answers_them_with_this_runs_numbers():
    from suite.report.frames import ReportData
    from suite.report.literature import literature

    attacks = pd.concat([
        _fixed("base", "aa", "autoattack", _eps({0.1: 5, 0.3: N})),
        _fixed("dm", "aa", "autoattack", _eps({0.1: 20, 0.3: N})),
        _fixed("base", "pgd", "pgd-linf", _eps({0.1: 5, 0.3: N})),
        _fixed("dm", "pgd", "pgd-linf", _eps({0.1: 20, 0.3: N})),
    ], ignore_index=True)  # fmt: skip
    budgets = {"aa": [0.1, 0.3], "pgd": [0.1, 0.3]}
    compared = tables.comparisons(attacks, {"dm": "base"}, {}, 0.05, 0, budgets=budgets)
    accuracy = pd.DataFrame(
        [["base", "standard"], ["dm", "synthetic"]], columns=["condition", "kind"]
    )
    data = ReportData(
        experiment="x", setup={}, baselines={"dm": "base"}, accuracy=accuracy,
        curves=pd.DataFrame(), attacks=attacks, masking=pd.DataFrame(),
    )  # fmt: skip
    text = literature(data, compared, ["base", "dm"])
    assert "DD-RobustBench (Wu et al. 2024" in text and "BEARD (Zhou et al. 2024)" in text
    # AutoAttack before PGD among attacks at as many ε; 60% vs 90% robust at ε 0.1
    assert "Under aa (robust accuracy" in text and "ε 0.1: `dm` 60.0% vs 90.0%" in text
    no_synthetic = ReportData(
        experiment="x", setup={}, baselines={}, accuracy=accuracy.iloc[:1],
        curves=pd.DataFrame(), attacks=attacks, masking=pd.DataFrame(),
    )  # fmt: skip
    assert literature(no_synthetic, compared, ["base"]) == ""


def _minimal(condition, attack, l2):
    """Minimal-L2 rows: `l2[s, i]` per seed and digit (every digit fooled)."""
    out = [
        {"condition": condition, "seed": seed, "attack": attack, "attack_kind": "cw-l2",
         "sample_index": i, "target": pd.NA, "clean_correct": True, "success": True,
         "eps": np.nan, "l2": float(l2[s, i]), "linf": np.nan, "l0": np.nan}
        for s, seed in enumerate(SEEDS) for i in range(N)
    ]  # fmt: skip
    frame = pd.DataFrame(out)
    frame["target"] = frame["target"].astype("Int64")
    return frame


def test_a_learned_set_is_judged_against_its_same_size_real_control_too():
    """Issue 26, item 3 (the compression control): DM as far below the full-data model as 10
    random real images per class are is "less robust" against the full data and "equivalent" to
    its same-size control: training on 100 images, not distillation. A herding coreset of the
    same size is a second same-size control, named as such."""
    from suite.manifest import same_size_controls
    from suite.report.conclusion import answer
    from suite.report.frames import ReportData

    conditions = [
        {"name": "base", "kind": "standard"},
        {"name": "dm", "kind": "synthetic", "method": "dm", "ipc": 10},
        {"name": "dm1", "kind": "synthetic", "method": "dm", "ipc": 1},
        {"name": "random", "kind": "synthetic", "method": "random", "ipc": 10},
        {"name": "herding", "kind": "synthetic", "method": "herding", "ipc": 10},
    ]
    assert same_size_controls(conditions) == {"dm": "random"}  # no random set at ipc 1
    assert same_size_controls(conditions, method="herding") == {"dm": "herding"}
    rng = np.random.default_rng(0)
    base = rng.lognormal(0.5, 0.3, (len(SEEDS), N))
    small = base * 0.7 * rng.lognormal(0, 0.02, base.shape)
    attacks = pd.concat(
        [_minimal("base", "cw", base), _minimal("dm", "cw", small * rng.lognormal(0, 0.02, base.shape)),
         _minimal("random", "cw", small), _minimal("herding", "cw", small * 0.6)],
        ignore_index=True,
    )  # fmt: skip
    args = ({}, 0.05, 0)
    compared = tables.comparisons(attacks, {"dm": "base", "random": "base"}, *args, primary="cw")
    controlled = tables.comparisons(attacks, {"dm": "random"}, *args, primary="cw")
    pooled = controlled[(controlled["scope"] == "pooled") & (controlled["subset"] == "all digits")]
    assert pooled["verdict"].tolist() == ["equivalent"]
    coreset = tables.comparisons(attacks, {"dm": "herding"}, *args, primary="cw")
    accuracy = pd.DataFrame(
        [["base", "standard"], ["dm", "synthetic"], ["random", "synthetic"]],
        columns=["condition", "kind"],
    )
    data = ReportData(
        experiment="x", setup={}, baselines={"dm": "base", "random": "base"}, accuracy=accuracy,
        curves=pd.DataFrame(), attacks=attacks, masking=pd.DataFrame(), primary="cw",
        controls={"dm": "random"}, coresets={"dm": "herding"},
    )  # fmt: skip
    against = pd.concat([controlled, coreset], ignore_index=True)
    order = ["base", "dm", "random", "herding"]
    text = answer(data, compared, against, order, pd.DataFrame(columns=COLUMNS), "95%")
    assert re.search(r"small synthetic or coreset sets: less robust for `dm` 0\.(69|70)\d", text)
    assert "Against `random`, as many random real images per class on the same network" in text
    assert re.search(r"equivalent for `dm` (0\.99|1\.00)\d", text)
    assert re.search(r"Against `herding`, as many herding-selected real images .*: more robust "
                     r"for `dm` 1\.[5-8]", text)  # fmt: skip
    assert "pooled over 5 training seeds" in text and "provisional" not in text
    assert text.endswith("would find real robustness here.")  # no adversarially trained control


def test_an_attack_kept_out_of_the_ensemble_is_reported_on_its_own():
    """`ensemble = false` (another paper's protocol, e.g. BEARD's C&W at a fixed c): the attack is
    compared and shown like any other but never joins its norm's best-of, and the literature
    paragraph quotes its success and ratios; the setting changes no result's hash."""
    from tiny_manifests import tiny_manifest

    from suite.identity import config_hash
    from suite.manifest import validate_manifest
    from suite.report.frames import ReportData
    from suite.report.literature import literature

    rng = np.random.default_rng(1)
    base = rng.lognormal(0.5, 0.3, (len(SEEDS), N))
    weak = _minimal("base", "c1", base * 3)
    weak["success"] = np.arange(len(weak)) % 2 == 0  # a fixed-c C&W fails on half the digits
    attacks = pd.concat([
        _minimal("base", "cw", base), _minimal("dm", "cw", base * 0.7),
        _minimal("base", "ddn", base * 1.01), _minimal("dm", "ddn", base * 0.71),
        weak, _minimal("dm", "c1", base * 3).assign(success=False),
    ], ignore_index=True)  # fmt: skip
    best = tables.with_best_of(attacks, ["c1"])
    members = best[best["attack"] == "best-l2"]
    assert len(members) == 2 * len(SEEDS) * N and set(members["l2"]) <= set(attacks.loc[
        attacks["attack"].isin(["cw", "ddn"]), "l2"])  # fmt: skip
    compared = tables.comparisons(best, {"dm": "base"}, {}, 0.05, 0, primary="best-l2")
    accuracy = pd.DataFrame(
        [["base", "standard"], ["dm", "synthetic"]], columns=["condition", "kind"]
    )
    data = ReportData(
        experiment="x", setup={}, baselines={"dm": "base"}, accuracy=accuracy,
        curves=pd.DataFrame(), attacks=attacks, masking=pd.DataFrame(), outside_ensemble=["c1"],
    )  # fmt: skip
    text = literature(data, compared, ["base", "dm"])
    assert (
        "Under c1, run as that protocol and kept out of the best-of, the attack fools `base` 50.0%, `dm` 0.0%"
        in text
    )
    spec = validate_manifest(tiny_manifest("e", attacks=[
        {"name": "cw", "kind": "cw-l2", "params": {"binary_steps": 1}, "ensemble": False}
    ]), "m.toml").attacks[0]  # fmt: skip
    assert config_hash(spec) == config_hash(spec.model_copy(update={"ensemble": True}))


def test_under_a_reproduced_protocol_the_paragraph_counts_where_the_synthetic_model_looks_robust():
    """An attack marked `protocol = "dd-robustbench"` (their tiny-ε PGD): the synthetic-set model
    holds more digits than the full-data one at that protocol's ε while the primary endpoint finds
    it less robust; the paragraph says both, per model."""
    from suite.report.frames import ReportData
    from suite.report.literature import literature

    rng = np.random.default_rng(3)
    base_l2 = rng.lognormal(0.3, 0.2, (len(SEEDS), N))
    attacks = pd.concat([
        _minimal("base", "cw", base_l2),
        _minimal("dm", "cw", base_l2 * 0.7),
        _fixed("base", "ddrb-pgd", "pgd-linf", _eps({0.03: 30})),
        _fixed("dm", "ddrb-pgd", "pgd-linf", _eps({0.03: 10})),
    ], ignore_index=True)  # fmt: skip
    budgets = {"ddrb-pgd": [0.03]}
    compared = tables.comparisons(
        attacks, {"dm": "base"}, {}, 0.05, 0, primary="cw", budgets=budgets
    )
    accuracy = pd.DataFrame(
        [["base", "standard"], ["dm", "synthetic"]], columns=["condition", "kind"]
    )
    data = ReportData(
        experiment="x", setup={}, baselines={"dm": "base"}, accuracy=accuracy,
        curves=pd.DataFrame(), attacks=attacks, masking=pd.DataFrame(),
        protocols={"ddrb-pgd": "dd-robustbench"},
    )  # fmt: skip
    text = literature(data, compared, ["base", "dm"])
    assert "Under DD-RobustBench's protocol as reproduced here (ddrb-pgd;" in text
    assert "`dm` holds more digits than `base` at 1, fewer at 0, as many at 0 of its 1" in text
    assert "(under the primary endpoint less robust 0.7" in text


@pytest.mark.parametrize("teacher", [False, True])
def test_the_answer_names_teachers_only_where_they_were_attacked(teacher):
    from suite.report.conclusion import answer
    from suite.report.frames import ReportData

    rng = np.random.default_rng(1)
    base = rng.lognormal(0.5, 0.3, (len(SEEDS), N))
    parts = [
        _minimal("base", "cw", base),
        _minimal("t9", "cw", base * rng.lognormal(0, 0.05, base.shape)),
    ]
    baselines = {"t9": "base"}
    if teacher:
        parts.append(_minimal("t9/teacher", "cw", base * rng.lognormal(0, 0.05, base.shape)))
        baselines["t9/teacher"] = "base"
    attacks = pd.concat(parts, ignore_index=True)
    compared = tables.comparisons(attacks, baselines, {}, 0.05, 0, primary="cw")
    accuracy = pd.DataFrame(
        [["base", "standard"], ["t9", "defensive"]], columns=["condition", "kind"]
    )
    data = ReportData(
        experiment="x", setup={}, baselines=baselines, accuracy=accuracy, curves=pd.DataFrame(),
        attacks=attacks, masking=pd.DataFrame(), primary="cw",
    )  # fmt: skip
    order = ["base", "t9", *(["t9/teacher"] if teacher else [])]
    text = answer(data, compared, compared.iloc[:0], order, pd.DataFrame(columns=COLUMNS), "95%")
    label = "Defensive distillation (students deployed at T = 1, and their teachers): "
    assert (label in text) is teacher
    assert teacher or "Defensive distillation (students deployed at T = 1): " in text

"""The published headline and README blocks, and the conclusion's positive-control sentence."""

import dataclasses

import pandas as pd
import pytest
from test_render import study_data, synthetic_data

from suite.errors import SuiteError
from suite.report.publish import (
    Provenance,
    headline,
    incomplete,
    markers,
    readme_section,
    results_readme,
    splice,
)
from suite.report.render import render_report


def test_headline_is_best_of_l2_where_several_l2_attacks_ran(tmp_path):
    data = study_data()  # C&W L2 and DDN on the same digits
    attack, table = headline(render_report(data, tmp_path / "r", formats=("md",)), data)
    assert attack == "best-l2"
    rows = table.set_index("model")
    assert rows.loc["t100-e20", "baseline"] == "base-e20"
    assert rows.loc["t100-e20", "verdict"].startswith("more robust")
    assert "no verdict" in rows.loc["dm", "verdict"]


def test_headline_falls_back_to_cw_and_the_readme_leads_with_the_answer(tmp_path):
    data = synthetic_data()  # one C&W L2 attack
    output = render_report(data, tmp_path / "r", formats=("md",))
    attack, table = headline(output, data)
    assert attack == "cw-l2"
    assert list(table["model"]) == ["defensive-t50"] and "gradient masking" in table
    provenance = Provenance(
        manifest="m.toml",
        commit="abc123",
        run_seconds=1_500.0,
        runs=6,
        device="CPU",
        data_source="mnist-5k: x",
        generated="now",
        commands=("make results",),
        attack_commits={"cw-l2": ["abc123", "def456"]},
        job_seconds=2_400.0,
        predicted=(3_000.0, 600.0),
    )
    text = results_readme(attack, table, output.answer, "Conclusion.", provenance, [])
    lines = text.splitlines()
    assert lines[0] == "# Does distillation make a neural network harder to attack? (`m.toml`)"
    assert lines[2] == "## Answer" and lines[4].startswith("Does distillation make")
    # equivalence is judged on the (1 - 2 alpha) interval, not the 95% one the table shows
    assert "equivalent: the 90% interval, two one-sided tests, inside [0.9, 1.11]" in lines[4]
    assert text.index("| defensive-t50 |") < text.index("## How it was made")
    assert "![primary endpoint per model](figures/primary.png)" in text
    assert "  - `cw-l2`: `abc123`, `def456`" in text
    # wall time with a run open, the jobs' sum, and what the dry run predicted against it
    assert "compute time: 25.0 min, the time during which" in text
    assert "summed over jobs, as one process would run them: 40.0 min" in text
    assert "predicted by `suite run --dry-run`" in text and ": 50.0 min, of which 10.0 min" in text
    assert "the jobs took 0.80 × the prediction" in text
    assert "Incomplete" not in text
    assert "--allow-mixed" not in text  # nothing pooled across code changes
    pooled = dataclasses.replace(provenance, pooled=("cw-l2",))
    text = results_readme(attack, table, output.answer, "Conclusion.", pooled, [])
    assert "- pooled with `--allow-mixed`: `cw-l2`, whose code changed" in text
    assert "`python bench/reproduce_stored.py m.toml --condition C --seed S`" in text


def test_publishing_refuses_an_attack_whose_code_changed_between_its_results_commits():
    from suite.report.publish import mixed_commits

    commits = {"pgd": ["aaa", "bbb"], "cw": ["aaa", "ccc"], "ddn": ["aaa"], "fmn": ["x-dirty", "y"]}
    changed = {("pgd", "aaa", "bbb")}
    mixed = mixed_commits(commits, lambda attack, a, b: (attack, a, b) in changed)
    assert mixed == {"pgd": ["aaa", "bbb"], "fmn": ["x-dirty", "y"]}  # dirty: code unknown


def test_a_report_with_unfinished_runs_says_so_at_the_top():
    data = synthetic_data()  # defensive-t50 seed 2 was never run
    missing = incomplete(data)
    assert any("defensive-t50 seed 2" in m for m in missing)
    section = readme_section(
        "s", "cw-l2", pd.DataFrame({"model": ["x"]}), "C.", "results/s", missing
    )
    lines = section.splitlines()
    assert lines[0] == markers("s")[0] and lines[1].startswith(
        f"**Incomplete: {len(missing)} run(s) of the manifest are not finished** — rerun `make results`"
    )
    unrun = dataclasses.replace(data, setup={"seeds": [0, 1, 2]}, floors={"standard": 0.5})
    assert "standard seed 2: not run yet" in incomplete(unrun)  # seeds 0 and 1 ran
    done = dataclasses.replace(data, missing=[])
    assert incomplete(done) == [] and "Incomplete" not in readme_section(
        "s", "cw-l2", pd.DataFrame({"condition": ["x"]}), "C.", "results/s", []
    )


def test_splice_replaces_only_between_the_study_s_own_markers():
    """Each study has its own block: publishing one leaves the other's answer as it was."""
    (a_start, a_end), (b_start, b_end) = markers("a"), markers("b")
    readme = f"top\n{a_start}\nold a\n{a_end}\nmid\n{b_start}\nold b\n{b_end}\nbottom\n"
    spliced = splice(readme, f"{b_start}\nnew b\n{b_end}", "b")
    assert spliced == f"top\n{a_start}\nold a\n{a_end}\nmid\n{b_start}\nnew b\n{b_end}\nbottom\n"
    with pytest.raises(SuiteError, match="no results markers for c"):
        splice(readme, "x", "c")


def _control_study(adv_verdicts: dict[str, str]):
    """A baseline, a defensive condition and an adversarially trained control, with the pooled
    all-digit comparisons the conclusion reads."""
    import pandas as pd

    from suite.report.frames import ReportData

    conditions = {"base": "standard", "t100": "defensive", "adv": "adversarial"}
    accuracy = pd.DataFrame(
        [[c, k, "model", 0, 0.97, 0.97, "FINISHED", ""] for c, k in conditions.items()],
        columns=["condition", "kind", "role", "seed", "val_acc", "test_acc", "status", "error"],
    )
    rows = [("t100", "cw-l2", "inconclusive")] + [
        ("adv", attack, verdict) for attack, verdict in adv_verdicts.items()
    ]
    compared = pd.DataFrame(
        [
            {"condition": c, "attack": a, "scope": "pooled", "subset": "all digits",
             "test": "wilcoxon", "norm": "l2", "ratio": 1.6, "ratio_lo": 1.4, "ratio_hi": 1.8,
             "p_adj": 0.001, "verdict": v, "seeds": "", "seed_est": 0.47}
            for c, a, v in rows
        ]
    )  # fmt: skip
    data = ReportData(
        experiment="x",
        setup={},
        baselines={"t100": "base", "adv": "base"},
        accuracy=accuracy,
        curves=pd.DataFrame(),
        attacks=pd.DataFrame(),
        masking=pd.DataFrame(),
        primary="cw-l2",
    )
    attacked = pd.Series({"base": 0.98, "t100": 0.97, "adv": 0.95})
    return data, attacked, compared


def test_an_unfinished_positive_control_is_not_called_undetected():
    """A control whose runs are still going has no verdict: the conclusion says it cannot be
    judged yet, never that the instrument missed its robustness."""
    from suite.report.conclusion import conclusion

    verdicts = {"cw-l2": "no verdict: seed 1 RUNNING", "pgd": "secondary"}
    data, attacked, compared = _control_study(verdicts)
    text = conclusion(data, attacked, compared, ["base", "t100", "adv"])
    assert "positive control `adv` (adversarial training) cannot be judged yet" in text
    assert "did not detect" not in text and "detects robustness" not in text


@pytest.mark.parametrize("detected", [True, False])
def test_conclusion_names_the_positive_control_and_whether_it_was_detected(detected):
    from suite.report.conclusion import conclusion

    verdicts = {"cw-l2": "more robust" if detected else "inconclusive", "pgd": "secondary"}
    data, attacked, compared = _control_study(verdicts)
    text = conclusion(data, attacked, compared, ["base", "t100", "adv"])
    assert "positive control `adv` (adversarial training)" in text
    assert "clean-accuracy cost of -3.0 pp" in text
    assert ("instrument detects robustness" in text) is detected
    assert ("did not detect" in text) is not detected
    # the control is not a distilled condition: only t100 is judged as distillation
    assert (
        "Distilled and small-set conditions against their baselines, under the primary endpoint "
        "cw-l2: "
        "inconclusive: `t100`." in text
    )


def test_headline_masking_column_gives_the_three_way_verdict(tmp_path):
    import dataclasses

    import pandas as pd

    from suite.report.masking import COLUMNS, MASKED

    data = synthetic_data()
    output = render_report(data, tmp_path / "r", formats=("md",))
    checks = pd.DataFrame(
        [{"condition": "defensive-t50", "transfer_p": 1e-6, "transfer_flagged": True,
          "margin_p": 0.5, "margin_flagged": False, "gradient_free_p": float("nan"),
          "gradient_free_flagged": False, "verdict": MASKED}],
    ).reindex(columns=COLUMNS)  # fmt: skip
    _, table = headline(dataclasses.replace(output, masking_checks=checks), data)
    flags = table.set_index("model")["gradient masking"]
    assert flags["defensive-t50"] == "masking (margin clear; transfer flagged)"


def test_conclusion_speaks_from_the_primary_endpoint_and_names_the_secondary_attacks():
    import dataclasses

    from suite.report.conclusion import conclusion

    data, attacked, compared = _control_study({"cw-l2": "more robust"})
    data = dataclasses.replace(data, primary="best-l2")
    extra = compared.iloc[[0, 0, 0]].assign(
        attack=["best-l2", "ddn", "pgd"],
        verdict=["inconclusive", "secondary", "not testable: every digit ties"],
        test=["wilcoxon", "wilcoxon", "mcnemar"],
    )
    mine = pd.concat([compared, extra])
    mine.loc[(mine["condition"] == "t100") & (mine["attack"] == "cw-l2"), "verdict"] = "secondary"
    text = conclusion(data, attacked, mine, ["base", "t100", "adv"])
    assert (
        "under the primary endpoint best-l2, L2 ratio (Hodges–Lehmann) 1.60 [1.40, 1.80] "
        "(seed-level interval, adjusted p 0.0010): inconclusive; secondary, without a verdict: "
        "cw-l2, ddn; not testable at some ε (both models equally fooled): pgd." in text
    )
    # the control ran no primary-endpoint comparison: said so, and its cw-l2 gives no verdict
    assert "`adv` (adversarial, against `base`): 95.0% test accuracy (-3.0 pp); no primary" in text
    assert "under the primary endpoint best-l2: inconclusive: `t100`." in text


def test_compute_time_counts_overlapping_and_reopened_runs_once():
    from suite.report.collect import busy_seconds

    minute = 60_000
    spans = [
        (0, 50 * minute),  # a model reopened 40 min later to add an attack
        (5 * minute, 10 * minute),  # a run inside it
        (45 * minute, 60 * minute),  # one overlapping its end
        (90 * minute, 100 * minute),  # resumed after a 30-minute gap
    ]
    assert busy_seconds(spans) == 70 * 60
    assert busy_seconds([]) == 0


def test_a_run_reopened_days_later_counts_its_open_spans_not_the_days_between(tmp_path):
    from suite.report.collect import run_spans
    from suite.tracking import Store, StoredRun

    minute, day = 60_000, 86_400_000
    legacy = StoredRun(
        "r", "1", "FINISHED", {}, {}, {}, start_ms=0, end_ms=3 * day + minute,
        metric_ms=(10 * minute, 20 * minute, 3 * day + 30_000),  # trained; reopened for an attack
    )  # fmt: skip
    assert run_spans(legacy, []) == [(0, 20 * minute), (3 * day + 30_000, 3 * day + minute)]
    # openings recorded since: each counts as logged, the older part before them as above
    opened = [(3 * day, 60.0), (4 * day, 30.0)]
    assert run_spans(legacy, opened) == [
        (0, 20 * minute), (3 * day, 3 * day + minute), (4 * day, 4 * day + 30_000),
    ]  # fmt: skip

    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = store.create_run(store.experiment_id("e"), "c", {})
    for _ in range(2):  # trained, then reopened to add a result
        with store.active(run_id):
            pass
    history = store.metric_history(run_id, "open_seconds")
    assert len(history) == 2 and all(0 <= seconds < 5 for _, seconds in history)
    assert len(run_spans(store.get(run_id), history)) == 3  # the run's own start, then 2 openings


@pytest.mark.parametrize(("norm", "undetected"), [("linf", False), ("l2", True)])
def test_a_control_trained_in_another_norm_is_not_called_missed_by_an_l2_endpoint(norm, undetected):
    """An L∞-trained control that an L2 primary endpoint does not find more robust tests the
    instrument only in L∞, and the conclusion says so; an L2-trained one that it misses is a miss."""
    from dataclasses import replace

    from suite.report.conclusion import conclusion

    data, attacked, compared = _control_study({"cw-l2": "inconclusive", "pgd": "secondary"})
    data = replace(data, trained_in={"adv": (norm, 0.3 if norm == "linf" else 2.0)})
    text = conclusion(data, attacked, compared, ["base", "t100", "adv"])
    radius = "L∞ ball of radius 0.3" if norm == "linf" else "L2 ball of radius 2"
    assert f"positive control `adv` (adversarial training in the {radius})" in text
    assert ("did not detect" in text) is undetected
    assert ("does not test whether the instrument detects L2 robustness" in text) is not undetected


@pytest.mark.parametrize(("robust", "expected"), [(9, "within 10 points of it"),
                                                  (5, "38.4 points below it")])  # fmt: skip
def test_the_control_is_set_beside_its_methods_published_autoattack_figure(robust, expected):
    """Issue 26: the positive control's AutoAttack robust accuracy at ε 0.3 is stated beside the
    published figure of its own training method (Madry et al.'s 88.4% for PGD), and a control more
    than 10 points below it is called weaker than the method's published model."""
    from dataclasses import replace

    import pandas as pd

    from suite.report.conclusion import conclusion

    data, attacked, compared = _control_study({"cw-l2": "more robust"})
    fooled = [True] * (10 - robust) + [False] * robust
    rows = pd.DataFrame(
        {"condition": "adv", "attack": "autoattack", "attack_kind": "autoattack", "norm": "linf",
         "seed": 0, "sample_index": range(10), "clean_correct": True, "success": fooled,
         "eps": [0.3 if f else float("nan") for f in fooled]}
    )  # fmt: skip
    data = replace(
        data, setup={"dataset": "mnist"}, attacks=rows, budgets={"autoattack": [0.1, 0.3]},
        trained_by={"adv": "pgd"},
    )  # fmt: skip
    text = conclusion(data, attacked, compared, ["base", "t100", "adv"])
    assert (
        f"Under `autoattack` at L∞ ε = 0.3, `adv` keeps {robust * 10:.1f}% of the attacked digits, "
        "against 88.4% published for PGD adversarial training (Madry et al. 2018)" in text
    )
    assert expected in text
    assert "Under `autoattack`" not in conclusion(
        replace(data, trained_by={"adv": "fgsm-rs"}, setup={"dataset": "fashion-mnist"}),
        attacked, compared, ["base", "t100", "adv"],
    )  # fmt: skip

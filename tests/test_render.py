"""The report renderer on a small synthetic experiment: files, sections, figures, PDF text."""

import dataclasses
import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from pypdf import PdfReader

from suite.errors import SuiteError
from suite.report.frames import ReportData
from suite.report.paths import add_written
from suite.report.render import render_report

CONDITIONS = {"standard": "standard", "defensive-t50": "defensive"}
SEEDS = (0, 1)
N_SAMPLES = 30


def synthetic_data(masking: bool = True) -> ReportData:
    """2 conditions × 2 seeds × 1 C&W L2 attack × 30 samples; the distilled one needs ~1.5×
    larger perturbations and resists the attack on a few samples."""
    rng = np.random.default_rng(0)
    accuracy, curves, attacks = [], [], []
    base_l2 = rng.lognormal(0.3, 0.3, N_SAMPLES)
    for condition, kind in CONDITIONS.items():
        scale = 1.0 if kind == "standard" else 1.5
        for seed in SEEDS:
            roles = ("teacher", "student") if kind == "defensive" else ("model",)
            for role in roles:
                acc = 0.97 - 0.01 * (role == "student") + 0.002 * seed
                accuracy.append([condition, kind, role, seed, acc + 0.005, acc, "FINISHED"])
                for epoch in range(1, 4):
                    for metric in ("val_acc", "test_acc"):
                        value = acc - 0.1 / epoch + rng.normal(0, 0.003)
                        curves.append([condition, role, seed, epoch, metric, value])
            for i in range(N_SAMPLES):
                clean_correct = i != 7
                success = clean_correct and not (kind == "defensive" and i % 9 == 0)
                l2 = base_l2[i] * scale * rng.lognormal(0, 0.05) if success else np.nan
                attacks.append(
                    [condition, kind, seed, "cw-l2", "cw-l2", i, i % 10, -1, i % 10]
                    + [(i + 1) % 10 if success else i % 10, clean_correct, success]
                    + [(20 * l2 if success else np.nan), l2, (l2 / 8 if success else np.nan)]
                    + [1.0, 1000, np.nan]
                )
    masking_rows = [["standard", s, 0.05, 0.99, 1.0, 1.2, False] for s in SEEDS] + [
        ["defensive-t50", s, 0.9, 0.1, 0.93, 1.8, True] for s in SEEDS
    ]
    k = 4
    examples = {}
    for condition in CONDITIONS:
        clean = rng.uniform(0, 1, (k, 28, 28))
        pert = rng.normal(0, 0.05, (k, 28, 28))
        examples[f"{condition}/cw-l2"] = np.stack([clean, np.clip(clean + pert, 0, 1), pert], 1)
    return ReportData(
        experiment="synthetic",
        setup={
            "dataset": "mnist-5k",
            "train_samples": 3500,
            "model.arch": "tiny",
            "train.epochs": 3,
            "seeds": [0, 1],
            "attacks": ["cw-l2: cw-l2, steps=100"],
        },
        baselines={"defensive-t50": "standard"},
        accuracy=pd.DataFrame(
            accuracy,
            columns=["condition", "kind", "role", "seed", "val_acc", "test_acc", "status"],
        ),
        curves=pd.DataFrame(
            curves, columns=["condition", "role", "seed", "epoch", "metric", "value"]
        ),
        attacks=pd.DataFrame(
            attacks,
            columns=[
                "condition", "kind", "seed", "attack", "attack_kind", "sample_index", "label",
                "target", "clean_pred", "adv_pred", "clean_correct", "success", "l0", "l2",
                "linf", "const", "grad_evals", "eps",
            ],
        ),
        masking=pd.DataFrame(
            masking_rows if masking else [],
            columns=[
                "condition", "seed", "saturated_fraction", "softmax_success", "cw_success",
                "cw_median_l2", "flagged",
            ],
        ),
        examples=examples,
        missing=["defensive-t50 seed 2: not run"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports") / "synthetic"
    return render_report(synthetic_data(), out)


def test_markdown_has_every_section(rendered):
    text = rendered.markdown.read_text(encoding="utf-8")
    headings = re.findall(r"^##? .*$", text, re.M)
    assert headings[:2] == ["# Report: synthetic", "## Answer"]  # the answer first
    for heading in (
        "Set-up",
        "Accuracy",
        "Attack: cw-l2 (cw-l2)",
        "Robust accuracy vs ε",
        "Softmax saturation per seed",
        "Missing or failed runs",
        "Statistical method",
        "Conclusion in full",
    ):
        assert re.search(rf"^## A\d+\. {re.escape(heading)}$", text, re.M), heading
    for heading in ("### Summary", "### Distortion", "### Paired comparison with each baseline"):
        assert re.search(rf"^{re.escape(heading)}$", text, re.M), heading
    numbers = [int(h.split(".")[0][4:]) for h in headings[2:]]
    assert numbers == list(range(1, len(numbers) + 1))
    assert "defensive-t50 seed 2: not run" in text
    assert "cw-l2: cw-l2, steps=100" in text
    for figure in rendered.figures:
        assert f"]({figure.relative_to(rendered.out_dir).as_posix()})" in text


def test_verdict_and_claim_follow_the_numbers(rendered):
    summary = rendered.summaries["cw-l2"].set_index("condition")
    assert summary.loc["standard", "verdict"] == "baseline"
    assert summary.loc["defensive-t50", "baseline"] == "standard"
    # samples 0, 9, 18, 27 resist on both seeds, sample 7 is misclassified clean: 50 of 58
    assert summary.loc["defensive-t50", "success rate [95% CI]"].startswith("86.2% [")
    assert summary.loc["defensive-t50", "verdict"].startswith("more robust, I² ")
    assert summary.loc["defensive-t50", "verdict"].endswith("2 of 2 seeds on the estimate's side")
    assert "the accuracy part holds" in rendered.conclusion
    assert "the distortion part does not hold" in rendered.conclusion
    compared = pd.read_csv(rendered.out_dir / "tables" / "comparisons.csv")
    assert set(compared["scope"]) == {"pooled", "seed 0", "seed 1"}
    assert set(compared["subset"]) == {"all digits", "both correct"}
    # Holm adjusts the primary endpoint's family only (cw-l2, pooled, all digits): no other row
    # has an adjusted p or a verdict
    primary = (compared["scope"] == "pooled") & (compared["subset"] == "all digits")
    assert (compared.loc[primary, "p_adj"] >= compared.loc[primary, "p"]).all()
    assert compared.loc[~primary, "p_adj"].isna().all()
    assert set(compared.loc[~primary & (compared["scope"] == "pooled"), "verdict"]) == {"secondary"}
    # sample 7 is misclassified clean by both models: a tie among all digits, absent when both
    # must be correct
    pooled = compared[compared["scope"] == "pooled"].set_index("subset")
    assert pooled.loc["all digits", "n_pairs"] == N_SAMPLES
    assert pooled.loc["both correct", "n_pairs"] == N_SAMPLES - 1


def test_figures_are_readable_pngs(rendered):
    names = {p.name for p in rendered.figures}
    assert names == {
        "training_curves.png",
        "ecdf_cw-l2.png",
        "box_cw-l2.png",
        "examples_cw-l2.png",
        "robust_accuracy_l2.png",
        "primary.png",
    }
    for path in rendered.figures:
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and min(image.shape[:2]) > 100
        assert image.std() > 0.01, f"{path.name} is blank"


def test_pdf_contains_the_conclusion(rendered):
    reader = PdfReader(rendered.pdf)
    assert len(reader.pages) >= 1
    text = " ".join(page.extract_text() for page in reader.pages)
    flat = re.sub(r"\s+", " ", text)
    assert "Conclusion" in flat
    assert re.sub(r"\s+", " ", rendered.conclusion.replace("`", "")) in flat
    assert sum(len(page.images) for page in reader.pages) == len(rendered.figures)


def test_pdf_page_one_holds_the_answer_and_no_table_cell_breaks_an_effect(rendered):
    """Issue 25, item 9: the question, the answer and its table on page 1; an effect and its
    interval never split across lines inside a table cell (no-break spaces), cells never broken
    mid-word (a wide table shrinks instead)."""
    reader = PdfReader(rendered.pdf)
    first = reader.pages[0].extract_text()
    assert "Answer" in first and "Does distillation make a network harder to attack?" in first
    assert "primary effect" in first
    lines = [line for page in reader.pages for line in page.extract_text().splitlines()]
    for cell in rendered.primary["primary effect [95% seed-level CI]"]:
        assert any(cell in line.replace("\u00a0", " ") for line in lines), cell
    assert not any(re.search(r"\b(undistille|wilcoxo|teache)$", line) for line in lines)


def test_rerender_replaces_and_leaves_no_temp_dirs(tmp_path):
    out = tmp_path / "report"
    first = render_report(synthetic_data(masking=False), out, formats=("md",))
    text = first.markdown.read_text(encoding="utf-8")
    (out / "notes.txt").write_text("the user's")  # not the suite's: kept
    (out / "figures" / "old.png").write_bytes(b"png")  # an output of the earlier render: replaced
    add_written(out, ["figures/old.png"])
    again = render_report(synthetic_data(masking=False), out, formats=("md",))
    assert again.markdown.read_text(encoding="utf-8") == text  # bootstraps are seeded
    assert again.pdf is None and not (out / "report.pdf").exists()
    assert not (out / "figures" / "old.png").exists()
    assert (out / "notes.txt").read_text() == "the user's" and again.kept == ["notes.txt"]
    assert "notes.txt" not in again.written and "report.md" in again.written
    assert (out / "report.md").exists() and (out / "figures" / "ecdf_cw-l2.png").exists()
    assert "Softmax saturation" not in again.markdown.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_unknown_format_is_a_user_error(tmp_path):
    with pytest.raises(SuiteError, match="unknown report format 'html'"):
        render_report(synthetic_data(), tmp_path / "r", formats=("md", "html"))
    assert not any(tmp_path.iterdir())


def test_fixed_budget_is_decided_by_kind_even_when_no_epsilon_succeeded():
    from suite.report.frames import is_fixed_budget

    failed_fgsm = pd.DataFrame({"attack_kind": ["fgsm"] * 3, "eps": [np.nan] * 3})
    cw = pd.DataFrame({"attack_kind": ["cw-l2"] * 3, "eps": [np.nan] * 3})
    assert is_fixed_budget(failed_fgsm) and not is_fixed_budget(cw)


def study_data() -> ReportData:
    """Two baselines (10 and 20 epochs), a distilled condition for each, a synthetic condition
    below its accuracy floor, one FAILED seed; C&W L2 and DDN on the same 30 digits."""
    rng = np.random.default_rng(5)
    conditions = {  # name: (kind, scale of the distortions, test accuracy)
        "base-e10": ("standard", 1.0, 0.97),
        "base-e20": ("standard", 0.8, 0.98),
        "t100-e10": ("defensive", 1.0, 0.96),
        "t100-e20": ("defensive", 1.2, 0.97),
        "dm": ("synthetic", 0.5, 0.30),
    }
    base_l2 = rng.lognormal(0.3, 0.3, N_SAMPLES)
    accuracy, attacks = [], []
    for condition, (kind, scale, acc) in conditions.items():
        for seed in SEEDS:
            failed = condition == "t100-e10" and seed == 1
            status, error = ("FAILED", "clean accuracy | too low") if failed else ("FINISHED", "")
            role = "student" if kind == "defensive" else "model"
            accuracy.append([condition, kind, role, seed, acc, acc, status, error])
            for attack, factor in (("cw-l2", 1.0), ("ddn", 0.97)):
                for i in range(N_SAMPLES):
                    # ddn wins the even digits, C&W the odd ones
                    l2 = base_l2[i] * scale * (factor if i % 2 == 0 else 2 - factor)
                    attacks.append(
                        [condition, kind, seed, attack, attack, i, i % 10, -1, i % 10]
                        + [(i + 1) % 10, True, True, 20 * l2, l2, l2 / 8, 1.0, 100, np.nan]
                    )
    columns = list(synthetic_data().attacks.columns)
    return ReportData(
        experiment="study",
        setup={"dataset": "mnist-5k"},
        baselines={"t100-e10": "base-e10", "t100-e20": "base-e20", "dm": "base-e10"},
        accuracy=pd.DataFrame(
            accuracy,
            columns=["condition", "kind", "role", "seed", "val_acc", "test_acc", "status", "error"],
        ),
        curves=pd.DataFrame(columns=["condition", "role", "seed", "epoch", "metric", "value"]),
        attacks=pd.DataFrame(attacks, columns=columns),
        masking=pd.DataFrame(),
        floors={name: 0.5 for name in conditions},
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return render_report(study_data(), tmp_path_factory.mktemp("reports") / "s", formats=("md",))


def test_each_condition_is_compared_with_its_matched_baseline(study):
    compared = pd.read_csv(study.out_dir / "tables" / "comparisons.csv")
    pairs = set(zip(compared["condition"], compared["baseline"], strict=True))
    assert pairs == {("t100-e10", "base-e10"), ("t100-e20", "base-e20"), ("dm", "base-e10")}
    summary = study.summaries["cw-l2"].set_index("condition")
    assert summary.loc["t100-e20", "baseline"] == "base-e20"
    # 1.2 / 0.8 = 1.5 against its own baseline; against base-e10 it would have read 1.2
    assert summary.loc["t100-e20", "ratio, all digits [95% CI]"].startswith("1.50 [")
    assert summary.loc["t100-e20", "verdict"].startswith("secondary, I² ")  # best-l2 is primary
    primary = study.summaries["best-l2"].set_index("condition")
    assert primary.loc["t100-e20", "verdict"].startswith("more robust, I² ")
    text = study.markdown.read_text(encoding="utf-8")
    assert "- `t100-e20` against `base-e20`" in text


def test_failed_or_below_floor_conditions_get_no_verdict_and_say_why(study):
    summary = study.summaries["cw-l2"].set_index("condition")
    assert (
        summary.loc["t100-e10", "verdict"] == "no verdict: seed 1 FAILED: clean accuracy | too low"
    )
    assert summary.loc["dm", "verdict"] == (
        "no verdict: clean test accuracy 30.0% is below the floor 50%"
    )
    text = study.markdown.read_text(encoding="utf-8")
    assert re.search(r"^## A\d+\. Conditions without a verdict$", text, re.M)
    assert "- `t100-e10`: seed 1 FAILED: clean accuracy \\| too low" in text
    assert "seed 1 FAILED: clean accuracy | too low" not in text  # escaped everywhere


def test_best_of_attacks_takes_the_smallest_distortion_per_digit(study):
    text = study.markdown.read_text(encoding="utf-8")
    assert ". Attack: best-l2 (best-l2)" in text
    wins = pd.read_csv(study.out_dir / "tables" / "wins_best-l2.csv")
    mine = wins[wins["condition"] == "base-e10"].set_index("attack")
    # ddn wins the 15 even digits, C&W the 15 odd ones, on each of 2 seeds
    assert mine.loc["ddn", "wins"] == mine.loc["cw-l2", "wins"] == 30
    assert mine.loc["ddn", "share"] == pytest.approx(0.5)
    best = pd.read_csv(study.out_dir / "tables" / "distortion_best-l2.csv")
    cw = pd.read_csv(study.out_dir / "tables" / "distortion_cw-l2.csv")
    key = ["condition", "norm"]
    merged = best.merge(cw, on=key, suffixes=("_best", "_cw"))
    assert (merged["median_all_best"] < merged["median_all_cw"]).all()


def test_autoattack_linf_03_on_mnist_sits_beside_the_published_reference_points(tmp_path):
    """Robust accuracy at ε 0.3 (standard definition: every attacked row in the denominator)
    next to the AutoAttack README's MNIST points, with their source."""
    data = study_data()
    rows = data.attacks[data.attacks["attack"] == "cw-l2"].copy()
    fooled = rows["sample_index"] % 3 == 0  # a third of the digits fooled within ε 0.3
    rows = rows.assign(
        attack="aa",
        attack_kind="autoattack",
        success=fooled,
        eps=np.where(fooled, 0.3, np.nan),
        norm="linf",  # AutoAttack records name the norm of their ε
    )
    rows.loc[rows["sample_index"] == 1, "clean_correct"] = False  # misclassified: not robust
    data = dataclasses.replace(
        data, attacks=pd.concat([data.attacks, rows]), budgets={"aa": [0.1, 0.3]}
    )
    out = render_report(data, tmp_path / "r", formats=("md",))
    text = out.markdown.read_text(encoding="utf-8")
    assert "### Published reference points (L∞ ε = 0.3)" in text
    assert re.search(
        r"\| PGD adversarial training .*Madry et al.*2018.* \| 98\.5% \| 88\.4% \|", text
    )
    assert "fra31/auto-attack" in text and "not a paired comparison" in text
    table = pd.read_csv(out.out_dir / "tables" / "references_aa_0.3.csv")
    ours = table.set_index("model")["robust accuracy"]
    per_digit = [not (i % 3 == 0 or i == 1) for i in range(N_SAMPLES)]
    assert ours["this run: base-e10"] == pytest.approx(np.mean(per_digit))
    # no reference on another data set or at an ε nobody published
    other = dataclasses.replace(data, setup={"dataset": "fashion-mnist"})
    assert "Published reference" not in render_report(
        other, tmp_path / "f", formats=("md",)
    ).markdown.read_text(encoding="utf-8")


def test_training_curves_leave_out_single_point_models_so_epochs_stay_readable(
    tmp_path, monkeypatch
):
    import suite.report.figures as figures

    drawn = {}
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.update(fig=fig))
    curves = pd.DataFrame(
        [("base", "model", s, e, m, 0.9 + e / 100) for s in (0, 1) for e in range(1, 6)
         for m in ("val_acc", "test_acc")]
        + [("dm", "model", s, 1000, m, 0.93) for s in (0, 1) for m in ("val_acc", "test_acc")],
        columns=["condition", "role", "seed", "epoch", "metric", "value"],
    )  # fmt: skip
    figures.training_curves(curves, tmp_path / "c.png", ["base", "dm"])
    for ax in drawn["fig"].axes:
        assert [line.get_label() for line in ax.get_lines()] == ["base"]
        assert ax.get_xlim()[1] < 10
    one_epoch = curves[curves["condition"] == "base"].query("epoch == 1")  # all single points
    figures.training_curves(one_epoch, tmp_path / "d.png", ["base"])
    for ax in drawn["fig"].axes:
        assert [line.get_marker() for line in ax.get_lines()] == ["o"]


def test_pdf_table_names_wrap_at_their_parts_and_numbers_keep_their_sign():
    from suite.report.pdf import _BREAK_AFTER

    cell = "t100/teacher cw-l2-from-undistilled -0.21 (-5.2 pp)"
    assert _BREAK_AFTER.sub("|", cell) == "t100/|teacher cw-|l2-|from-|undistilled -0.21 (-5.2 pp)"


def test_the_primary_comparisons_are_recomputed_from_the_published_per_digit_records(study):
    """Issue 25: a reader holding only tables/per_digit_*.csv.gz recomputes every primary-endpoint
    ratio, interval, p and verdict of tables/comparisons.csv (best-of rows rebuilt from the direct
    attacks' records, not read)."""
    from suite.report import tables

    folder = study.out_dir / "tables"
    found = sorted(p.name for p in folder.glob("per_digit_*.csv.gz"))
    assert found == ["per_digit_best-l2.csv.gz", "per_digit_cw-l2.csv.gz", "per_digit_ddn.csv.gz"]
    direct = pd.concat(pd.read_csv(folder / name) for name in found if "best-" not in name)
    published = pd.read_csv(folder / "comparisons.csv")
    baselines = dict(zip(published["condition"], published["baseline"], strict=True))
    blocked = {
        c: v.removeprefix("no verdict: ")
        for c, v in zip(published["condition"], published["verdict"].fillna(""), strict=True)
        if v.startswith("no verdict: ")
    }
    again = tables.comparisons(tables.with_best_of(direct), baselines, blocked, 0.05, 0, "best-l2")
    key = ["attack", "condition", "subset", "scope"]
    primary = published[(published["attack"] == "best-l2") & (published["scope"] == "pooled")]
    merged = primary.merge(again, on=key, suffixes=("", "_again"))
    assert len(merged) == len(primary) > 0
    for column in ("ratio", "ratio_lo", "ratio_hi", "p", "p_adj", "i2", "tau"):
        np.testing.assert_allclose(merged[column], merged[f"{column}_again"], rtol=1e-9)
    assert (merged["verdict"].fillna("") == merged["verdict_again"].fillna("")).all()


def test_each_training_set_is_held_against_the_papers_number():
    """Issue 26, item 1: a synthetic set's model states its distance to the published figure for
    its method and size, with both budgets; a method the papers give no number for says so."""
    from suite.report.render import _sets_md

    summary = pd.DataFrame(
        {
            "condition": ["dm-ipc10", "dd-ipc1"],
            "test_mean": [0.963, 0.5],
            "test_sd": [0.001, np.nan],
        }
    )
    data = ReportData(
        experiment="x", setup={"dataset": "mnist"}, baselines={}, accuracy=pd.DataFrame(),
        curves=pd.DataFrame(), attacks=pd.DataFrame(), masking=pd.DataFrame(),
        synthetic_sets={
            "dm-ipc10": {"method": "dm", "ipc": 10, "iterations": 800, "arch": "cw-mnist"},
            "dd-ipc1": {"method": "dd", "ipc": 1, "iterations": 50, "arch": "tiny"},
        },
    )  # fmt: skip
    text = "\n".join(_sets_md(data, summary))
    assert "| dm-ipc10 | dm, 10 | 800 (20,000) | cw-mnist | 96.3% ± 0.1 | 97.5% | -1.2 |" in text
    assert "| dd-ipc1 | dd, 1 | 50 | tiny | 50.0% | — | — |" in text
    assert _sets_md(dataclasses.replace(data, synthetic_sets={}), summary) == []

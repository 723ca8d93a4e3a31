"""Turn a `ReportData` into report.md, report.pdf, figures/*.png and tables/*.csv.

Everything is rendered into a temporary folder beside `out_dir` and moved into place at the
end, so a report folder is either the previous report or the complete new one.
"""

import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from suite.errors import SuiteError
from suite.report import figures, stats, tables
from suite.report.conclusion import conclusion as write_conclusion
from suite.report.formatting import ci, esc, md_table, num, pct, pvalue
from suite.report.frames import NORM_LABELS, NORMS, ReportData, attack_norm, is_fixed_budget
from suite.report.pdf import markdown_to_pdf

FORMATS = ("md", "pdf")


@dataclass
class ReportOutput:
    """Where the report went, and the per-attack summary tables (formatted as in the report)."""

    out_dir: Path
    markdown: Path | None
    pdf: Path | None
    figures: list[Path]
    tables: list[Path]
    summaries: dict[str, pd.DataFrame]
    conclusion: str


def render_report(
    data: ReportData,
    out_dir: Path,
    formats: tuple[str, ...] = FORMATS,
    alpha: float = 0.05,
    seed: int = 0,
) -> ReportOutput:
    """Write the report for `data` into `out_dir` (replacing what was there) and return paths.

    `seed` fixes every bootstrap, so the same data give the same report.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise SuiteError(f"unknown report format {unknown[0]!r}: use one or more of md, pdf")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        written = _render(data, work, formats, alpha, seed)
        _replace_dir(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ReportOutput(
        out_dir=out_dir,
        markdown=out_dir / "report.md" if "md" in formats else None,
        pdf=out_dir / "report.pdf" if "pdf" in formats else None,
        figures=[out_dir / p.relative_to(work) for p in written.figures],
        tables=[out_dir / p.relative_to(work) for p in written.tables],
        summaries=written.summaries,
        conclusion=written.conclusion,
    )


def _replace_dir(new: Path, target: Path) -> None:
    if not target.exists():
        new.rename(target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    old.rmdir()
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old)


@dataclass
class _Files:
    """The figures and tables written so far under `root`, and the Markdown that shows them."""

    root: Path
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)

    def png(self, name: str) -> Path:
        return self.root / "figures" / f"{name}.png"

    def figure(self, path: Path, caption: str) -> list[str]:
        self.figures.append(path)
        link = path.relative_to(self.root).as_posix()
        return [f"![{caption}]({link})", "", f"*{caption}*", ""]

    def table(self, frame: pd.DataFrame, name: str) -> None:
        path = self.root / "tables" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        self.tables.append(path)


def _render(
    data: ReportData, work: Path, formats: tuple[str, ...], alpha: float, seed: int
) -> ReportOutput:
    files = _Files(work)
    order = tables.condition_order(data)
    acc = tables.accuracy_table(data.accuracy, order)
    files.table(acc, "accuracy")
    compared = tables.comparisons(data, order, alpha, seed)
    files.table(compared, "comparisons")
    attacked_acc = tables.attacked_accuracy(data.accuracy)

    md = [f"# Report: {data.experiment}", "", "## Set-up", "", *_setup(data.setup)]
    md += [f"Baseline condition: `{data.baseline}`. Significance level α = {alpha:g}.", ""]
    md += ["## Accuracy", "", *_accuracy_md(acc)]
    if not data.curves.empty:
        md += files.figure(
            figures.training_curves(data.curves, files.png("training_curves"), order),
            "Training curves: validation and test accuracy per epoch, mean over seeds "
            "with a ±1 sd band (dashed: teachers).",
        )

    summaries: dict[str, pd.DataFrame] = {}
    pooled = stats.pool_over_seeds(data.attacks)
    for attack, kind in tables.attack_kinds(data.attacks).items():
        rows = data.attacks[data.attacks["attack"] == attack]
        slug = _slug(attack)
        distortions = tables.distortion_table(
            pooled[pooled["attack"] == attack], order, alpha, seed
        )
        summary = tables.summary_table(
            attack,
            tables.success_table(rows, order, alpha),
            distortions,
            compared,
            attacked_acc,
            attack_norm(kind),
            data.baseline,
        )
        files.table(summary, f"summary_{slug}")
        files.table(distortions, f"distortion_{slug}")
        summaries[attack] = _summary_display(summary, is_fixed_budget(rows), _level(alpha))
        md += _attack_section(
            data, attack, kind, summaries[attack], distortions, compared, files, _level(alpha)
        )

    attacked_norms = set(data.attacks["attack_kind"].map(attack_norm))
    norms = [n for n in NORMS if n in attacked_norms]
    if norms:
        md += ["## Robust accuracy vs ε", ""]
    for norm in norms:
        md += files.figure(
            figures.robust_accuracy_curves(
                data.attacks, norm, files.png(f"robust_accuracy_{norm}"), order
            ),
            f"Fraction of clean-correct (seed, sample) rows whose minimal {NORM_LABELS[norm]} "
            "distortion exceeds ε (markers: fixed-budget attacks at their ε).",
        )

    if not data.masking.empty:
        files.table(data.masking, "masking")
        md += ["## Gradient masking", "", *_masking_md(data.masking), ""]
        md += files.figure(
            figures.masking_diagnostic(data.masking, files.png("masking"), order),
            "Softmax-attack vs C&W success per (condition, seed). Far below the diagonal, a "
            "softmax-based attack fails where the logit attack succeeds: masked gradients, "
            "not robustness.",
        )

    md += ["## Missing or failed runs", "", *_missing_md(data), ""]
    md += ["## Statistical method", "", *_method_md(alpha), ""]
    conclusion = write_conclusion(data, attacked_acc, compared, order)
    md += ["## Conclusion", "", conclusion, ""]

    text = "\n".join(md)
    if "md" in formats:
        (work / "report.md").write_text(text, encoding="utf-8")
    if "pdf" in formats:
        markdown_to_pdf(text, work, work / "report.pdf", title=f"Report: {data.experiment}")
    return ReportOutput(work, None, None, files.figures, files.tables, summaries, conclusion)


def _attack_section(
    data: ReportData,
    attack: str,
    kind: str,
    summary: pd.DataFrame,
    distortions: pd.DataFrame,
    compared: pd.DataFrame,
    files: _Files,
    level: str,
) -> list[str]:
    """Summary, distortions, paired comparisons and figures of one attack."""
    rows = data.attacks[data.attacks["attack"] == attack]
    norm, fixed, slug = attack_norm(kind), is_fixed_budget(rows), _slug(attack)
    order = tables.condition_order(data)
    md = [f"## Attack: {attack} ({kind})", "", _attack_intro(norm, fixed, rows, level), ""]
    md += ["### Summary", "", *md_table(summary), ""]
    md += ["### Distortion over successes", "", *_distortion_md(distortions, level), ""]
    md += [f"### Paired comparison with `{data.baseline}`", ""]
    md += _comparison_md(compared[compared["attack"] == attack], level)
    md += ["### Figures", ""]
    md += files.figure(
        figures.distortion_ecdf(data.attacks, attack, files.png(f"ecdf_{slug}"), order),
        f"{attack}: fraction of clean-correct (seed, sample) rows fooled within a distortion "
        "(failures stay in the denominator, so curves level off at the success rate).",
    )
    if not fixed:
        md += files.figure(
            figures.distortion_boxplot(data.attacks, attack, norm, files.png(f"box_{slug}"), order),
            f"{attack}: {NORM_LABELS[norm]} distortion per sample (median over seeds), "
            "successes only.",
        )
    if any(key.endswith(f"/{attack}") for key in data.examples):
        md += files.figure(
            figures.examples_grid(data.examples, attack, files.png(f"examples_{slug}"), order),
            f"{attack}: clean images, then per condition the adversarial image and the "
            "perturbation (red +, blue −, one colour scale for all).",
        )
    return md


def _level(alpha: float) -> str:
    return f"{100 * (1 - alpha):g}%"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "attack"


def _setup(setup: dict[str, object]) -> list[str]:
    def inline(v: object) -> bool:
        return not isinstance(v, list | tuple) or all(len(str(x)) <= 12 for x in v)

    shown = {
        k: (", ".join(map(str, v)) if isinstance(v, list | tuple) else v)
        for k, v in setup.items()
        if inline(v)
    }
    md = md_table(pd.DataFrame({"setting": list(shown), "value": list(shown.values())}))
    for key, values in setup.items():
        if not inline(values):
            md += [f"**{key}**", "", *[f"- {esc(v)}" for v in values], ""]
    return md


def _accuracy_md(acc: pd.DataFrame) -> list[str]:
    if acc.empty:
        return ["No accuracy was recorded.", ""]

    def mean_sd(mean: float, sd: float) -> str:
        if math.isnan(mean):
            return "—"
        return pct(mean) if math.isnan(sd) else f"{pct(mean)} ± {100 * sd:.1f}"

    shown = pd.DataFrame(
        {
            "condition": acc["condition"],
            "kind": acc["kind"],
            "role": acc["role"],
            "seeds finished": [
                f"{a}/{b}" for a, b in zip(acc["seeds_finished"], acc["seeds_total"], strict=True)
            ],
            "val accuracy (mean ± sd)": [
                mean_sd(m, s) for m, s in zip(acc["val_mean"], acc["val_sd"], strict=True)
            ],
            "test accuracy (mean ± sd)": [
                mean_sd(m, s) for m, s in zip(acc["test_mean"], acc["test_sd"], strict=True)
            ],
        }
    )
    return [*md_table(shown), "sd over seeds, in percentage points.", ""]


def _attack_intro(norm: str, fixed: bool, rows: pd.DataFrame, level: str) -> str:
    seeds = rows["seed"].nunique()
    samples = rows["sample_index"].nunique()
    if fixed:
        eps = ", ".join(num(e) for e in sorted(rows["eps"].dropna().unique()))
        what = f"Fixed-budget attack in {NORM_LABELS[norm]} at ε = {eps}"
    else:
        what = f"Minimal-perturbation attack in {NORM_LABELS[norm]}"
    return (
        f"{what}, on {samples} test samples × {seeds} seeds. Success rate: over clean-correct "
        f"(seed, sample) rows, {level} Wilson CI. Distortions: per sample the median over seeds, "
        f"then across samples over successes, {level} percentile-bootstrap CI."
    )


def _summary_display(summary: pd.DataFrame, fixed: bool, level: str) -> pd.DataFrame:
    if summary.empty:
        return summary
    norm = NORM_LABELS[summary["norm"].iloc[0]]
    ratio_name = "robust-accuracy ratio to baseline" if fixed else "ratio to baseline"
    return pd.DataFrame(
        {
            "condition": summary["condition"],
            "test accuracy": summary["test_acc"].map(pct),
            f"success rate [{level} CI]": [
                f"{pct(r)} [{100 * lo:.1f}, {100 * hi:.1f}]"
                for r, lo, hi in summary[["success_rate", "success_lo", "success_hi"]].itertuples(
                    False
                )
            ],
            f"median {norm} [{level} CI]": [
                ci(*v) for v in summary[["median", "median_lo", "median_hi"]].itertuples(False)
            ],
            f"{ratio_name} [{level} CI]": [
                ci(*v) for v in summary[["median_ratio", "ratio_lo", "ratio_hi"]].itertuples(False)
            ],
            "adjusted p": summary["p_adj"].map(pvalue),
            "verdict": summary["verdict"],
        }
    )


def _distortion_md(distortions: pd.DataFrame, level: str) -> list[str]:
    if distortions.empty:
        return ["No successful attack."]
    shown = pd.DataFrame(
        {
            "condition": distortions["condition"],
            "norm": distortions["norm"].map(NORM_LABELS),
            "n": distortions["n"],
            f"median [{level} CI]": [
                ci(*v) for v in distortions[["median", "median_lo", "median_hi"]].itertuples(False)
            ],
            f"mean [{level} CI]": [
                ci(*v) for v in distortions[["mean", "mean_lo", "mean_hi"]].itertuples(False)
            ],
        }
    )
    return md_table(shown)


def _comparison_md(compared: pd.DataFrame, level: str) -> list[str]:
    if compared.empty:
        return ["No condition shares attacked samples with the baseline.", ""]
    key = {"condition": compared["condition"], "scope": compared["scope"]}
    verdicts = pd.DataFrame(
        key
        | {
            "pairs (both fooled / only base failed / only other failed)": [
                f"{n} ({a} / {b} / {c})"
                for n, a, b, c in compared[
                    ["n_pairs", "n_both_success", "n_only_base_failed", "n_only_other_failed"]
                ].itertuples(False)
            ],
            f"ratio [{level} CI]": [
                ci(*v) for v in compared[["median_ratio", "ratio_lo", "ratio_hi"]].itertuples(False)
            ],
            "test": compared["test"],
            "adjusted p": compared["p_adj"].map(pvalue),
            "verdict": compared["verdict"],
        }
    )
    details = pd.DataFrame(
        key
        | {
            "Wilcoxon W": compared["wilcoxon_statistic"].map(
                lambda w: "—" if math.isnan(w) else f"{w:g}"
            ),
            "Wilcoxon p": compared["wilcoxon_p"].map(pvalue),
            "rank-biserial r": compared["rank_biserial"].map(
                lambda r: "—" if math.isnan(r) else f"{r:+.2f}"
            ),
            "sign test (other larger / base larger)": [
                f"{a} / {b}"
                for a, b in zip(compared["n_other_larger"], compared["n_base_larger"], strict=True)
            ],
            "sign p": compared["sign_test_p"].map(pvalue),
        }
    )
    return [
        *md_table(verdicts),
        "Ratio: median over samples of other/base distortion (fixed-budget attacks: robust "
        "accuracy other/base); > 1 means the condition needs larger perturbations. Adjusted p: "
        "Holm over all pooled comparisons in this report (per-seed rows: Holm over all "
        "per-seed comparisons). The tests behind it (unadjusted):",
        "",
        *md_table(details),
        "Wilcoxon signed-rank on pairs where both attacks succeeded, with its matched-pairs "
        "rank-biserial r (> 0: the condition needs larger perturbations); sign test on every "
        "pair, a failed attack counting as an infinite distortion (fixed-budget attacks: the "
        "McNemar counts of pairs only one model resisted).",
        "",
    ]


def _masking_md(masking: pd.DataFrame) -> list[str]:
    shown = pd.DataFrame(
        {
            "condition": masking["condition"],
            "seed": masking["seed"],
            "saturated softmax": masking["saturated_fraction"].map(pct),
            "softmax-attack success": masking["softmax_success"].map(pct),
            "C&W success": masking["cw_success"].map(pct),
            "C&W median L2": masking["cw_median_l2"].map(num),
            "flagged": np.where(masking["flagged"].astype(bool), "yes", "no"),
        }
    )
    flagged = sorted(set(masking.loc[masking["flagged"].astype(bool), "condition"]))
    note = (
        f"Flagged for gradient masking: {', '.join(f'`{c}`' for c in flagged)}."
        if flagged
        else "No condition is flagged for gradient masking."
    )
    return [*md_table(shown), note]


def _missing_md(data: ReportData) -> list[str]:
    failed = data.accuracy[data.accuracy["status"] != "FINISHED"]
    notes = [*data.missing]
    notes += [
        f"{r.condition} ({r.role}), seed {r.seed}: run status {r.status}"
        for r in failed.itertuples()
    ]
    if not notes:
        return ["None: every condition and seed finished."]
    return [f"- {esc(n)}" for n in notes]


def _method_md(alpha: float) -> list[str]:
    return [
        "- Samples are paired by `sample_index`: every condition is attacked on the same test "
        "images. Samples misclassified clean by either model are left out of a pair.",
        "- Pooled comparisons use one value per image (the median over seeds), so seeds are "
        "not counted as extra samples; per-seed comparisons follow.",
        "- A failed attack counts as an infinite distortion. The sign test uses every pair "
        "(failure above any distortion, ties dropped); the Wilcoxon signed-rank test uses the "
        "pairs where both attacks succeeded. The p used for the verdict is the Wilcoxon p when "
        "no pair has exactly one failure, else the sign-test p. Fixed-budget attacks: exact "
        "McNemar test on success.",
        "- p-values are Holm-adjusted across all pooled comparisons (every attack and "
        "condition); per-seed comparisons form a second Holm family, as replications on the "
        f"same images. A verdict needs adjusted p < {alpha:g}; its direction is the ratio.",
        "- Confidence intervals: Wilson for rates, percentile bootstrap (2,000 resamples, "
        "fixed seed) for medians, means and ratios.",
    ]

"""Turn a `ReportData` into report.md, report.pdf, figures/*.png and tables/*.csv.

Everything is rendered into a temporary folder beside `out_dir` and moved into place at the
end, so a report folder is either the previous report or the complete new one.
"""

import dataclasses
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from suite.distill.published import PAPER_ITERATIONS, PUBLISHED
from suite.errors import SuiteError
from suite.report import brackets, figures, masking, references, soundness, tables
from suite.report.conclusion import answer as write_answer
from suite.report.conclusion import conclusion as write_conclusion
from suite.report.formatting import NORM_LABELS, ci, code, esc, md_table, num, pct, pvalue
from suite.report.frames import (
    NORMS,
    ReportData,
    attack_kinds,
    attack_norm,
    best_of_norm,
    is_fixed_budget,
    primary_attack,
    row_norms,
)
from suite.report.literature import literature
from suite.report.paths import check_replaceable, mark, swap_in
from suite.report.pdf import markdown_to_pdf
from suite.schema import Status

FORMATS = ("md", "pdf")
EXAMPLE_MODELS_PER_FIGURE = 4  # an example grid's rows stay large enough to read on a page
PER_DIGIT_COLUMNS = [
    "condition", "kind", "seed", "attack", "attack_kind", "sample_index", "target", "label",
    "clean_pred", "clean_correct", "success", "l0", "l2", "linf", "eps",
]  # fmt: skip
"""The per-(seed, digit) records behind every comparison, published as
`tables/per_digit_<attack>.csv.gz` so that a reader can recompute every test and interval
(`condition` is `name/teacher` for an attacked teacher)."""


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
    masking_checks: pd.DataFrame = field(default_factory=pd.DataFrame)
    answer: str = ""  # the report's answer, its first paragraph
    primary: pd.DataFrame = field(default_factory=pd.DataFrame)  # the answer's table, as shown
    written: list[str] = field(default_factory=list)  # relative paths of every file rendered
    kept: list[str] = field(default_factory=list)  # files already there that the suite kept


def render_report(
    data: ReportData,
    out_dir: Path,
    formats: tuple[str, ...] = FORMATS,
    alpha: float = 0.05,
    seed: int = 0,
) -> ReportOutput:
    """Write the report for `data` into `out_dir` and return paths. An earlier report there is
    replaced file by file; files the suite did not write are kept (`paths.swap_in`), and a folder
    that holds no report marker is refused (`paths.check_replaceable`).

    `seed` fixes every bootstrap, so the same data give the same report.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise SuiteError(f"unknown report format {unknown[0]!r}: use one or more of md, pdf")
    out_dir = Path(out_dir)
    check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        written = _render(data, work, formats, alpha, seed)
        files = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
        mark(work, files)
        kept = swap_in(work, out_dir)
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
        masking_checks=written.masking_checks,
        answer=written.answer,
        primary=written.primary,
        written=files,
        kept=kept,
    )


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
        return [f"![{esc(caption)}]({link})", "", f"*{esc(caption)}*", ""]

    def table(self, frame: pd.DataFrame, name: str, compressed: bool = False) -> None:
        path = self.root / "tables" / (f"{name}.csv.gz" if compressed else f"{name}.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        # gzip stamps the time into its header unless told not to: the same data, the same bytes
        frame.to_csv(
            path, index=False, compression={"method": "gzip", "mtime": 0} if compressed else None
        )
        self.tables.append(path)


@dataclass(frozen=True)
class _Frames:
    """What more than one part of the report reads, computed once from the `ReportData`."""

    data: ReportData  # its `attacks`: the direct attacks only
    transfer: pd.DataFrame  # the transfer attacks' rows (`tables.split_transfer`)
    attacks: pd.DataFrame  # the direct attacks and their best-of attacks (`tables.with_best_of`)
    order: list[str]
    accuracy: pd.DataFrame  # `tables.accuracy_table`
    attacked_acc: pd.Series  # `tables.attacked_accuracy`
    blocked: dict[str, str]  # `tables.no_verdict`
    primary: str | None  # the primary endpoint, the one attack whose comparisons give verdicts
    compared: pd.DataFrame  # `tables.comparisons`
    controlled: pd.DataFrame  # the primary endpoint against each learned set's same-size control
    coreset: pd.DataFrame  # the primary endpoint against each learned set's herding coreset
    matched: pd.DataFrame  # the primary endpoint against each accuracy-matched control
    exact: pd.DataFrame  # every condition against its baseline on exact minimal distortions
    checks: pd.DataFrame  # `masking.three_way`
    strength: pd.DataFrame  # `soundness.pgd_strength`
    unsound: dict[tuple[str, str], str]  # `soundness.unsound`: (attack, model) → why it is not used
    alpha: float
    seed: int
    level: str  # the confidence level the intervals are shown with: '95%'


def _frames(data: ReportData, alpha: float, seed: int) -> _Frames:
    """Every frame the sections share, each computed once (the bootstraps are seeded by `seed`)."""
    direct, transfer = tables.split_transfer(data.attacks)
    data = dataclasses.replace(data, attacks=direct)
    order = tables.condition_order(data)
    attacked_acc = tables.attacked_accuracy(data.accuracy)
    blocked = tables.no_verdict(data, attacked_acc)
    attacks = tables.with_best_of(direct, data.outside_ensemble)
    primary = primary_attack(data, attack_kinds(attacks))
    checks = masking.three_way(direct, transfer, data.gradient_free, data.budgets, order, alpha)
    strength = soundness.pgd_strength(attacks, data.baselines, data.budgets, data.attack_params)
    unsound = soundness.unsound(attacks, data.baselines, data.budgets, checks, strength)

    def against(controls: dict[str, str]) -> pd.DataFrame:
        """The primary endpoint against each synthetic model's control, a Holm family of its own."""
        mine = attacks[attacks["attack"] == primary]
        return tables.comparisons(
            mine, controls, blocked, alpha, seed, primary=primary, margin=data.equivalence_margin
        )

    return _Frames(
        data=data,
        transfer=transfer,
        attacks=attacks,
        order=order,
        accuracy=tables.accuracy_table(data.accuracy, order, _asked_seeds(data, order)),
        attacked_acc=attacked_acc,
        blocked=blocked,
        primary=primary,
        compared=tables.comparisons(
            attacks,
            data.baselines,
            blocked,
            alpha,
            seed,
            primary=primary,
            margin=data.equivalence_margin,
            budgets=data.budgets,
            unsound=unsound,
        ),
        controlled=against(data.controls),
        coreset=against(data.coresets),
        matched=against(data.matched),
        exact=tables.comparisons(
            brackets.exact_records(data.verified),
            data.baselines,
            blocked,
            alpha,
            seed,
            margin=data.equivalence_margin,
        ),  # fmt: skip
        checks=checks,
        strength=strength,
        unsound=unsound,
        alpha=alpha,
        seed=seed,
        level=f"{100 * (1 - alpha):g}%",
    )


def _render(
    data: ReportData, work: Path, formats: tuple[str, ...], alpha: float, seed: int
) -> ReportOutput:
    """Write every file of the report into `work`, section by section; paths are under `work`."""
    files = _Files(work)
    f = _frames(data, alpha, seed)
    files.table(f.accuracy, "accuracy")
    files.table(f.compared, "comparisons")
    files.table(f.controlled, "comparisons_same_size_control")
    if not f.coreset.empty:
        files.table(f.coreset, "comparisons_herding_coreset")
    files.table(f.matched, "comparisons_accuracy_matched")
    primary_rows = tables.primary_table(
        pd.concat([f.compared, f.controlled, f.coreset, f.matched], ignore_index=True),
        f.primary,
        f.attacked_acc,
        f.attacks,
    )
    files.table(primary_rows, "primary")
    against = pd.concat([f.controlled, f.coreset, f.matched], ignore_index=True)
    answer = write_answer(f.data, f.compared, against, f.order, f.checks, f.level)
    bounded = brackets.brackets(data.verified, f.attacks, f.order)
    bad = brackets.violations(data.verified, f.attacks)
    if not bad.empty:
        answer += (
            f" **Soundness: {len(bad)} attack record{'' if len(bad) == 1 else 's'} report an "
            "adversarial inside a certified radius, which cannot exist: a bug in an attack, the "
            "bounds or the records (see the bounds section); no result here is trustworthy until "
            "it is found.**"
        )
    answer += _bounds_sentence(f.exact, bounded, bad)
    md = [f"# Report: {esc(data.experiment)}", "", "## Answer", "", answer, ""]
    md += _primary_md(f, primary_rows, files)
    body = _intro_md(f, files)
    summaries: dict[str, pd.DataFrame] = {}
    for name, kind in attack_kinds(f.attacks).items():
        section, summaries[name] = _attack_section(f, _attack(f, name, kind), files)
        body += section
    body += _robust_accuracy_md(f, files)
    body += _transfer_md(f, files)
    if not f.controlled.empty:
        body += ["## Against the same-size real control", "", _CONTROL_NOTE, ""]
        body += _comparison_md(f.controlled, f.level)
    if not f.coreset.empty:
        body += ["## Against the same-size herding coreset", "", _CORESET_NOTE, ""]
        body += _comparison_md(f.coreset, f.level)
    if not f.matched.empty:
        body += ["## Against the accuracy-matched control", "", _MATCHED_NOTE, ""]
        body += _comparison_md(f.matched, f.level)
    body += _masking_sections(f, files)
    if not bounded.empty:
        files.table(bounded, "brackets")
        files.table(data.verified, "per_digit_verified", compressed=True)  # behind the brackets
        body += ["## Bounds on the true minimal distortion", "", _BRACKETS_NOTE, ""]
        body += [*_brackets_md(bounded), *_violations_md(bad)]
        for norm in dict.fromkeys(data.verified["norm"]):
            body += files.figure(
                figures.distortion_brackets(
                    data.verified, brackets.best_found(f.attacks, norm), norm,
                    files.png(f"brackets_{norm}"), f.order,
                ),
                f"Each digit's bracket at {NORM_LABELS[norm]}: the attacks' best above, the "
                "certified radius below, the exact minimum where the solver closed it (dots) and "
                "the bracket it left open (grey).",
            )  # fmt: skip
    if not f.exact.empty:
        files.table(f.exact, "comparisons_exact")
        body += ["## The comparison on exact minimal distortions", "", _EXACT_NOTE, ""]
        body += _comparison_md(f.exact, f.level)
    body += ["## Missing or failed runs", "", *_missing_md(f.data), ""]
    if f.blocked:
        body += ["## Conditions without a verdict", ""]
        body += [f"- {code(c)}: {esc(reason)}" for c, reason in f.blocked.items()] + [""]
    body += [
        "## Statistical method",
        "",
        *_method_md(alpha, f.primary, f.data.equivalence_margin),
        "",
    ]
    related = literature(f.data, f.compared, f.order)
    if related:
        body += ["## The literature", "", related, ""]
    conclusion = write_conclusion(f.data, f.attacked_acc, f.compared, f.order, f.checks)
    body += ["## Conclusion in full", "", conclusion, ""]
    md += _appendices(body)

    text = "\n".join(md)
    if "md" in formats:
        (work / "report.md").write_text(text, encoding="utf-8")
    if "pdf" in formats:
        markdown_to_pdf(text, work, work / "report.pdf", title=f"Report: {data.experiment}")
    return ReportOutput(
        out_dir=work,
        markdown=None,
        pdf=None,
        figures=files.figures,
        tables=files.tables,
        summaries=summaries,
        conclusion=conclusion,
        masking_checks=f.checks,
        answer=answer,
        primary=_primary_display(primary_rows, f.level),
    )


def _appendices(md: list[str]) -> list[str]:
    """Every section after the answer, numbered as appendix sections A1, A2, …"""
    out, n = [], 0
    for line in md:
        if line.startswith("## "):
            n += 1
            line = f"## A{n}. {line[3:]}"
        out.append(line)
    return out


def _primary_display(rows: pd.DataFrame, level: str) -> pd.DataFrame:
    """The answer's table as shown: one row per compared model."""
    return pd.DataFrame(
        {
            "model": rows["condition"],
            "baseline": rows["baseline"],
            "clean test accuracy (whole test split)": rows["test_acc"].map(pct),
            "clean on attacked digits": [
                f"{pct(a)} of {n}"
                for a, n in zip(rows["attacked_correct"], rows["attacked_rows"], strict=True)
            ],
            f"primary effect [{level} seed-level CI]": [
                ci(*v) for v in rows[["ratio", "ratio_lo", "ratio_hi"]].itertuples(False)
            ],
            "seeds": rows["seeds_k"],
            "adjusted p": rows["p_adj"].map(pvalue),
            "verdict": rows["verdict"],
        }
    )


def _primary_md(f: _Frames, rows: pd.DataFrame, files: _Files) -> list[str]:
    """The primary table and its figure, right under the answer."""
    if rows.empty:
        return []
    md = [*md_table(_primary_display(rows, f.level))]
    md += [
        f"Primary endpoint {esc(f.primary)}: ratio of per-digit distortions, model / baseline, on "
        "the same digits; > 1 means harder to attack. Clean on attacked digits: the share of the "
        "attacked (seed, digit) rows classified correctly, over that many rows. Heterogeneity and "
        "the digit-level estimates are in the appendix tables.",
        "",
    ]
    md += files.figure(
        figures.primary_forest(
            rows, files.png("primary"), f.data.equivalence_margin, str(f.primary)
        ),
        f"{f.primary} per model: pooled ratio (dot) with its seed-level interval (line; dashed: "
        "teachers), each seed's own ratio (ticks), the equivalence band shaded.",
    )
    return md


def _intro_md(f: _Frames, files: _Files) -> list[str]:
    """Set-up, the baselines and the accuracy section with its training curves."""
    data = f.data
    md = ["## Set-up", "", *_setup(data.setup)]
    md += [f"Significance level α = {f.alpha:g}. Each condition is compared with its baseline:", ""]
    md += [f"- {code(c)} against {code(b)}" for c, b in data.baselines.items()] or ["- none"]
    md += [""]
    md += ["## Accuracy", "", *_accuracy_md(f.accuracy), *_sets_md(f.data, f.accuracy)]
    if not data.curves.empty:
        md += files.figure(
            figures.training_curves(data.curves, files.png("training_curves"), f.order),
            "Training curves: validation and test accuracy per epoch, mean over seeds "
            "with a ±1 sd band (dashed: teachers). Models that log only a final point after the last "
            "epoch shown (trained on a synthetic set) are in the accuracy table, not here.",
        )
    return md


def _robust_accuracy_md(f: _Frames, files: _Files) -> list[str]:
    """One robust-accuracy figure per norm some direct attack ran in."""
    direct = f.data.attacks
    by_norm = row_norms(direct)
    norms = [n for n in NORMS if n in set(by_norm)]
    md = ["## Robust accuracy vs ε", ""] if norms else []
    for norm in norms:
        md += files.figure(
            figures.robust_accuracy_curves(
                direct[by_norm == norm], norm, files.png(f"robust_accuracy_{norm}"), f.order
            ),
            f"Robust accuracy: fraction of all attacked (seed, digit) rows still classified "
            f"correctly within ε, i.e. clean-correct with a minimal {NORM_LABELS[norm]} distortion "
            "above ε (markers: fixed-budget attacks at their ε).",
        )
    return md


_TRANSFER_NOTE = (
    "Adversarials crafted on the source condition's model (same seed, same digits) evaluated on "
    "each condition's model, as Carlini & Wagner (2017, §VIII) broke defensive distillation: the "
    "share of each model's clean-correct (seed, digit) rows they fool, pooled over seeds; in "
    "brackets, the same perturbations rescaled to that model's own median distortion under the "
    "direct attack of the same kind. The source's own row is the direct attack. No gradient of "
    "the evaluated model is used, so a model that only masks its gradient is fooled here."
)


def _transfer_md(f: _Frames, files: _Files) -> list[str]:
    """The source × target matrix of the transfer attacks, where any ran; shown a row per model
    evaluated on, a column per transfer attack (a few sources, many targets: it stays narrow)."""
    if f.transfer.empty:
        return []
    matrix = tables.transfer_matrix(f.transfer, f.order)
    files.table(matrix, "transfer")
    by_target = matrix.drop(columns="source").set_index("attack").T
    by_target.columns = [
        f"{a} (from {s})" for a, s in zip(matrix["attack"], matrix["source"], strict=True)
    ]
    by_target = by_target.rename_axis("evaluated on").reset_index()
    return ["## Transfer attacks", "", _TRANSFER_NOTE, "", *md_table(by_target)]


def _masking_sections(f: _Frames, files: _Files) -> list[str]:
    """The three matched-budget masking checks, PGD's strength, and the softmax saturation per
    seed, each where it ran."""
    md = []
    if not f.checks.empty:
        files.table(f.checks, "masking_checks")
        md += ["## Gradient masking: three checks", "", _CHECKS_NOTE, "", *_checks_md(f.checks), ""]
    if not f.strength.empty:
        files.table(f.strength, "pgd_strength")
        md += ["## Strength of the softmax-gradient attack", "", *_strength_md(f.strength), ""]
    masking_rows = f.data.masking
    if not masking_rows.empty:
        files.table(masking_rows, "masking")
        md += ["## Softmax saturation per seed", "", *_masking_md(masking_rows), ""]
    if f.unsound:
        md += ["## Attacks not used", "", *_unsound_md(f.unsound), ""]
    return md


def _strength_md(strength: pd.DataFrame) -> list[str]:
    shown = pd.DataFrame(
        {
            "attack": strength["attack"],
            "baseline": strength["baseline"],
            "ε": strength["eps"].map(lambda e: f"{e:g}"),
            "success": strength["pgd_success"].map(pct),
            "APGD-CE success": strength["apgd_ce_success"].map(pct),
            "settings": [s or "at budget" for s in strength["settings"]],
            "flagged": np.where(strength["flagged"].astype(bool), "yes", "no"),
        }
    )
    return [
        *md_table(shown),
        "Success over the baseline's clean-correct (seed, digit) rows. APGD-CE: the digits "
        "AutoAttack's APGD-CE (the same cross-entropy loss, with its step-size schedule) fooled at "
        f"that ε or a smaller one. Flagged: settings under Madry et al.'s budget (steps × step "
        f"size ≥ {soundness.PGD_TRAVEL:g} ε, ≥ {soundness.PGD_STEPS} steps, a random restart) "
        f"or more than {100 * soundness.WEAKER_BY:g} point below APGD-CE; a flagged attack gives "
        "no verdict.",
    ]


def _unsound_md(unsound: dict[tuple[str, str], str]) -> list[str]:
    by_reason: dict[tuple[str, str], list[str]] = {}
    for (attack, model), why in unsound.items():
        by_reason.setdefault((attack, why), []).append(model)
    return [
        f"- {code(attack)} on {', '.join(code(m) for m in models)}: {esc(why)}"
        for (attack, why), models in by_reason.items()
    ] + [
        "",
        "An attack gives no verdict for a model where it is single-step, where the masking checks "
        "flag the model and the attack follows its softmax gradient, or where on the model's "
        f"baseline it fools more than {100 * soundness.WEAKER_BY:g} point fewer digits than the "
        "strongest attack of its norm and budget.",
    ]


@dataclass(frozen=True)
class _Attack:
    """One attack of the report: its rows and what its section reads of them."""

    name: str
    kind: str
    rows: pd.DataFrame
    norm: str
    fixed: bool
    slug: str  # its name as it appears in file names
    compared: pd.DataFrame  # its rows of the paired comparisons


def _attack(f: _Frames, name: str, kind: str) -> _Attack:
    """The attack `name` of kind `kind`, its rows taken from the report's attacks once."""
    rows = f.attacks[f.attacks["attack"] == name]
    return _Attack(
        name=name,
        kind=kind,
        rows=rows,
        norm=attack_norm(kind, rows),
        fixed=is_fixed_budget(rows),
        slug=_slug(name),
        compared=f.compared[f.compared["attack"] == name],
    )


def _attack_section(f: _Frames, a: _Attack, files: _Files) -> tuple[list[str], pd.DataFrame]:
    """Summary, distortions, paired comparisons and figures of one attack, and its summary table
    as shown."""
    distortions = tables.distortion_table(a.rows, f.order, f.alpha, f.seed)
    summary = tables.summary_table(
        tables.success_table(a.rows, f.order, f.alpha, f.seed),
        distortions,
        a.compared,
        f.attacked_acc,
        a.norm,
        f.data.baselines,
    )
    files.table(summary, f"summary_{a.slug}")
    files.table(distortions, f"distortion_{a.slug}")
    files.table(a.rows[PER_DIGIT_COLUMNS], f"per_digit_{a.slug}", compressed=True)
    shown = _summary_display(summary, a.fixed, f.level)
    md = [f"## Attack: {esc(a.name)} ({esc(a.kind)})", ""]
    md += [_attack_intro(a.norm, a.fixed, a.rows, f.level), ""]
    if best_of_norm(a.kind) is not None:
        md += _best_of_md(f, a, files)
    md += ["### Summary", "", *md_table(shown), _summary_note(f.level), ""]
    if a.fixed and a.name not in f.data.gradient_free:  # published points: the full ensemble
        md += _references_md(f, a, files)
    md += ["### Distortion", "", *_distortion_md(distortions, f.level), ""]
    md += ["### Paired comparison with each baseline", ""]
    md += _comparison_md(a.compared, f.level)
    md += ["### Figures", "", *_attack_figures(f, a, files)]
    return md, shown


def _best_of_md(f: _Frames, a: _Attack, files: _Files) -> list[str]:
    """Which member attack found each digit's smallest distortion, for a best-of attack."""
    wins = tables.best_of_wins(f.attacks, a.name, f.order, f.data.outside_ensemble)
    files.table(wins, f"wins_{a.slug}")
    return [_best_of_intro(a.norm, wins), "", *_wins_md(wins), ""]


def _attack_figures(f: _Frames, a: _Attack, files: _Files) -> list[str]:
    """The attack's ECDF, its box plot (minimal attacks) and its examples (where stored)."""
    md = files.figure(
        figures.distortion_ecdf(a.rows, a.name, files.png(f"ecdf_{a.slug}"), f.order),
        f"{a.name}: fraction of all attacked (seed, digit) rows misclassified within a distortion "
        "(misclassified clean at 0; failures stay in the denominator).",
    )
    if not a.fixed:
        md += files.figure(
            figures.distortion_boxplot(a.rows, a.name, a.norm, files.png(f"box_{a.slug}"), f.order),
            f"{a.name}: {NORM_LABELS[a.norm]} distortion per (seed, digit) row, successes only.",
        )
    present = [c for c in f.order if f"{c}/{a.name}" in f.data.examples]
    groups = [
        present[i : i + EXAMPLE_MODELS_PER_FIGURE]
        for i in range(0, len(present), EXAMPLE_MODELS_PER_FIGURE)
    ]
    for i, models in enumerate(groups):
        name = f"examples_{a.slug}" + (f"_{i + 1}" if i else "")
        part = f" ({i + 1} of {len(groups)})" if len(groups) > 1 else ""
        md += files.figure(
            figures.examples_grid(f.data.examples, a.name, files.png(name), models),
            f"{a.name}{part}: clean images, then per condition the adversarial image and the "
            "perturbation (red +, blue −, one colour scale per figure).",
        )
    return md


def _references_md(f: _Frames, a: _Attack, files: _Files) -> list[str]:
    """Our robust accuracy at each ε a published point was measured at, beside those points."""
    data, rows = f.data, a.rows
    points = references.references_for(
        str(data.setup.get("dataset")), a.kind, a.norm, data.budgets.get(a.name, [])
    )
    clean = rows["clean_correct"].astype(bool).groupby(rows["condition"]).mean()
    out = []
    for eps in sorted({p.eps for p in points}):
        ours = references.robust_accuracy(rows, f.order, eps)
        published = [p for p in points if np.isclose(p.eps, eps)]
        frame = pd.DataFrame(
            [{"model": f"this run: {c}", "clean accuracy": clean[c], "robust accuracy": r,
              "source": "this report (attacked digits, all seeds)"} for c, r in ours.items()]
            + [{"model": p.method, "clean accuracy": p.clean, "robust accuracy": p.robust,
                "source": p.source} for p in published]
        )  # fmt: skip
        files.table(frame, f"references_{a.slug}_{eps:g}")
        sources = list(dict.fromkeys(p.source for p in published))
        marks = {source: f"[{i}]" for i, source in enumerate(sources, start=1)}
        shown = frame.assign(
            **{c: frame[c].map(pct) for c in ("clean accuracy", "robust accuracy")},
            source=[marks.get(s, "this report") for s in frame["source"]],
        )
        out += [f"### Published reference points ({NORM_LABELS[a.norm]} ε = {eps:g})", ""]
        out += [*md_table(shown)]
        out += [f"{marks[s]} {esc(s)}." for s in sources]
        out += ["", "Other models and other test digits than ours: points of reference, not a "
                "paired comparison.", ""]  # fmt: skip
    return out


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
            md += [f"**{esc(key)}**", "", *[f"- {esc(v)}" for v in values], ""]
    return md


def _asked_seeds(data: ReportData, order: list[str]) -> dict[str, int]:
    """How many seeds the manifest runs of each condition (`ReportData.seeds_for`)."""
    return {c: len(seeds) for c in order if (seeds := data.seeds_for(c))}


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
            "test accuracy, whole test split (mean ± sd)": [
                mean_sd(m, s) for m, s in zip(acc["test_mean"], acc["test_sd"], strict=True)
            ],
        }
    )
    return [*md_table(shown), "sd over seeds, in percentage points.", ""]


def _sets_md(data: ReportData, summary: pd.DataFrame) -> list[str]:
    """Each synthetic or coreset set's model against the papers' number for its method and size
    (issue 26, item 1: the distance to the published figure, stated)."""
    if not data.synthetic_sets:
        return []
    acc = summary.drop_duplicates("condition").set_index("condition")
    dataset = str(data.setup.get("dataset", ""))
    papers = PUBLISHED.get("fashion-mnist" if "fashion" in dataset else "mnist", {})
    rows = []
    for name, s in data.synthetic_sets.items():
        method, ipc, its = s["method"], s["ipc"], s["iterations"]
        budget = PAPER_ITERATIONS.get(str(method))
        mean = float(acc["test_mean"].get(name, math.nan))
        sd = float(acc["test_sd"].get(name, math.nan))
        paper = papers.get(str(method), {}).get(int(ipc)) if ipc is not None else None
        rows.append(
            {
                "condition": name,
                "method, images per class": f"{method}, {ipc}",
                "iterations (papers')": "—"
                if its is None
                else f"{int(its):,}" + (f" ({budget:,})" if budget else ""),
                "network under attack": s["arch"],
                "test accuracy (mean ± sd)": "—"
                if math.isnan(mean)
                else pct(mean) + ("" if math.isnan(sd) else f" ± {100 * sd:.1f}"),
                "papers' ConvNet": "—" if paper is None else f"{paper:.1f}%",
                "gap (points)": "—"
                if paper is None or math.isnan(mean)
                else f"{100 * mean - paper:+.1f}",
            }
        )
    note = (
        "The papers' numbers (DC, DSA and DM papers' Table 1) are the ConvNet's test accuracy "
        "after training on a set distilled from all 60,000 training digits at the papers' "
        "budgets; here the set is distilled from this study's training split and the network "
        "under attack is trained on it with the suite's recipe, so the gap mixes the budget, the "
        "split and the network. A gap is the distance to the published figure, not a bug."
    )
    return ["**The training sets against the papers' numbers**", "", *md_table(pd.DataFrame(rows)),
            note, ""]  # fmt: skip


def _attack_intro(norm: str, fixed: bool, rows: pd.DataFrame, level: str) -> str:
    seeds = rows["seed"].nunique()
    samples = rows["sample_index"].nunique()
    if fixed:
        eps = ", ".join(num(e) for e in sorted(rows["eps"].dropna().unique()))
        what = f"Fixed-budget attack in {NORM_LABELS[norm]} at ε = {eps}"
    else:
        what = f"Minimal-perturbation attack in {NORM_LABELS[norm]}"
    return (
        f"{what}, on {samples} test digits × {seeds} seeds. Every interval is a {level} "
        "two-level bootstrap (resampling seeds, then digits within each seed) unless said "
        "otherwise; per-seed estimates are listed beside the pooled ones."
    )


def _best_of_intro(norm: str, wins: pd.DataFrame) -> str:
    members = ", ".join(code(a) for a in dict.fromkeys(wins["attack"]))
    return (
        f"Best of the minimal {NORM_LABELS[norm]} attacks {members}: per (seed, digit) the "
        "smallest distortion any of them found (the digit's worst case), so one attack's "
        "failure cannot read as robustness when another succeeded. Share of wins: rows where "
        "the attack found the smallest distortion, over rows some attack fooled (ties count for "
        "each attack that reached it)."
    )


def _wins_md(wins: pd.DataFrame) -> list[str]:
    shown = pd.DataFrame(
        {
            "condition": wins["condition"],
            "attack": wins["attack"],
            "wins / fooled rows": [
                f"{w} / {n}" for w, n in zip(wins["wins"], wins["fooled_rows"], strict=True)
            ],
            "share of wins": wins["share"].map(pct),
        }
    )
    return md_table(shown)


def _seeds(values: object, fmt=num) -> str:
    return ", ".join(fmt(v) for v in values) if isinstance(values, list) else "—"


def _summary_display(summary: pd.DataFrame, fixed: bool, level: str) -> pd.DataFrame:
    if summary.empty:
        return summary
    norm = NORM_LABELS[summary["norm"].iloc[0]]
    ratio = "robust-accuracy ratio at the smallest ε" if fixed else "ratio"
    verdicts = [
        v + (f", {s}" if isinstance(s, str) and s else "")
        for v, s in zip(summary["verdict"], summary["seeds"], strict=True)
    ]
    return pd.DataFrame(
        {
            "condition": summary["condition"],
            "baseline": summary["baseline"],
            "test accuracy (whole test split)": summary["test_acc"].map(pct),
            f"success rate [{level} CI]": [
                f"{pct(r)} [{100 * lo:.1f}, {100 * hi:.1f}]"
                for r, lo, hi in summary[["success_rate", "success_lo", "success_hi"]].itertuples(
                    False
                )
            ],
            f"median {norm}, all digits [{level} CI]": [
                ci(*v)
                for v in summary[["median_all", "median_all_lo", "median_all_hi"]].itertuples(False)
            ],
            "per seed": summary["per_seed"].map(_seeds),
            f"{ratio}, all digits [{level} CI]": [
                ci(*v) for v in summary[["ratio", "ratio_lo", "ratio_hi"]].itertuples(False)
            ],
            f"{ratio}, both correct [{level} CI]": [
                ci(*v)
                for v in summary[
                    ["correct_ratio", "correct_ratio_lo", "correct_ratio_hi"]
                ].itertuples(False)
            ],
            "adjusted p": summary["p_adj"].map(pvalue),
            "verdict": verdicts,
        }
    )


def _summary_note(level: str) -> str:
    return (
        "Success rate: over digits the model classifies correctly when clean. Median over all "
        "attacked (seed, digit) rows: a digit misclassified clean counts 0, a failed attack ∞. "
        "Ratio to the row's baseline: Hodges–Lehmann estimate of other / baseline with its "
        f"{level} CI (fixed-budget attacks: robust accuracy over all attacked digits, other / "
        "baseline); all digits is the verdict's comparison, both correct the same on the digits "
        "both models classify correctly. Pooled minimal-attack ratios and their intervals pool the "
        "per-seed estimates, seeds as the unit; only the primary endpoint has an adjusted p and a "
        "verdict (Statistical method)."
    )


def _distortion_md(distortions: pd.DataFrame, level: str) -> list[str]:
    if distortions.empty:
        return ["No attacked digit."]
    shown = pd.DataFrame(
        {
            "condition": distortions["condition"],
            "norm": distortions["norm"].map(NORM_LABELS),
            f"median, all digits [{level} CI]": [
                ci(*v)
                for v in distortions[["median_all", "median_all_lo", "median_all_hi"]].itertuples(
                    False
                )
            ],
            "per seed": distortions["per_seed"].map(_seeds),
            "successes": distortions["n"],
            f"median over successes [{level} CI]": [
                ci(*v) for v in distortions[["median", "median_lo", "median_hi"]].itertuples(False)
            ],
            f"mean over successes [{level} CI]": [
                ci(*v) for v in distortions[["mean", "mean_lo", "mean_hi"]].itertuples(False)
            ],
        }
    )
    return md_table(shown)


def _comparison_md(compared: pd.DataFrame, level: str) -> list[str]:
    if compared.empty:
        return ["No condition shares attacked digits with its baseline.", ""]
    shown = pd.DataFrame(
        {
            "condition": compared["condition"],
            "baseline": compared["baseline"],
            "digits": compared["subset"],
            "scope": compared["scope"],
            "ε": compared["eps"].map(lambda e: "" if pd.isna(e) else f"{e:g}"),
            "pairs: other larger / baseline larger / tie (∞)": [
                f"{r.n_other_larger} / {r.n_base_larger} / {r.n_ties}"
                + (f" ({r.n_other_infinite} / {r.n_base_infinite})" if r.test != "mcnemar" else "")
                for r in compared.itertuples()
            ],
            f"estimate [{level} CI]": [_estimate_cell(r) for r in compared.itertuples()],
            "effect": compared["effect"].map(lambda r: "—" if math.isnan(r) else f"{r:+.2f}"),
            "p": compared["p"].map(pvalue),
            "adjusted p": compared["p_adj"].map(pvalue),
            "verdict": [
                v + (f", {s}" if s else "")
                for v, s in zip(compared["verdict"], compared["seeds"], strict=True)
            ],
        }
    )
    return [
        *md_table(shown),
        "Pairs are the same digit under the same training seed; pooled Wilcoxon rows test one "
        "value per digit (the median of its per-seed log ratios), pooled McNemar rows every "
        "(seed, digit) pair at that ε. Wilcoxon: on log(other / baseline), effect = "
        "matched-pairs rank-biserial r; McNemar: on robustness at the ε, effect = (only other "
        "robust − only baseline robust) / discordant pairs; the robust-accuracy difference's "
        "interval resamples seeds, then digits. "
        "Estimate: the distortion ratio other / baseline (minimal attacks); robust accuracy of "
        "other vs baseline and their difference (fixed-budget attacks). "
        "Effect > 0: the condition is harder to attack. (∞): pairs where one model resisted (or "
        "the other misclassified the clean digit), other / baseline. Every column, and the test "
        "of each row, is in tables/comparisons.csv.",
        "",
    ]


def _estimate_cell(r) -> str:
    """A comparison's estimate: the ratio of a minimal attack, or a fixed-budget row's robust
    accuracies and their difference (with its interval if pooled)."""
    if pd.isna(r.eps):
        return ci(r.ratio, r.ratio_lo, r.ratio_hi)
    text = f"{pct(r.robust_other)} vs {pct(r.robust_base)}, {100 * r.diff:+.1f} pp"
    if not pd.isna(r.diff_lo):
        text += f" [{100 * r.diff_lo:+.1f}, {100 * r.diff_hi:+.1f}]"
    return text


def _bounds_sentence(exact: pd.DataFrame, bounded: pd.DataFrame, bad: pd.DataFrame) -> str:
    """The answer's sentence on the proofs, where the manifest verified: each condition against
    its baseline on the exact minimal distortions (secondary: no verdict), the attacks' optimality
    gap against them, and the soundness check's outcome (a violation is the bold line above)."""
    if bounded.empty:
        return ""
    pooled = exact[(exact["scope"] == "pooled") & (exact["subset"] == "all digits")]
    untestable = pooled["n_pairs"] - pooled["n_ties"] < 2  # digits both misclassify tie at 0
    skipped = [
        f"{code(r.condition)} at {NORM_LABELS.get(r.norm, esc(r.norm))} "
        f"({int(r.n_pairs - r.n_ties)} of {int(r.n_pairs)} digit pairs untied)"
        for r in pooled[untestable].itertuples()
    ]
    pooled = pooled[~untestable]
    parts = [
        f"on the exact minimal {NORM_LABELS.get(norm, esc(norm))} distortions, the ratio to the "
        "baseline is " + "; ".join(
            f"{code(r.condition)} against {code(r.baseline)} "
            f"{ci(r.ratio, r.ratio_lo, r.ratio_hi)} over {int(r.n_pairs)} digit pairs"
            + (f" ({esc(r.why)})" if isinstance(r.why, str) and r.why else "")
            for r in rows.itertuples()
        )
        for norm, rows in pooled.groupby("norm", sort=False)
    ]  # fmt: skip
    text = ""
    if parts:
        text += " Proved instead of attacked (secondary, no verdict): " + "; ".join(parts) + "."
    if skipped:
        text += (
            " Too few digits decided exactly to compare: " + ", ".join(skipped) + "; the digits "
            "the solver left open within its time limit are not counted."
        )
    solved = bounded[bounded["median_gap"].notna()]
    if not solved.empty:
        gaps = ", ".join(
            f"{code(r.condition)} {100 * r.median_gap:+.1f}% (worst digit {100 * r.worst_gap:+.1f}%)"
            for r in solved.itertuples()
        )
        text += f" The attacks' best lies above the exact minimum by a median of {gaps}."
    if bad.empty:
        text += " No attack reported an adversarial inside a certified radius."
    return text


def _brackets_md(bounded: pd.DataFrame) -> list[str]:
    """The brackets table: per model and verification, the certified and exact medians beside the
    attacks' best, the bracket's width and the attacks' optimality gap."""
    shown = pd.DataFrame({
        "model": bounded["condition"].map(code),
        "verification": bounded["verification"].map(esc),
        "norm": bounded["norm"].map(NORM_LABELS),
        "digits": bounded["digits"].astype(int).astype(str),
        "median certified radius": bounded["median_lower"].map(num),
        "median best attack": bounded["median_attack"].map(num),
        "median attack ÷ certified": bounded["median_ratio"].map(num),
        "solved exactly": [
            f"{int(k)} of {int(n)}" for k, n in zip(bounded["solved"], bounded["digits"], strict=True)
        ],
        "median exact": bounded["median_exact"].map(num),
        "attacks' gap to exact: median, worst": [
            "—" if pd.isna(m) else f"{100 * m:+.2f}%, {100 * w:+.2f}%"
            for m, w in zip(bounded["median_gap"], bounded["worst_gap"], strict=True)
        ],
        "violations": bounded["violations"].astype(int).astype(str),
    })  # fmt: skip
    return [*md_table(shown), ""]


def _violations_md(bad: pd.DataFrame) -> list[str]:
    """The soundness check's outcome: none, or the first violating records."""
    if bad.empty:
        return [
            "Soundness check: no attack record reports an adversarial inside a certified radius.",
            "",
        ]
    lines = [
        f"**Soundness check failed: {len(bad)} attack records lie inside a certified radius** "
        "(first 20):",
        "",
    ]
    for r in bad.head(20).itertuples():
        lines.append(
            f"- {code(r.condition)} seed {r.seed} digit {r.sample_index}: {esc(r.attack)} at "
            f"{num(r.distortion)} < {esc(r.verification)}'s {num(r.lower)}"
        )
    return [*lines, ""]


_BRACKETS_NOTE = (
    "Each digit's true minimal adversarial distortion lies between a certified radius (no "
    "adversarial exists closer: CROWN or IBP bounds over the ball, bisected on its radius; or "
    "the exact minimum where the mixed-integer program solved it, Tjeng et al. 2019) and the "
    "best adversarial any attack found. A narrow bracket says the attacks are close to optimal; "
    "the optimality gap says by how much, where the exact value is known. Medians over the "
    "correctly classified digits of every seed."
)


_EXACT_NOTE = (
    "Every condition against its baseline on the exact minimal distortions the mixed-integer "
    "program proved (marked exact: no attack's strength enters), with the same paired statistics "
    "as the attacks'. A digit proved clean up to the verification's largest ε counts as ∞, as a "
    "failed attack does; a digit the solver left open at its time limit is left out, so only "
    "digits decided under both models pair. Secondary: no verdict (the primary endpoint gives "
    "those)."
)


_CONTROL_NOTE = (
    "Each learned synthetic set against the condition trained on as many random real images per "
    "class, on the same network: the compression control, which tells what distillation adds "
    "from what training on a few images does. The primary endpoint only; Holm adjusts within "
    "these comparisons, a family of their own."
)


_CORESET_NOTE = (
    "Each learned synthetic set against the condition trained on as many real images per class "
    "chosen by herding (the images whose mean embedding best tracks their class's), on the same "
    "network: the best same-size real set, so a learned set that beats random images but not "
    "these owes its gain to the choice of images, not to learning them. The primary endpoint "
    "only; Holm adjusts within these comparisons, a family of their own."
)


_MATCHED_NOTE = (
    "Each synthetic-set model against the same network trained on the full training split and "
    "stopped as soon as its validation accuracy reached that model's (the same seed's): what "
    "lower accuracy alone does to robustness. A synthetic model less robust than its "
    "accuracy-matched control lost more than its accuracy explains. The primary endpoint only; "
    "Holm adjusts within these comparisons, a family of their own."
)


_CHECKS_NOTE = (
    "Does an attack that does not follow the model's softmax gradient fool, inside the same ε, "
    "digits the white-box softmax-gradient attack could not (Athalye et al. 2018, §3.1)? "
    "**Margin**: a fixed-budget attack on another loss (AutoAttack's APGD-T on the DLR margin) "
    "at the largest ε both ran. **Gradient-free**: Square at the largest ε both ran. "
    "**Transfer**: adversarials crafted on the source model that lie within the softmax "
    "attack's largest ε. For each: the softmax attack's success at that ε, the other attack's, "
    "the digits only the other attack fooled against those only the softmax attack fooled "
    "(clean-correct (seed, digit) rows pooled over seeds), and the one-sided exact McNemar "
    "p-value: each such digit proves an adversarial inside the budget where the white-box attack "
    "found none. A check flags a condition when that test is significant, the softmax attack "
    "succeeds on under half as many digits, and the other attack's success is at least "
    f"{100 * masking.MASKING_GAP:.0f} points higher (a small gap is a weak attack, not a masked "
    "gradient: on adversarially trained models APGD-T beats PGD by a few points, Croce & Hein "
    "2020). A condition is *masking* if any check flags it, *no masking found* if the "
    "transfer check and a matched-budget check ran and none did; no unbounded attack takes part, "
    "so a model that is robust inside ε is not called masking for it."
)


def _checks_md(checks: pd.DataFrame) -> list[str]:
    def check(r, name: str) -> str:
        p = getattr(r, f"{name}_p")
        if name == "transfer" and r.condition == r.transfer_source:
            return "its source (does not apply)"
        if pd.isna(p):
            return "not run"
        return (
            f"{pct(getattr(r, f'softmax_success_at_{name}_eps'))} vs "
            f"{pct(getattr(r, f'{name}_success'))} at ε {getattr(r, f'{name}_eps'):g}; "
            f"{int(getattr(r, f'{name}_only'))} vs {int(getattr(r, f'softmax_only_{name}'))} "
            f"digits, p {pvalue(p)}" + (" — flagged" if getattr(r, f"{name}_flagged") else "")
        )

    first = checks.iloc[0]
    margin = first["margin_attack"] if isinstance(first["margin_attack"], str) else "margin"
    free = first["gradient_free_attack"]
    free = free if isinstance(free, str) else "gradient-free"
    shown = pd.DataFrame(
        {
            "condition": checks["condition"],
            f"margin: softmax vs {margin}": [check(r, "margin") for r in checks.itertuples()],
            f"gradient-free: softmax vs {free}": [
                check(r, "gradient_free") for r in checks.itertuples()
            ],
            "transfer: softmax vs transfer": [check(r, "transfer") for r in checks.itertuples()],
            "verdict": checks["verdict"],
        }
    )
    attack = esc(str(first["softmax_attack"]))
    return [f"Softmax-gradient attack: {attack}.", "", *md_table(shown)]


def _masking_md(masking: pd.DataFrame) -> list[str]:
    shown = pd.DataFrame(
        {
            "condition": masking["condition"],
            "seed": masking["seed"],
            "saturated softmax": masking["saturated_fraction"].map(pct),
            "softmax-attack success": masking["softmax_success"].map(pct),
            "C&W success (no bound)": masking["cw_success"].map(pct),
            "C&W median L2": masking["cw_median_l2"].map(num),
        }
    )
    return [
        *md_table(shown),
        "Saturated softmax: clean digits whose cross-entropy input gradient vanishes in float64, "
        "the mechanism by which defensive distillation hides its gradient. Descriptive only: "
        "the C&W column has no budget, so it is not a masking test (the checks above are).",
    ]


def _missing_md(data: ReportData) -> list[str]:
    failed = data.accuracy[data.accuracy["status"] != Status.FINISHED]
    notes = [*data.missing]
    notes += [
        f"{r.condition} ({r.role}), seed {r.seed}: run status {r.status}"
        for r in failed.itertuples()
    ]
    if not notes:
        return ["None: every condition and seed finished."]
    return [f"- {esc(n)}" for n in notes]


def _method_md(alpha: float, primary: str | None, margin: float) -> list[str]:
    return [
        "- Each condition is compared with its own baseline (the row names it): the standard "
        "condition trained the same way except for the distillation.",
        "- Pairs are the same test digit under the same training seed. Every attacked digit "
        "counts: a digit a model misclassifies clean has distortion 0 (already adversarial), a "
        "failed attack ∞. Beside it, the same comparison on the digits both models classify "
        "correctly.",
        "- One test for every pair: Wilcoxon signed-rank on d = log(other / baseline). Only "
        "the other model resisted, or only the baseline misclassified clean: d = +∞; the "
        "reverse: d = −∞; both failed or both misclassified: a tie (d = 0, dropped by the "
        "Wilcoxon). Infinities rank above every finite |d|, with their sign. Pooled over "
        "seeds, each digit contributes the median of its per-seed d, so seeds are not extra "
        "samples. The effect is the Hodges–Lehmann estimate of the ratio (median of Walsh "
        "averages of d, exponentiated) with its distribution-free CI, and the matched-pairs "
        "rank-biserial r, whose sign is the side the test measures.",
        "- Fixed-budget attacks, at every ε of their grid: exact McNemar test on robustness within "
        "that ε over every (seed, digit) pair (a digit misclassified clean is not robust), and "
        "the robust-accuracy difference with a two-level bootstrap interval (seeds, then digits "
        "within seed). Where both models are at 0% (or both at 100%) robust accuracy, or every "
        "pair ties, the comparison is not testable at that ε.",
        "- Seeds are the unit of inference. Each seed's Hodges–Lehmann log ratio and its "
        "standard error (from its interval) are pooled by a DerSimonian–Laird random-effects "
        "model with the Hartung–Knapp–Sidik–Jonkman variance and a t(k − 1) reference (IntHout, "
        "Ioannidis & Borm 2014), never narrower than the plain t-interval of the per-seed "
        "estimates; I² and τ (the between-seed SD of the log ratio) give the heterogeneity. The "
        "pooled rows' ratio, interval and p are this pooling's; the digit-level pooled estimate "
        "is kept in tables/comparisons.csv (digit_ratio, digit_p).",
        f"- Only the primary endpoint ({esc(primary or 'none')}, all digits) gives verdicts; Holm "
        f"adjusts within that family. More / less robust: Holm-adjusted p < {alpha:g} with every "
        "seed on the estimate's side; equivalent: the (1 − 2α) interval of the ratio inside "
        f"[{margin:g}, {1 / margin:.3g}] (two one-sided tests); otherwise inconclusive. Every "
        "other attack is secondary: its estimate and unadjusted p, no verdict. A condition "
        "whose run failed, or "
        "whose clean accuracy is below its floor, is tested but gets no verdict.",
        '- Only sound attacks speak: an attack gives no verdict for a model ("not used", with '
        "the reason) where it is single-step, where the masking checks flag the model and the "
        "attack follows its softmax gradient, where PGD's settings are under Madry et al.'s "
        "budget or PGD fools fewer digits than AutoAttack's APGD-CE on the baseline, or where on "
        "the baseline it fools more than one point fewer digits than the strongest attack of its "
        "norm and budget.",
        "- Every learned synthetic set is also compared with the conditions trained on as many "
        "real images per class on the same network, random (the compression control) and chosen "
        "by herding where the manifest has them, and with its accuracy-matched control, under "
        "the primary endpoint, each a family of its own for Holm.",
        "- Best-of attacks: where two or more minimal attacks of one norm ran, `best-<norm>` "
        "takes per (seed, digit) the smallest distortion any of them found.",
        "- Intervals: rates and medians by a two-level percentile bootstrap (2,000 resamples, "
        "fixed seed: seeds, then digits within seed); ratios as above.",
    ]

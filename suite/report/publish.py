"""The published answer: a rendered report plus a README that says how it was made, and the
headline table spliced into the top-level README between markers. `make results` writes both;
nothing here is edited by hand, so the numbers in the repository are always the report's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from suite.attacks import LOGIT_L2_KIND
from suite.errors import SuiteError
from suite.manifest import Manifest
from suite.provenance import attack_sources, code_changed, git_commit
from suite.report.collect import collect
from suite.report.formatting import esc, md_table
from suite.report.frames import ReportData, primary_attack
from suite.report.paths import add_written
from suite.report.render import ReportOutput, render_report
from suite.schema import Status
from suite.tracking import Store


def markers(study: str) -> tuple[str, str]:
    """The lines between which the top-level README holds `study`'s answer: one block per study."""
    return (
        f"<!-- results:{study}:start (written by `make results`; do not edit) -->",
        f"<!-- results:{study}:end -->",
    )


@dataclass(frozen=True)
class Provenance:
    """How a published report came to be: enough for a reader to rerun it."""

    manifest: str
    commit: str
    run_seconds: float  # ReportData.run_seconds: wall time with a model run open
    runs: int
    device: str
    data_source: str
    generated: str
    commands: tuple[str, ...]
    attack_commits: dict[str, list[str]] = field(default_factory=dict)
    job_seconds: float = 0.0  # ReportData.job_seconds
    predicted: tuple[float, float] | None = None  # the dry run's total and its early-stop budgets
    pooled: tuple[str, ...] = ()  # attacks pooled by --allow-mixed across changes of their code


QUESTION = "Does distillation make a neural network harder to attack?"


def publish_study(
    manifest: Path, spec: Manifest, out_dir: Path, readme: Path, device: str, allow_mixed: bool
) -> list[str]:
    """Render the experiment of `spec` from the default store into `out_dir` with its README and
    splice its answer into `readme`; returns the runs still unfinished. Refuses, before writing
    anything, a README without results markers and an attack whose results were made by commits
    that changed its code (unless `allow_mixed`)."""
    if not readme.is_file():
        raise SuiteError(
            f"{readme}: no such file; pass --readme PATH to a README with results markers"
        )
    text = readme.read_text(encoding="utf-8")
    study = spec.experiment.name
    splice(text, "", study)  # no markers: fail before anything is written
    data = collect(Store(read_only=True), spec.experiment.name)
    kinds = {a.name: a.kind for a in spec.attacks}
    mixed = mixed_commits(
        {a: c for a, c in data.attack_commits.items() if a in kinds},
        lambda attack, a, b: code_changed(a, b, attack_sources(kinds[attack])),
    )
    if mixed and not allow_mixed:
        attack, found = next(iter(mixed.items()))
        raise SuiteError(
            f"{manifest}: attack {attack!r} has results made by commits {', '.join(found)}, "
            f"between which its code changed; rerun it (`suite run {manifest}` after removing "
            "those results) or, where `python bench/reproduce_stored.py` shows today's code "
            "reproduces them, pass --allow-mixed to pool them"
        )
    output = render_report(data, out_dir)
    attack, table = headline(output, data)
    provenance = Provenance(
        manifest=str(manifest),
        commit=git_commit(),
        attack_commits=data.attack_commits,
        run_seconds=data.run_seconds,
        job_seconds=data.job_seconds,
        predicted=predicted_compute(spec),
        runs=int((data.accuracy["status"] == Status.FINISHED).sum()),
        device=device,
        data_source=f"{spec.data.dataset}: {data.setup.get('data_source', 'unknown')}",
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commands=(
            "make results",
            f"# which runs: suite run {manifest}",
            f"suite publish {manifest}" + (" --allow-mixed" if mixed else ""),
        ),
        pooled=tuple(mixed),
    )
    missing = incomplete(data)
    (out_dir / "README.md").write_text(
        results_readme(attack, table, output.answer, output.conclusion, provenance, missing),
        encoding="utf-8",
    )
    add_written(out_dir, ["README.md"])
    section = readme_section(study, attack, table, output.answer, out_dir.as_posix(), missing)
    readme.write_text(splice(text, section, study), encoding="utf-8")
    return missing


def predicted_compute(spec: Manifest) -> tuple[float, float] | None:
    """What `suite run --dry-run` predicts for the whole manifest on this machine now: (total
    seconds, the part that is the budget of loops that stop early); None where it cannot (the
    data are not here)."""
    from suite.runner import estimate_manifest

    try:
        jobs = estimate_manifest(spec)
    except SuiteError:
        return None
    return sum(job.total for job in jobs), sum(job.bounded for job in jobs)


def _pooled_line(p: Provenance) -> list[str]:
    if not p.pooled:
        return []
    return [
        f"- pooled with `--allow-mixed`: {', '.join(f'`{esc(a)}`' for a in p.pooled)}, whose code "
        "changed between the commits above; whether today's code reproduces a stored result is "
        f"checked by `python bench/reproduce_stored.py {esc(p.manifest)} --condition C --seed S`"
    ]


def _predicted_line(p: Provenance) -> list[str]:
    if p.predicted is None:
        return []
    total, bounded = p.predicted
    took = f"; the jobs took {p.job_seconds / total:.2f} × the prediction" if total > 0 else ""
    return [
        f"- predicted by `suite run --dry-run` (one process at the bare network's speed, measured "
        f"when publishing): {total / 60:.1f} min, of which {bounded / 60:.1f} min are the budgets "
        f"of loops that stop early (PGD, AutoAttack, the exact solver's time limits), an upper bound{took}"
    ]


def headline(output: ReportOutput, data: ReportData) -> tuple[str, pd.DataFrame]:
    """The answer's table (`ReportOutput.primary`: each model's primary-endpoint effect against its
    own baseline, seed-level interval, verdict) with each model's masking verdict beside it."""
    attack = primary_attack(data, output.summaries)
    if attack is None or output.primary.empty:
        raise SuiteError(
            f"experiment {data.experiment!r} has no primary-endpoint comparison to publish: set "
            f"experiment.primary in its manifest or run a {LOGIT_L2_KIND} attack"
        )
    table = output.primary.copy()
    flags = _masking(output.masking_checks)
    table.insert(len(table.columns), "gradient masking", table["model"].map(flags).fillna(""))
    return attack, table


def mixed_commits(
    commits: dict[str, list[str]], changed: Callable[[str, str, str], bool]
) -> dict[str, list[str]]:
    """The attacks whose results were computed by commits between which their code changed
    (`changed(attack, a, b)`; a dirty or unknown commit always counts as changed): publishing
    those would pool results of different attacks under one name."""
    out = {}
    for attack, found in commits.items():
        if len(found) < 2:
            continue
        first = found[0]
        if any(_unknown(c) or _unknown(first) or changed(attack, first, c) for c in found[1:]):
            out[attack] = found
    return out


def _unknown(commit: str) -> bool:
    return commit == "unknown" or commit.endswith("-dirty")


def _masking(checks: pd.DataFrame) -> dict[str, str]:
    """Per condition: the three-way masking verdict with what each matched-budget check found
    (`suite.report.masking`)."""
    names = {"margin": "margin", "gradient_free": "gradient-free", "transfer": "transfer"}
    out = {}
    for r in checks.itertuples():
        parts = ["transfer: its source"] if r.condition == r.transfer_source else []
        parts += [
            f"{label} {'flagged' if getattr(r, f'{check}_flagged') else 'clear'}"
            for check, label in names.items()
            if not pd.isna(getattr(r, f"{check}_p"))
        ]
        out[r.condition] = f"{r.verdict} ({'; '.join(parts)})" if parts else str(r.verdict)
    return out


def incomplete(data: ReportData) -> list[str]:
    """The runs the manifest asks for that are not finished in the store (missing, running or
    failed), one line each: a published report with any of these says so at its top."""
    failed = data.accuracy[data.accuracy["status"] != Status.FINISHED]
    out = [*data.missing] + [
        f"{r.condition} seed {r.seed} ({r.role}): {r.status}" for r in failed.itertuples()
    ]
    ran = set(zip(data.accuracy["condition"], data.accuracy["seed"], strict=True))
    for condition in data.floors:  # every condition of the manifest
        own = data.seeds_for(condition)
        out += [f"{condition} seed {s}: not run yet" for s in own if (condition, s) not in ran]
    return list(dict.fromkeys(out))


def _incomplete_md(missing: list[str]) -> list[str]:
    if not missing:
        return []
    return [
        f"**Incomplete: {len(missing)} run(s) of the manifest are not finished** — rerun "
        "`make results`, which reuses every finished model and attack:",
        "",
        *[f"- {esc(m)}" for m in missing],
        "",
    ]


def results_readme(
    attack: str,
    table: pd.DataFrame,
    answer: str,
    conclusion: str,
    p: Provenance,
    missing: list[str],
) -> str:
    """The results folder's README, answer first: the question, the answer, its table and
    figure, then the conclusion in full and exactly how it was made."""
    commits = [
        f"  - `{esc(a)}`: {', '.join(f'`{esc(c)}`' for c in found)}"
        for a, found in p.attack_commits.items()
    ]
    lines = [
        f"# {QUESTION} (`{esc(p.manifest)}`)",
        "",
        *_incomplete_md(missing),
        "## Answer",
        "",
        answer.strip(),
        "",
        *md_table(table),
        f"Primary endpoint: {esc(attack)}, all attacked digits, each model against its own "
        "baseline; the full report is `report.md` (and `report.pdf`), with its figures in "
        "`figures/`, every table as CSV in `tables/` and the per-digit records behind every test "
        "in `tables/per_digit_*.csv.gz`. Generated by `make results`; never edited by hand.",
        "",
        "![primary endpoint per model](figures/primary.png)",
        "",
        "## The conclusion in full",
        "",
        conclusion.strip(),
        "",
        "## How it was made",
        "",
        f"- commit of `suite publish`: `{esc(p.commit)}`; the commits whose code computed each "
        "attack's results:",
        *commits,
        *_pooled_line(p),
        f"- generated: {esc(p.generated)}",
        f"- device: {esc(p.device)}",
        f"- compute time: {p.run_seconds / 60:.1f} min, the time during which at least one of the "
        f"{p.runs} finished model runs this report reads was training or being attacked (from the "
        "store, across interruptions and resumed runs; work lost to an interruption is not "
        f"counted); summed over jobs, as one process would run them: {p.job_seconds / 60:.1f} min",
        *_predicted_line(p),
        f"- data: {esc(p.data_source)}",
        "- commands:",
        "",
        "```sh",
        *p.commands,
        "```",
        "",
    ]
    return "\n".join(lines)


def readme_section(
    study: str, attack: str, table: pd.DataFrame, answer: str, folder: str, missing: list[str]
) -> str:
    """`study`'s block of the top-level README's Results (between its markers): the answer and
    its table."""
    start, end = markers(study)
    return "\n".join(
        [
            start,
            *_incomplete_md(missing),
            f"**{QUESTION}** From [`{folder}`]({folder}/README.md) (primary endpoint "
            f"{esc(attack)}; full report: [`{folder}/report.md`]({folder}/report.md)):",
            "",
            answer.strip(),
            "",
            *md_table(table),
            end,
        ]
    )


def splice(readme: str, section: str, study: str) -> str:
    """`readme` with the text between `study`'s results markers replaced by `section`."""
    start, end = markers(study)
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(readme):
        raise SuiteError(
            f"README.md has no results markers for {study}: add a line {start!r} and a line "
            f"{end!r} where its results belong"
        )
    return pattern.sub(lambda _: section, readme, count=1)

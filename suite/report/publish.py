"""The published answer: a rendered report plus a README that says how it was made, and the
headline table spliced into the top-level README between markers. `make results` writes both;
nothing here is edited by hand, so the numbers in the repository are always the report's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from suite.attacks import LOGIT_L2_KIND
from suite.errors import SuiteError
from suite.report.formatting import esc, md_table
from suite.report.frames import ReportData, attack_kinds
from suite.report.render import ReportOutput
from suite.report.tables import BEST_L2

START = "<!-- results:start (written by `make results`; do not edit) -->"
END = "<!-- results:end -->"


@dataclass(frozen=True)
class Provenance:
    """How a published report came to be: enough for a reader to rerun it."""

    manifest: str
    commit: str
    wall_seconds: float | None
    run_seconds: float  # ReportData.run_seconds
    runs: int
    device: str
    data_source: str
    generated: str
    commands: tuple[str, ...]


def headline(output: ReportOutput, data: ReportData) -> tuple[str, pd.DataFrame]:
    """The per-condition answer under the strongest minimal-L2 evidence (best of the L2 attacks
    where several ran, else C&W L2): accuracy, success, ratio to its own baseline, adjusted p,
    verdict, and whether the condition was flagged for gradient masking."""
    kinds = attack_kinds(data.attacks)
    cw = [a for a in output.summaries if kinds.get(a) == LOGIT_L2_KIND]
    attack = BEST_L2 if BEST_L2 in output.summaries else next(iter(cw), None)
    if attack is None:
        raise SuiteError(
            f"experiment {data.experiment!r} has no C&W L2 results to publish: "
            f"run a {LOGIT_L2_KIND} attack"
        )
    summary = output.summaries[attack]
    columns = [
        c
        for c in summary.columns
        if c in ("condition", "baseline", "test accuracy", "adjusted p", "verdict")
        or c.startswith(("success rate", "ratio, all digits"))
    ]
    table = summary[columns].copy()
    flags = _masking(data, output.masking_checks)
    table.insert(len(table.columns), "gradient masking flag", table["condition"].map(flags))
    return attack, table


def _masking(data: ReportData, checks: pd.DataFrame) -> dict[str, str]:
    """Per condition: the three-way masking verdict with the checks that flagged it where the
    transfer and gradient-free checks ran (`suite.report.masking`), else the logit check alone."""
    if data.masking.empty:
        logit: dict[str, str] = {}
    else:
        flags = data.masking.groupby("condition")["flagged"].agg(["sum", "count"])
        logit = {
            c: (f"yes ({int(r['sum'])}/{int(r['count'])} seeds)" if r["sum"] else "no")
            for c, r in flags.iterrows()
        }
    out = dict(logit)  # conditions without a three-way row keep the logit check's flag
    for r in checks.itertuples():
        parts = [f"logit {logit.get(r.condition, 'not run')}"]
        if r.condition == r.transfer_source:
            parts.append("transfer: its source")
        parts += [
            f"{name} {'flagged' if flagged else 'clear'}"
            for name, p, flagged in (
                ("transfer", r.transfer_p, r.transfer_flagged),
                ("Square", r.gradient_free_p, r.gradient_free_flagged),
            )
            if not pd.isna(p)
        ]
        out[r.condition] = f"{r.verdict} ({'; '.join(parts)})"
    return out


def incomplete(data: ReportData) -> list[str]:
    """The runs the manifest asks for that are not finished in the store (missing, running or
    failed), one line each: a published report with any of these says so at its top."""
    failed = data.accuracy[data.accuracy["status"] != "FINISHED"]
    out = [*data.missing] + [
        f"{r.condition} seed {r.seed} ({r.role}): {r.status}" for r in failed.itertuples()
    ]
    seeds = data.setup.get("seeds") or []
    ran = set(zip(data.accuracy["condition"], data.accuracy["seed"], strict=True))
    for condition in data.floors:  # every condition of the manifest
        out += [f"{condition} seed {s}: not run yet" for s in seeds if (condition, s) not in ran]
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
    attack: str, table: pd.DataFrame, conclusion: str, p: Provenance, missing: list[str]
) -> str:
    """The results folder's README: headline, what it means, and exactly how it was made."""
    wall = "—" if p.wall_seconds is None else f"{p.wall_seconds / 60:.1f} min"
    lines = [
        f"# Published results: `{esc(p.manifest)}`",
        "",
        *_incomplete_md(missing),
        "Generated by `make results`; never edited by hand. The full report is `report.md` "
        "(and `report.pdf`), with its figures in `figures/` and every table as CSV in `tables/`.",
        "",
        f"## Headline ({esc(attack)}, all attacked digits, each condition against its own baseline)",
        "",
        *md_table(table),
        "## What it means",
        "",
        conclusion.strip(),
        "",
        "## How it was made",
        "",
        f"- commit: `{esc(p.commit)}`",
        f"- generated: {esc(p.generated)}",
        f"- device: {esc(p.device)}",
        f"- wall time of the last `make results`: {wall} (models and attacks already in the store "
        "are reused, so a resumed run is shorter)",
        f"- compute time in the store: {p.run_seconds / 60:.1f} min during which at least one of "
        f"the {p.runs} finished model runs this report reads was training or being attacked "
        "(across interruptions and resumed runs; work lost to an interruption is not counted)",
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
    attack: str, table: pd.DataFrame, conclusion: str, folder: str, missing: list[str]
) -> str:
    """The top-level README's Results block (between the markers)."""
    return "\n".join(
        [
            START,
            *_incomplete_md(missing),
            f"Headline of [`{folder}`]({folder}/README.md) ({esc(attack)}, all attacked digits; "
            f"full report: [`{folder}/report.md`]({folder}/report.md)):",
            "",
            *md_table(table),
            conclusion.strip(),
            END,
        ]
    )


def splice(readme: str, section: str) -> str:
    """`readme` with the text between the results markers replaced by `section`."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise SuiteError(
            f"README.md has no results markers: add a line {START!r} and a line {END!r} "
            "where the results belong"
        )
    return pattern.sub(lambda _: section, readme, count=1)

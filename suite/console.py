"""Everything the user sees in the terminal: progress bars and summary tables (rich)."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from suite.report.formatting import NORM_LABELS, duration, fixed, pct
from suite.schema import Status

if TYPE_CHECKING:  # the runner imports torch and mlflow: ~30 s on a busy box for `suite data`
    from suite.cost import JobEstimate
    from suite.report.frames import ReportData
    from suite.report.render import ReportOutput
    from suite.runner import Row

# Off a terminal (CI logs, pipes, files) rich would wrap at 80 columns and cut the tables.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def plain(value: object) -> Text:
    """`value` as literal text: what a manifest, the command line or a store supplied is never read
    as rich markup (`[bold]`, `[/x]`, `[link=…]`); tables get their cells through this."""
    return value if isinstance(value, Text) else Text(str(value))


def say(message: str, *, err: bool = False) -> None:
    """Print one line of literal text (no markup, no highlighting) on stdout or stderr."""
    (err_console if err else console).print(message, markup=False, highlight=False, soft_wrap=True)


def error_line(message: str) -> None:
    """`error: MESSAGE` on stderr, the label in red and the message literal."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


HEARTBEAT_S = 60.0
"""Off a terminal, a bar that runs longer than this prints a progress line this often."""
BEAT_CHECK_S = 5.0
"""How often, off a terminal, the heartbeat looks for bars that have not moved (one long step,
such as AutoAttack's batch, never calls `update`)."""


class _RichTask:
    def __init__(self, progress: Progress, task_id, on_close: Callable[[_RichTask], None]) -> None:
        self._progress, self._id, self._on_close = progress, task_id, on_close
        self._started = self._said = time.monotonic()
        self._extra = ""

    def update(self, completed: float, total: float | None = None, **info: object) -> None:
        """Move the bar; off a terminal, where no bar is drawn, print where it stands once a
        HEARTBEAT_S, so a log of a long run is never silent for minutes."""
        self._extra = "  ".join(f"{k}={v}" for k, v in info.items())
        kwargs = {"total": total} if total is not None else {}
        self._progress.update(self._id, completed=completed, info=self._extra, **kwargs)
        self.heartbeat()

    def heartbeat(self) -> None:
        """Off a terminal, print where the bar stands if it has said nothing for HEARTBEAT_S."""
        now = time.monotonic()
        if not self._progress.console.is_terminal and now - self._said >= HEARTBEAT_S:
            self._said = now
            self._line("still running:", "after", f"  {self._extra}" if self._extra else "")

    def close(self) -> None:
        """Remove the bar; off a terminal, say in one line that it finished."""
        self._on_close(self)
        if not self._progress.console.is_terminal:
            self._line("finished", "in")
        self._progress.remove_task(self._id)

    def _line(self, state: str, since: str, tail: str = "") -> None:
        task = self._progress._tasks.get(self._id)
        if task is None:  # closed by the main thread while the heartbeat looked at it
            return
        done = f"{task.completed:g}" + ("" if task.total is None else f"/{task.total:g}")
        self._progress.console.print(
            f"{time.strftime('%H:%M:%S')} {state} {task.description} ({done}) {since} "
            f"{time.monotonic() - self._started:.0f} s{tail}",
            markup=False,
            highlight=False,
        )


class RichProgress:
    """The suite's Progress protocol on a live rich display."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._open: dict[int, _RichTask] = {}

    def task(self, description: str, total: float | None) -> _RichTask:
        task_id = self._progress.add_task(description, total=total, info="")
        task = _RichTask(self._progress, task_id, lambda t: self._open.pop(id(t), None))
        self._open[id(task)] = task
        return task

    def heartbeat(self) -> None:
        """Give every open bar its chance to say where it stands (`_RichTask.heartbeat`)."""
        for task in list(self._open.values()):
            task.heartbeat()

    def log(self, message: str) -> None:
        """One line of literal text above the bars (it names conditions, runs and files)."""
        self._progress.console.print(message, markup=False, highlight=False)


@contextmanager
def live_progress() -> Iterator[RichProgress]:
    """Bars for the duration of a run; they vanish when done so the summary stays readable."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=True,
    ) as progress:
        bars = RichProgress(progress)
        if console.is_terminal:
            yield bars
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(BEAT_CHECK_S):
                bars.heartbeat()

        beating = threading.Thread(target=beat, name="suite-heartbeat", daemon=True)
        beating.start()
        try:
            yield bars
        finally:
            stop.set()
            beating.join()


def summary_table(rows: Sequence[Row], title: str, norms: dict[str, str] | None = None) -> Table:
    """Condition × seed × role → test accuracy, time, trained or reused, one column per attack
    (success rate, and the median distortion in the norm `norms[attack]` where the attack minimises
    one) and the gradient-masking flag: narrow enough for a study's seven attacks in a log."""
    norms = norms or {}
    attack_names = list(dict.fromkeys(name for r in rows for name in r.attacks))
    table = Table(title=title, header_style="bold")
    for col in ("condition", "seed", "role", "test acc", "time", "status"):
        table.add_column(col, justify="right" if col in ("seed", "test acc", "time") else "left")
    for name in attack_names:
        norm = norms.get(name)
        table.add_column(
            f"{name}\nsuccess" + (f", median {NORM_LABELS[norm]}" if norm else ""), justify="right"
        )
    verified = list(dict.fromkeys(name for r in rows for name in r.verified))
    for name in verified:
        table.add_column(f"{name}\nmedian bound, solved", justify="right")
    show_masking = any(r.masking for r in rows)
    if show_masking:
        table.add_column("gradient\nmasking")
    for r in rows:
        status = r.status if r.status != Status.FINISHED else ("reused" if r.reused else "trained")
        cells = [
            r.condition,
            str(r.seed),
            r.role,
            pct(r.test_acc, 1),
            fixed(r.seconds, 0) + "s",
            status,
        ]
        for name in attack_names:
            s = r.attacks.get(name, {})
            cell = pct(s.get("success_rate", math.nan), 0)
            if name in norms and name in r.attacks:
                cell += " " + fixed(s.get(f"median_{norms[name]}", math.nan), 3)
            cells.append(cell if name in r.attacks else "")
        for name in verified:
            v = r.verified.get(name)
            solved = v.get("solved_fraction", math.nan) if v else math.nan
            cells.append(
                ""
                if v is None
                else fixed(v.get("median_lower", math.nan), 3)
                + ("" if not solved > 0 else f", {pct(solved, 0)}")
            )
        if show_masking:
            m = r.masking
            cells.append(Text("yes", "bold red") if m.get("flagged") else ("no" if m else ""))
        table.add_row(*map(plain, cells), style="red" if r.status == Status.FAILED else None)
    return table


def print_summary(rows: Sequence[Row], title: str, norms: dict[str, str] | None = None) -> None:
    """The run's summary table (`summary_table`), then each failure's reason on stderr."""
    console.print(summary_table(rows, title, norms))
    for r in rows:
        if r.status == Status.FAILED:
            err_console.print(
                f"[red]FAILED[/red] {escape(f'{r.condition} seed {r.seed}: {r.error}')}",
                highlight=False,
            )


def print_report_summary(data: ReportData, output: ReportOutput) -> None:
    """One rich table per attack (as in the report), the conclusion, and where the files went."""
    for attack, frame in output.summaries.items():
        table = Table(
            title=plain(f"{data.experiment}: {attack} (each row against its baseline)"),
            header_style="bold",
        )
        for col in frame.columns:
            table.add_column(plain(col))
        for _, row in frame.iterrows():
            table.add_row(*[plain(v) for v in row.tolist()])
        console.print(table)
    say(output.conclusion)
    for path in (output.markdown, output.pdf):
        if path is not None:
            say(f"wrote {path}")


def print_estimate(estimates: Sequence[JobEstimate], title: str) -> None:
    """The dry run's table: each job's parts, their passes and predicted time ("≤" where the loop
    may stop sooner, "not predicted" where its length depends on the data, "stored" where the store
    holds its result, which a run reuses), and the total of what is left."""
    table = Table(title=plain(title), header_style="bold")
    for col, justify in (("job", "left"), ("part", "left"), ("passes", "right"), ("time", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    unknown = stored = 0
    for job in estimates:
        name = f"{job.condition} seed {job.seed}"
        for work, seconds, reused in zip(job.parts, job.seconds, job.done, strict=True):
            bound = "≤ " if work.bound else ""
            unit = {"none": " fwd"}.get(work.grad, " bounds" if work.verify else "")
            passes = "—" if work.passes is None else f"{work.passes:,.0f}{unit}"
            if reused:
                stored += 1
                shown = "[dim]stored[/dim]"
            elif seconds is None:
                unknown += 1
                passes, shown = "—", "not predicted"
            else:
                shown = f"{bound}{duration(seconds)}"
            if work.passes is not None and work.bound and not work.verify:
                passes = bound + passes  # a loop that stops early; a solver's bound is its time
            table.add_row(plain(name), plain(work.what), passes, shown)
            name = ""
        left = "stored" if all(job.done) else duration(job.total)
        table.add_row("", "[bold]job[/bold]", "", f"[bold]{left}[/bold]")
    console.print(table)
    total = sum(job.total for job in estimates)
    bounded = sum(job.bounded for job in estimates)
    load, cores = os.getloadavg()[0], os.cpu_count()
    say(
        f"predicted: {duration(total)} for {len(estimates)} job(s) in one process, at the bare "
        f"network's speed measured now (load average {load:.1f} on {cores} cores)"
        + (f"; {duration(bounded)} of it is the budget of loops that stop early" if bounded else "")
        + (f"; {unknown} part(s) not predicted (their loops depend on the data)" if unknown else "")
        + (f"; {stored} part(s) already in the store, not counted" if stored else "")
    )

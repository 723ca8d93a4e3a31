"""Numbers and tables as the suite prints them: Markdown for the report and its conclusion, and
the numbers of the terminal summary (`suite.console`).

Imports no pandas at run time, so the console can use it without the report's dependencies.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# Characters that make Markdown syntax: links and images ([, ]), raw HTML and autolinks (<, >),
# entities (&), emphasis (*, and _ at a word's edge), code (`), table cells (|), and the escape
# itself. Names and notes come from manifests and from a shared store, so they are escaped.
_MARKDOWN = re.compile(r"[\\`*\[\]<>&|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def esc(value: object) -> str:
    """A value as literal Markdown text on one line (fit for a table cell, heading or caption):
    every character that would make a link, image, HTML, emphasis or a new cell is escaped."""
    text = " ".join(str(value).splitlines())
    return _MARKDOWN.sub(lambda m: "\\" + m.group(0), text)


def code(value: object) -> str:
    """A name as a Markdown code span: shown literally (no link or image can form inside it);
    backticks, which would end the span, become quotes."""
    return "`" + " ".join(str(value).splitlines()).replace("`", "'") + "`"


def md_table(frame: pd.DataFrame) -> list[str]:
    """A DataFrame of display strings as Markdown table lines."""
    if frame.empty:
        return ["(no rows)", ""]
    lines = ["| " + " | ".join(esc(c) for c in frame.columns) + " |"]
    lines.append("|" + "---|" * len(frame.columns))
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in frame.itertuples(False)]
    return [*lines, ""]


NORM_LABELS = {"l0": "L0", "l1": "L1", "l2": "L2", "linf": "L∞"}
"""How a norm is printed, in the report and on the terminal."""


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def num(x: float) -> str:
    """Three significant digits (whole numbers from 100 up); — for NaN, ∞ for +inf."""
    if _missing(x):
        return "—"
    if math.isinf(x):
        return "∞"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:#.3g}"


def ci(value: float, lo: float, hi: float) -> str:
    """`value [lo, hi]`, or the value alone when it has no interval."""
    if _missing(value):
        return "—"
    if math.isnan(lo):
        return num(value)
    return f"{num(value)} [{num(lo)}, {num(hi)}]"


def pct(x: float | None, decimals: int = 1) -> str:
    """A fraction as a percentage with `decimals` decimals (the report shows one); — for NaN."""
    return "—" if x is None or math.isnan(x) else f"{100 * x:.{decimals}f}%"


def fixed(x: float | None, decimals: int) -> str:
    """A number with `decimals` decimals; — for None or NaN."""
    return "—" if _missing(x) else f"{x:.{decimals}f}"


def pvalue(p: float) -> str:
    """A p-value to four decimals, floored at < 0.0001."""
    if p is None or math.isnan(p):
        return "—"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def duration(seconds: float) -> str:
    """`45 s`, `13 min`, `2 h 50 min`: a wall time as a log line says it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"

"""Numbers and tables as the report prints them (Markdown, shared by report and conclusion)."""

import math
import re

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


def num(x: float) -> str:
    """Three significant digits (whole numbers from 100 up); — for NaN, ∞ for +inf."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "∞"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:#.3g}"


def ci(value: float, lo: float, hi: float) -> str:
    """`value [lo, hi]`, or the value alone when it has no interval."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isnan(lo):
        return num(value)
    return f"{num(value)} [{num(lo)}, {num(hi)}]"


def pct(x: float) -> str:
    """A fraction as a percentage with one decimal."""
    return "—" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def pvalue(p: float) -> str:
    """A p-value to four decimals, floored at < 0.0001."""
    if p is None or math.isnan(p):
        return "—"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"

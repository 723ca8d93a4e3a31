"""Numbers and tables as the report prints them (Markdown, shared by report and conclusion)."""

import math

import pandas as pd


def esc(value: object) -> str:
    """A value as one Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


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

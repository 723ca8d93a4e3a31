"""Report figures: each function takes the tidy frames, writes one PNG and returns its path.

In the suite's one figure style (`suite.plots`), one colour per condition in the order given, so
a condition has the same colour in every figure.
"""

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

from suite import schema
from suite.plots import ImageRow, image_grid, save
from suite.report import stats
from suite.report.formatting import NORM_LABELS
from suite.report.frames import NORMS, is_fixed_budget

_ROLE_STYLE = {"teacher": "--"}
_RATIO_TICKS = (0.25, 0.5, 0.7, 0.8, 0.9, 1.0, 1.11, 1.25, 1.5, 2.0, 4.0)  # plain numbers, log axis
_ATTACK_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _colors(order: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One hue per trained condition (matplotlib's tab20 pairs): its model in the dark shade, its
    attacked teacher (`condition/teacher`) in the light one, so the two read as a pair."""
    pairs = matplotlib.colormaps["tab20"].colors
    bases = list(dict.fromkeys(c.split("/")[0] for c in order))
    return {c: pairs[(2 * bases.index(c.split("/")[0]) + ("/" in c)) % len(pairs)] for c in order}


def _dash(label: str) -> str:
    """Teachers dashed, every other model solid: told apart without their colour."""
    return "--" if "/" in label else "-"


def training_curves(curves: pd.DataFrame, path: Path, order: Sequence[str]) -> Path:
    """Validation and test accuracy per epoch per condition: mean over seeds, ±1 sd band; a model
    that logged one point is a marker. One logged past the last epoch of every curve (the final
    accuracy of a model trained on a synthetic set, at step 1,000) is left out: it would squash the
    curves against the axis."""
    colors = _colors(order)
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    points = curves.groupby(["condition", "role"], sort=False)["epoch"].nunique()
    curved = curves.set_index(["condition", "role"]).loc[points[points > 1].index]["epoch"]
    last = curved.max() if len(curved) else None
    for ax, metric, title in zip(
        axes, ("val_acc", "test_acc"), ("validation accuracy", "test accuracy"), strict=True
    ):
        rows = curves[curves["metric"] == metric]
        for (condition, role), group in rows.groupby(["condition", "role"], sort=False):
            single = group["epoch"].nunique() < 2
            if single and last is not None and group["epoch"].max() > last:
                continue
            by_epoch = group.groupby("epoch")["value"]
            mean, sd = by_epoch.mean() * 100, by_epoch.std(ddof=1).fillna(0) * 100
            label = condition if role in schema.ATTACKED_ROLES else f"{condition} ({role})"
            color = colors.get(condition, "k")
            style = "o" if single else _ROLE_STYLE.get(role, "-")
            ax.plot(mean.index, mean, style, color=color, label=label)
            ax.fill_between(mean.index, mean - sd, mean + sd, color=color, alpha=0.2, lw=0)
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    if axes[1].get_lines():
        axes[1].legend(fontsize=8, loc="lower right")
    return save(fig, path)


def distortion_ecdf(rows: pd.DataFrame, attack: str, path: Path, order: Sequence[str]) -> Path:
    """Per norm, the fraction of all attacked (seed, digit) rows of `attack` (`rows`) misclassified
    within distortion x: a digit misclassified clean counts at 0, a failure stays in the
    denominator."""
    colors = _colors(order)
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, len(NORMS), sharey=True)
    for ax, norm in zip(axes, NORMS, strict=True):
        for condition in order:
            values = stats.encoded_distortion(rows[rows["condition"] == condition], norm)
            if values.size == 0:
                continue
            finite = np.sort(values[np.isfinite(values)])
            y = np.arange(1, finite.size + 1) / values.size
            style = {"color": colors[condition], "linestyle": _dash(condition)}
            ax.step(np.r_[0, finite], np.r_[0, y], where="post", **style)
            ax.plot([], [], label=condition, **style)
        ax.set(title=f"{attack}: {NORM_LABELS[norm]}", xlabel=f"{NORM_LABELS[norm]} distortion")
        ax.grid(alpha=0.3)
    axes[0].set(ylabel="fraction misclassified", ylim=(0, 1.02))
    axes[-1].legend(fontsize=8, loc="lower right")
    return save(fig, path)


def robust_accuracy_curves(rows: pd.DataFrame, norm: str, path: Path, order: Sequence[str]) -> Path:
    """Robust accuracy vs ε in one norm (`rows`: the attack rows in it, `row_norms`), the standard
    definition: the fraction of ALL attacked (seed, digit) rows still classified correctly within
    ε (a digit misclassified clean never is).

    Minimal-perturbation attacks give a curve (minimal distortion > ε, failures never
    fooled); fixed-budget attacks give one marker per ε they ran at.
    """
    colors = _colors(order)
    names = list(dict.fromkeys(rows["attack"]))
    finite = stats.encoded_distortion(rows, norm)
    finite = finite[np.isfinite(finite)]
    top = float(finite.max()) * 1.05 if finite.size else 1.0
    grid = np.linspace(0, top, 400)
    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.subplots()
    attack_keys, shown = [], []
    for i, name in enumerate(names):
        mine = rows[rows["attack"] == name]
        fixed = is_fixed_budget(mine)
        # colour: the condition; marker (fixed budgets) or line style (minimal norms): the attack
        style = (
            {"marker": _MARKERS[i % len(_MARKERS)], "linestyle": ":", "linewidth": 0.8}
            if fixed
            else {"linestyle": _ATTACK_STYLES[i % len(_ATTACK_STYLES)]}
        )
        attack_keys.append(Line2D([], [], color="0.3", label=name, **style))
        for condition in order:
            cond_rows = mine[mine["condition"] == condition]
            if cond_rows.empty:
                continue
            shown.append(condition)
            if fixed:
                # `eps` is the smallest budget that fooled the row (NaN: none did)
                budgets = np.sort(cond_rows["eps"].dropna().unique())
                within = stats.encoded_distortion(cond_rows.assign(_eps=cond_rows["eps"]), "_eps")
                robust = [(within > e).mean() * 100 for e in budgets]
                ax.plot(budgets, robust, color=colors[condition], **style)
                continue
            values = stats.encoded_distortion(cond_rows, norm)
            robust = (values[None, :] > grid[:, None]).mean(axis=1) * 100
            ax.plot(grid, robust, color=colors[condition], **style)
    ax.set(
        xlabel=f"ε ({NORM_LABELS[norm]})",
        ylabel="robust accuracy (% of attacked digits)",
        ylim=(0, 102),
        title=f"Robust accuracy vs ε, {NORM_LABELS[norm]}",
    )
    ax.grid(alpha=0.3)
    condition_keys = [
        Line2D([], [], color=colors[c], linewidth=6, label=c) for c in dict.fromkeys(shown)
    ]  # teachers: the light shade of their student's hue
    for keys, title, where in (
        (condition_keys, "condition", "outside right upper"),
        (attack_keys, "attack", "outside right lower"),
    ):
        fig.legend(handles=keys, title=title, loc=where, fontsize=8, title_fontsize=8)
    return save(fig, path)


def distortion_boxplot(
    rows: pd.DataFrame, attack: str, norm: str, path: Path, order: Sequence[str]
) -> Path:
    """Box plot with jittered points of the distortions of every successful (seed, digit) row of
    `attack` (`rows`)."""
    colors = _colors(order)
    rows = rows[rows["success"].astype(bool)]
    present = [c for c in order if c in set(rows["condition"])]
    data = [rows.loc[rows["condition"] == c, norm].to_numpy(dtype=float) for c in present]
    fig = Figure(figsize=(max(4.0, 1.3 * len(present) + 2), 4))
    ax = fig.subplots()
    ax.boxplot(data, showfliers=False, widths=0.5)
    ax.set_xticks(range(1, len(present) + 1), present, rotation=20, ha="right")
    jitter = np.random.default_rng(0)
    for i, (condition, values) in enumerate(zip(present, data, strict=True), start=1):
        x = i + jitter.uniform(-0.15, 0.15, values.size)
        ax.plot(x, values, ".", color=colors[condition], alpha=0.5, ms=4)
    ax.set(ylabel=f"{NORM_LABELS[norm]} distortion", title=f"{attack}: per-sample distortion")
    ax.grid(alpha=0.3, axis="y")
    return save(fig, path)


def examples_grid(
    examples: dict[str, np.ndarray], attack: str, path: Path, order: Sequence[str]
) -> Path:
    """Clean images once, then per condition its adversarial images and perturbations (one colour
    scale for every perturbation), from the stored `[k, 3, H, W]` example arrays."""
    present = [c for c in order if f"{c}/{attack}" in examples]
    arrays = [np.asarray(examples[f"{c}/{attack}"], dtype=float) for c in present]
    k = min(a.shape[0] for a in arrays)
    vmax = max(float(np.nanmax(np.abs(a[:k, 2]))) for a in arrays) or 1.0
    rows = [ImageRow(images=arrays[0][:k, 0], label="clean")]
    for condition, a in zip(present, arrays, strict=True):
        rows.append(ImageRow(images=a[:k, 1], label=f"{condition}\nadversarial"))
        rows.append(
            ImageRow(
                images=a[:k, 2],
                label=f"{condition}\nperturbation",
                cmap="seismic",
                lo=-vmax,
                hi=vmax,
            )
        )
    return image_grid(rows, path, f"{attack}: same test samples in every condition")


def primary_forest(primary: pd.DataFrame, path: Path, margin: float, label: str) -> Path:
    """The answer's figure: per model, its primary-endpoint ratio to its baseline with the
    seed-level interval (log axis), the per-seed ratios as ticks, the equivalence band shaded and
    the verdict in its label. `primary` holds the pooled all-digit rows of the primary attack
    with `per_seed` (each seed's ratio) added."""
    colors = _colors(list(primary["condition"]))
    fig = Figure(figsize=(8, 0.45 * len(primary) + 1.4), layout="constrained")
    ax = fig.subplots()
    ax.axvspan(
        margin, 1 / margin, color="0.9", lw=0, label=f"equivalence [{margin:g}, {1 / margin:.3g}]"
    )
    ax.axvline(1.0, color="0.4", lw=0.8)
    rows = list(primary.itertuples())
    for y, r in enumerate(reversed(rows)):
        color = colors[r.condition]
        if np.isfinite(r.ratio_lo) and np.isfinite(r.ratio_hi):
            ax.plot([r.ratio_lo, r.ratio_hi], [y, y], color=color, lw=2.2, ls=_dash(r.condition))
        ax.plot([r.ratio], [y], "o", color=color, ms=7)
        seeds = [v for v in (r.per_seed if isinstance(r.per_seed, list) else []) if v > 0]
        ax.plot(seeds, [y] * len(seeds), "|", color="0.2", ms=9, alpha=0.7)
    ax.set_yticks(
        range(len(rows)),
        [f"{r.condition} vs {r.baseline}: {str(r.verdict).split(' (')[0]}" for r in reversed(rows)],
    )
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(_RATIO_TICKS))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{label}: ratio to the baseline (log scale; > 1: harder to attack)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1), frameon=False)
    return save(fig, path)


def distortion_brackets(
    verified: pd.DataFrame, best: pd.Series, norm: str, path: Path, order: Sequence[str]
) -> Path:
    """One panel per model: its correctly classified (seed, digit) rows of the `norm`
    verifications, sorted by the attacks' best distortion `best` (indexed by condition, seed,
    sample_index), with the certified radius below it, the exact minimum where solved (dots) and
    the bracket left open by the time limit (grey bars): where the truth lies, digit by digit.
    A norm no attack minimises (L1) is sorted by the first certified radius instead."""
    rows = verified[(verified["norm"] == norm) & (verified["status"] != "misclassified")]
    models = [c for c in order if c in set(rows["condition"])]
    fig = Figure(figsize=(3.2 * max(len(models), 1), 3.4))
    axes = np.atleast_1d(fig.subplots(1, max(len(models), 1), sharey=True))
    keys = ["condition", "seed", "sample_index"]
    for ax, model in zip(axes, models, strict=False):
        mine = rows[rows["condition"] == model]
        attacked = best.reindex(pd.MultiIndex.from_frame(mine[keys].drop_duplicates()))
        by, key = "the attacks' best", attacked
        if attacked.isna().all():  # no attack minimises this norm: the certificate orders them
            first = mine[mine["kind"] == "certified"].drop_duplicates(keys)
            radius = pd.Series(first["lower"].to_numpy(), pd.MultiIndex.from_frame(first[keys]))
            by, key = "the certified radius", radius.reindex(attacked.index)
        ranked = attacked.reindex(key.sort_values(na_position="last").index)
        x = pd.Series(np.arange(len(ranked)), index=ranked.index)
        if ranked.notna().any():
            ax.plot(x, ranked.to_numpy(), "-", color="k", lw=1, label="attacks' best")
        for name, group in mine.groupby("verification", sort=False):
            digits = pd.MultiIndex.from_frame(group[keys])
            at = x.reindex(digits).to_numpy()
            if group["kind"].iloc[0] == "certified":
                lower = pd.Series(group["lower"].to_numpy(), index=at).sort_index()
                ax.plot(lower.index, lower.to_numpy(), "-", lw=1, label=f"{name} (certified)")
                continue
            solved = group["solved"].astype(bool).to_numpy()
            ax.plot(at[solved], group["value"].to_numpy()[solved], ".", ms=3, label=f"{name}")
            found = ranked.reindex(digits).to_numpy(dtype=float)
            upper = np.fmin(group["upper"].to_numpy(dtype=float), found)  # the truth is below both
            ax.vlines(at[~solved], group["lower"].to_numpy()[~solved], upper[~solved],
                      color="0.6", lw=1, label=f"{name}: open bracket")  # fmt: skip
        ax.set(title=model, xlabel=f"digit, by {by}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{NORM_LABELS[norm]} distortion")
    fullest = max(axes, key=lambda ax: len(ax.get_legend_handles_labels()[0]))
    fullest.legend(fontsize=7, loc="upper left")  # where every kind of series is drawn
    return save(fig, path)

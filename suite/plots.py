"""The suite's one figure style, shared by the pipeline's PNGs and the report's figures.

Built on `matplotlib.figure.Figure` (Agg canvas, no pyplot state, no global backend), and
importing only numpy and matplotlib, so a training or attack job can draw without the report's
dependencies.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

DPI = 150
# Every string drawn comes from data (condition, attack and experiment names from a manifest or a
# shared store), and the suite draws no formulas: `$…$` must stay text, never reach mathtext's parser.
matplotlib.rcParams["text.parse_math"] = False


def save(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG at `path` (creating its folder), cropped to what is drawn."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


@dataclass(frozen=True)
class ImageRow:
    """One row of an image grid: images `[k, H, W]` in one colour map, the label at its left,
    and a title over each image. `lo` and `hi` bound the colour scale: one value for the row,
    or one per image."""

    images: np.ndarray
    label: str = ""
    cmap: str = "gray"
    lo: float | Sequence[float] = 0.0
    hi: float | Sequence[float] = 1.0
    titles: Sequence[str] = ()


def image_grid(rows: Sequence[ImageRow], path: Path, title: str = "") -> Path:
    """Draw `rows` one under another (one inch per image; a row shorter than the longest leaves
    its last cells blank) and write the PNG to `path`: every image grid of the suite."""
    cols = max([1, *(len(row.images) for row in rows)])
    titled = any(len(row.titles) for row in rows)  # titles need room between the rows
    fig = Figure(figsize=(1.0 * cols + 1.6, (1.3 if titled else 1.0) * len(rows)))
    space = {"hspace": 0.5} if titled else None
    axes = np.asarray(fig.subplots(len(rows), cols, squeeze=False, gridspec_kw=space))
    for r, row in enumerate(rows):
        lo = np.broadcast_to(row.lo, len(row.images))
        hi = np.broadcast_to(row.hi, len(row.images))
        for j in range(cols):
            ax = axes[r, j]
            if j >= len(row.images):
                ax.axis("off")
                continue
            ax.imshow(row.images[j], cmap=row.cmap, vmin=lo[j], vmax=hi[j])
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row.titles):
                ax.set_title(row.titles[j], fontsize=8)
        axes[r, 0].set_ylabel(row.label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)

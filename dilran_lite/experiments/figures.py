"""The results chapters' figures: test pairs fused by each method, with zoomed crops, and each
method's scores over the best of every metric."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_write
from ..metrics import to_uint8
from .plan import SplitRuns
from .reference import PAPER_STRATEGY
from .runs import Pairs

__all__ = ["fusion_grid", "split_figure", "score_ratio_figure"]


def _zoom_window(a8: np.ndarray, b8: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window with the most gradient in both sources."""
    g = np.zeros(a8.shape, dtype=np.float64)
    for x in (a8.astype(np.float64), b8.astype(np.float64)):
        gy, gx = np.gradient(x)
        g += np.hypot(gx, gy) / (x.std() + 1e-6)
    h, w = g.shape
    best, corner, step = -1.0, (0, 0), max(1, size // 4)
    for top in range(0, max(1, h - size + 1), step):
        for left in range(0, max(1, w - size + 1), step):
            v = g[top : top + size, left : left + size].sum()
            if v > best:
                best, corner = v, (top, left)
    return corner


def _draw_pair(axes: np.ndarray, p: int, pair: tuple, labels: list[str], columns: dict) -> None:
    """Row ``2 p`` of ``axes``: the pair's sources and fused images with the zoom window marked;
    row ``2 p + 1``: the zoomed crops."""
    from matplotlib import patches

    a, b, name = pair
    a8, b8 = to_uint8(a), to_uint8(b)
    size = max(16, min(a8.shape) // 4)
    top, left = _zoom_window(a8, b8, size)
    imgs = [a8, b8, *(columns[c][name] for c in columns)]
    for c, (lab, img) in enumerate(zip(labels, imgs)):
        ax, axz = axes[2 * p, c], axes[2 * p + 1, c]
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.add_patch(
            patches.Rectangle(
                (left - 0.5, top - 0.5), size, size, fill=False, edgecolor="red", linewidth=0.8
            )
        )
        axz.imshow(
            img[top : top + size, left : left + size],
            cmap="gray",
            vmin=0,
            vmax=255,
            interpolation="nearest",
        )
        if p == 0:
            ax.set_title(lab, fontsize=10)
        if c == 0:
            ax.set_ylabel(Path(name).stem, fontsize=10)
            axz.set_ylabel("zoom", fontsize=10)
        for x in (ax, axz):
            x.set_xticks([])
            x.set_yticks([])


def _save_png(fig, path: str, colors: int = 96) -> None:
    """Save the figure ``fig`` as a PNG with an adaptive palette: grey images and red boxes need
    few colours, and the file becomes a fraction of the size (the figures are committed)."""
    from PIL import Image

    fig.savefig(path, dpi=72, format="png")
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    small.save(path, format="PNG", optimize=True)


GRID_WIDTH_PX = 730
"""The width of the saved fusion grid: the book's text column, so that it is shown unscaled
and its 10 px labels stay 10 px."""


def fusion_grid(
    pairs: Pairs, columns: dict[str, dict[str, np.ndarray]], path: str | os.PathLike, title: str
) -> Path:
    """Save a grid: for each pair, a row of full images (MRI, CT, each method's fusion) with
    the zoom window marked, then a row of the zoomed crops. ``columns``: label -> pair -> 8-bit.
    The PNG is :data:`GRID_WIDTH_PX` wide (72 dpi: a point of type is a pixel)."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    labels = ["MRI", "CT", *columns]
    ncol, nrow = len(labels), 2 * len(pairs)
    side = GRID_WIDTH_PX / 72 / ncol  # inches per panel
    fig = Figure(figsize=(GRID_WIDTH_PX / 72, side * nrow + 0.5))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for p, pair in enumerate(pairs):
        _draw_pair(axes, p, pair, labels, columns)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return atomic_write(path, lambda tmp: _save_png(fig, tmp))


def split_figure(sr: SplitRuns, out: str | os.PathLike) -> Path:
    """``fusion_grid_<split>.png`` in ``out``: three test pairs spread over the split, by the
    baselines, DILRAN as in the paper and the best variant."""
    pairs = sr.pairs
    idx = np.linspace(0, len(pairs) - 1, min(3, len(pairs))).round().astype(int)
    shown = [pairs[i] for i in dict.fromkeys(idx.tolist())]
    cols = {
        "average": sr.runs[(None, "average")].fused,
        "maximum": sr.runs[(None, "max")].fused,
        "Laplacian": sr.runs[(None, "laplacian")].fused,
    }
    paper_w = sr.plan["paper_model"]
    if paper_w:
        cols[f"DILRAN\n({PAPER_STRATEGY})"] = sr.runs[(paper_w, PAPER_STRATEGY)].fused
    if sr.selection:
        bw, bs = sr.selection["weights"], sr.selection["strategy"]
        cols[f"best variant\n({bs})"] = sr.runs[(bw, bs)].fused
    title = (
        f"{len(shown)} of the {len(pairs)} {sr.test_split} pairs; "
        "below each, the zoomed crop marked in red"
    )
    return fusion_grid(shown, cols, Path(out) / f"fusion_grid_{sr.split}.png", title)


def score_ratio_figure(
    table: pd.DataFrame,
    metrics: list[str],
    title: str,
    rows: list | None = None,
    lower_is_better: tuple[str, ...] = (),
    width_in: float = 7.3,
):
    """A heat map of each method's score over the best score of its column (1: the best), one
    row per method of ``table`` (index: method names; ``rows``: those to show, None: all), one
    column per metric; the ratios are printed in the cells and a colour bar gives the scale.
    For ``lower_is_better`` columns the ratio is best / score. Returns a matplotlib Figure
    (no pyplot: the caller's backend is left alone), ``width_in`` inches wide at 100 dpi."""
    from matplotlib.figure import Figure

    data = table.loc[list(table.index if rows is None else rows), list(metrics)].astype(float)
    ratio = data.copy()
    for m in metrics:
        col = data[m]
        ratio[m] = col.min() / col if m in lower_is_better else col / col.max()
    fig = Figure(figsize=(width_in, 0.9 + 0.3 * len(ratio)), dpi=100)
    ax = fig.add_subplot()
    low = float(np.nanmin(ratio.to_numpy())) if ratio.notna().any().any() else 0.0
    im = ax.imshow(ratio.to_numpy(), cmap="viridis", vmin=min(low, 0.99), vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(metrics)), [m.replace("_", "\n") for m in metrics], fontsize=9)
    ax.set_yticks(range(len(ratio)), [str(r) for r in ratio.index], fontsize=9)
    ax.xaxis.tick_top()
    for (i, j), v in np.ndenumerate(ratio.to_numpy()):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if v > low + 0.6 * (1 - low) else "white")
    ax.set_title(title, fontsize=10, pad=30)
    bar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("score / best score of the metric", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig

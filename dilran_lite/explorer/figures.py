"""What the explorer shows: images as PNG/JPEG bytes, its panels, matplotlib figures, the table.

Nothing here holds state or imports the rest of the explorer: :func:`panel_images` takes any
explorer object with ``sources``, ``fused_luma`` and ``update`` (a
:class:`~dilran_lite.explorer.FusionExplorer`). Images are (H, W), (1, H, W) or RGB (3, H, W)
arrays or tensors with values in [0, 1] unless said otherwise.
"""

from __future__ import annotations

import functools
import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "VIEWS",
    "image_bytes",
    "metrics_table_html",
    "panel_images",
    "result_figure",
    "w1_grid_figure",
    "weight_map",
]

VIEWS: tuple[str, ...] = ("W1 map", "fused - first", "fused - second", "fused - auto")
"""What the explorer's fourth panel can show."""


def _weight_summary(w1: torch.Tensor | None, w2: torch.Tensor | None = None) -> str:
    if w1 is None:
        return "no weights (element-wise max)"
    if w1.numel() == 1:
        w2v = 1 - float(w1) if w2 is None else float(w2)
        return f"W1 = {float(w1):.3f}, W2 = {w2v:.3f} (one number each for the pair)"
    lo, hi = float(w1.min()), float(w1.max())
    return f"W1: a map, mean {float(w1.mean()):.3f}, range {lo:.2f}-{hi:.2f}; W2 = 1 - W1"


def metrics_table_html(metrics: dict[str, float], weights: tuple | None = None) -> str:
    """A small HTML table of metric values (3 decimals), with a line on the weights if given."""
    head = "".join(f"<th>{html.escape(k)}</th>" for k in metrics)
    row = "".join(f"<td>{v:.3f}</td>" for v in metrics.values())
    caption = ""
    if weights is not None:
        caption = f"<caption>{html.escape(_weight_summary(*weights))}</caption>"
    return f'<table class="dilran-metrics">{caption}<tr>{head}</tr><tr>{row}</tr></table>'


# --- images as bytes (no matplotlib on the interactive path) ---------------------------------


@functools.lru_cache(maxsize=4)
def _lut(cmap: str) -> np.ndarray:
    """A matplotlib colour map as a (256, 3) uint8 table (made once)."""
    from matplotlib import colormaps

    return (colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def _to_uint8(x: torch.Tensor | np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    arr = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = np.squeeze(arr)
    if arr.ndim == 3:  # (3, H, W) -> (H, W, 3)
        arr = np.moveaxis(arr, 0, -1)
    return (np.clip((arr - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)


def _zoom(arr: np.ndarray, zoom: int) -> np.ndarray:
    """The centre 1/zoom of an (H, W[, 3]) array, enlarged back by pixel repetition."""
    if zoom <= 1:
        return arr
    h, w = arr.shape[:2]
    ch, cw = max(1, h // zoom), max(1, w // zoom)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = arr[top : top + ch, left : left + cw]
    return crop.repeat(zoom, axis=0).repeat(zoom, axis=1)


def image_bytes(
    x: torch.Tensor | np.ndarray,
    fmt: str = "png",
    cmap: str | None = None,
    lo: float = 0.0,
    hi: float = 1.0,
    zoom: int = 1,
    quality: int = 85,
) -> bytes:
    """An image (H, W), (1, H, W) or RGB (3, H, W) as PNG or JPEG bytes, values [lo, hi] -> 0..255.

    ``cmap`` colours a one-channel image with a matplotlib colour map; ``zoom`` shows the centre
    1/zoom of the image enlarged. PNG uses fast compression (level 1).
    """
    from PIL import Image

    u8 = _to_uint8(x, lo, hi)
    if cmap is not None and u8.ndim == 2:
        u8 = _lut(cmap)[u8]
    img = Image.fromarray(_zoom(u8, int(zoom)))
    buf = io.BytesIO()
    if fmt.lower() in ("jpg", "jpeg"):
        img.save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def weight_map(w1: torch.Tensor | None, shape: tuple[int, int]) -> np.ndarray | None:
    """W1 as an (H, W) float array: a map reshaped, one global number filled in; None stays."""
    if w1 is None:
        return None
    w = w1.detach().cpu().float()
    return (w.reshape(shape) if w.numel() > 1 else torch.full(shape, float(w))).numpy()


# --- matplotlib figures for the notebook's static cells ---------------------------------------


def result_figure(
    a: torch.Tensor,
    b: torch.Tensor,
    fused: torch.Tensor,
    weights: tuple | None = None,
    names: Sequence[str] = ("MRI", "CT"),
    title: str = "fused",
):
    """A matplotlib Figure (made without pyplot): first image | second image | fused | W1.

    The last panel shows W1: the map of a per-pixel strategy, a uniform panel for a global
    weight, or a note when there is none. Display it with ``IPython.display.display(fig)``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 2.9), layout="constrained")
    axes = fig.subplots(1, 4)
    for ax, img, t in zip(axes, (a, b, fused), (*names, title)):
        ax.imshow(_to_uint8(img), cmap="gray", vmin=0, vmax=255)
        ax.set_title(t, fontsize=10)
    w1 = None if weights is None else weights[0]
    ax = axes[3]
    if w1 is None:
        ax.text(0.5, 0.5, "no weights\n(element-wise max)", ha="center", va="center")
        ax.set_title("W1", fontsize=10)
    else:
        im = ax.imshow(weight_map(w1, tuple(fused.shape[-2:])), cmap="viridis", vmin=0, vmax=1)
        fig.colorbar(im, ax=ax, fraction=0.046)
        kind = "W1 map" if w1.numel() > 1 else f"W1 = {float(w1):.3f} everywhere"
        ax.set_title(kind, fontsize=10)
    for ax in axes:
        ax.set_axis_off()
    return fig


def w1_grid_figure(
    a: torch.Tensor,
    b: torch.Tensor,
    images: Sequence[torch.Tensor],
    w1_values: Sequence[float],
    names: Sequence[str] = ("MRI", "CT"),
):
    """A Figure (without pyplot): the two sources, then the fused image for each W1 value."""
    from matplotlib.figure import Figure

    n = 2 + len(images)
    fig = Figure(figsize=(min(10, 1.8 * n), 2.3), layout="constrained")
    axes = fig.subplots(1, n)
    panels = [(a, names[0]), (b, names[1])]
    panels += [(img, f"W1 = {w:g}") for img, w in zip(images, w1_values)]
    for ax, (img, t) in zip(axes, panels):
        ax.imshow(_to_uint8(img), cmap="gray", vmin=0, vmax=255)
        ax.set_title(t, fontsize=9)
        ax.set_axis_off()
    return fig


# --- the widget's four panels -----------------------------------------------------------------


def panel_images(
    ex: Any,
    pair_index: int,
    result: Any,
    view: str = "W1 map",
    zoom: int = 1,
    strategy: str = "sfnn-max",
    temperature: float | None = None,
    which: Sequence[str] = ("first", "second", "fused", "view"),
) -> dict[str, bytes]:
    """PNG bytes of the panels named in ``which`` (``first``, ``second``, ``fused``, ``view``)
    for an :class:`~dilran_lite.explorer.ExplorerResult` of pair ``pair_index`` of ``ex``."""
    p = ex.sources(pair_index)
    out = {}
    if "first" in which:
        out["first"] = image_bytes(p.a, zoom=zoom)
    if "second" in which:
        out["second"] = image_bytes(p.b, zoom=zoom)
    if "fused" in which:
        out["fused"] = image_bytes(result.fused, zoom=zoom)
    if "view" in which:
        out["view"] = _view_image(ex, pair_index, result, view, zoom, strategy, temperature)
    return out


def _view_image(
    ex: Any,
    pair_index: int,
    result: Any,
    view: str,
    zoom: int,
    strategy: str,
    temperature: float | None,
) -> bytes:
    """The fourth panel: the W1 map (viridis, 0..1) or a difference (RdBu, -0.5..0.5)."""
    p = ex.sources(pair_index)
    y = ex.fused_luma(result)
    w1 = result.weights[0]
    if view == "W1 map" and (w1 is None or w1.numel() == 1):  # uniform: a small image
        value = 0.5 if w1 is None else float(w1)
        return image_bytes(np.full((8, 8), value), cmap=None if w1 is None else "viridis")
    if view == "W1 map":
        return image_bytes(weight_map(w1, tuple(y.shape[-2:])), cmap="viridis", zoom=zoom)
    if view == "fused - first":
        ref = p.a
    elif view == "fused - second":
        ref = p.y
    elif view == "fused - auto":
        ref = ex.fused_luma(ex.update(pair_index, strategy, None, temperature))
        ex.last_result = result
    else:
        raise ValueError(f"unknown view {view!r}; choose from {VIEWS}")
    return image_bytes(y - ref, cmap="RdBu_r", lo=-0.5, hi=0.5, zoom=zoom)

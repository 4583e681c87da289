"""The interactive fusion explorer of chapter 7, testable without a browser.

:class:`FusionExplorer` holds a model and a paired dataset. It encodes each pair once (the features
are cached per pair), then fuses the cached features with any strategy of
:mod:`dilran_lite.fusion`, optionally with a manual weight ``W1`` that replaces the strategy's own,
decodes, and scores the result with a few cheap metrics of :mod:`dilran_lite.metrics`.
:meth:`FusionExplorer.update` is the whole logic of the widget's callback;
:meth:`FusionExplorer.widget` only wires ipywidgets controls to it.

:func:`w1_grid` is the static counterpart for readers of the online book (no kernel there): the
fused images for a list of fixed ``W1`` values.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from .fusion import STRATEGIES, fuse_features
from .metrics import compute_metrics

__all__ = [
    "DEFAULT_METRICS",
    "ExplorerResult",
    "FusionExplorer",
    "metrics_table_html",
    "result_figure",
    "w1_grid",
    "w1_grid_figure",
]

DEFAULT_METRICS: tuple[str, ...] = ("PSNR", "SSIM", "EN", "MI", "Qabf")
"""Cheap metrics (a few ms each at 256 x 256) shown by the explorer."""


class ExplorerResult(NamedTuple):
    """What :meth:`FusionExplorer.update` returns (a tuple: ``fused, weights, metrics = ...``).

    ``fused``: the fused image (1, H, W) in [0, 1] on the CPU. ``weights``: ``(w1, w2)`` as the
    strategy returned them (one number per pair, shape (1,), for SFNN and the averages; a map
    (1, 1, H, W) for FER, FL1N and sfnn-spatial; ``(None, None)`` for ``max``), or the manual
    ones. ``metrics``: metric name -> value.
    """

    fused: torch.Tensor
    weights: tuple
    metrics: dict[str, float]


def _fuse_decode(
    model: torch.nn.Module,
    f1: torch.Tensor,
    f2: torch.Tensor,
    strategy: str,
    w1: float | None,
) -> tuple[torch.Tensor, tuple]:
    """Fuse features (1, C, H, W) and decode: -> fused image (1, H, W) clamped, weights (CPU).

    A manual ``w1`` replaces the strategy's weights (``w2 = 1 - w1``), so the fused features are
    ``w1 * f1 + (1 - w1) * f2`` whatever the strategy; ``max``, which has no weights to replace,
    becomes that weighted sum as well.
    """
    if w1 is not None and strategy == "max":
        strategy = "average"
    weights = None if w1 is None else float(w1)
    with torch.no_grad():
        fused_f, (wa, wb) = fuse_features(f1, f2, strategy, weights=weights, return_weights=True)
        out = model.decode(fused_f).clamp(0, 1)
    w = tuple(None if x is None else torch.as_tensor(x).detach().cpu() for x in (wa, wb))
    return out[0].cpu(), w


def w1_grid(
    model: torch.nn.Module,
    a: torch.Tensor,
    b: torch.Tensor,
    w1_values: Sequence[float],
    strategy: str = "sfnn-max",
) -> list[torch.Tensor]:
    """Fused images (1, H, W) of ``a`` and ``b`` for each fixed ``W1`` in ``w1_values``.

    ``a`` and ``b`` are (1, H, W) or (1, 1, H, W) images in [0, 1]; they are encoded once, and each
    ``W1`` replaces the strategy's weight (``W2 = 1 - W1``) before decoding. With one global
    weight per pair, the strategy only matters through this override, so every strategy but
    ``max`` (treated as the plain weighted sum) gives the same images.
    """
    f1, f2 = _encode_pair(model, a, b)
    return [_fuse_decode(model, f1, f2, strategy, float(w))[0] for w in w1_values]


def _encode_pair(
    model: torch.nn.Module, a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images through the encoder in one batch: -> f1, f2 of shape (1, C, H, W)."""
    a = a if a.ndim == 4 else a.unsqueeze(0)
    b = b if b.ndim == 4 else b.unsqueeze(0)
    with torch.no_grad():
        f = model.encode(torch.cat([a, b]))
    return f[:1], f[1:]


def _weight_summary(w1: torch.Tensor | None) -> str:
    if w1 is None:
        return "no weights (element-wise max)"
    if w1.numel() == 1:
        return f"W1 = {float(w1):.3f} (one number for the pair)"
    lo, hi = float(w1.min()), float(w1.max())
    return f"W1: a map, mean {float(w1.mean()):.3f}, range {lo:.2f}-{hi:.2f}"


def metrics_table_html(metrics: dict[str, float], weights: tuple | None = None) -> str:
    """A small HTML table of metric values (3 decimals), with a line on the weights if given."""
    head = "".join(f"<th>{html.escape(k)}</th>" for k in metrics)
    row = "".join(f"<td>{v:.3f}</td>" for v in metrics.values())
    caption = ""
    if weights is not None:
        caption = f"<caption>{html.escape(_weight_summary(weights[0]))}</caption>"
    return f'<table class="dilran-metrics">{caption}<tr>{head}</tr><tr>{row}</tr></table>'


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
        ax.imshow(img.squeeze().detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(t, fontsize=10)
    w1 = None if weights is None else weights[0]
    ax = axes[3]
    if w1 is None:
        ax.text(0.5, 0.5, "no weights\n(element-wise max)", ha="center", va="center")
        ax.set_title("W1", fontsize=10)
    else:
        shape = fused.shape[-2:]
        w_map = w1.squeeze() if w1.numel() > 1 else torch.full(shape, float(w1))
        im = ax.imshow(w_map.detach().cpu().numpy(), cmap="viridis", vmin=0, vmax=1)
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
        ax.imshow(img.squeeze().detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(t, fontsize=9)
        ax.set_axis_off()
    return fig


class FusionExplorer:
    """Fuse the pairs of a dataset with any strategy and any W1, caching the features per pair.

    Parameters
    ----------
    model:
        A :class:`dilran_lite.model.DILRAN` (any object with ``encode`` and ``decode``).
    dataset:
        Items ``(mri, other, name)`` with images (1, H, W) in [0, 1], e.g. from
        :func:`dilran_lite.data.load_pairs` or a :class:`dilran_lite.phantom.PhantomDataset`.
    indices:
        The dataset indices offered (default: all). ``pair_index`` counts within them.
    strategies:
        Strategy names offered by the widget (default: every registered one).
    metrics:
        Metric names of :func:`dilran_lite.metrics.compute_metrics` computed on each update.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        dataset: Any,
        indices: Sequence[int] | None = None,
        strategies: Sequence[str] | None = None,
        metrics: Sequence[str] = DEFAULT_METRICS,
    ) -> None:
        self.model = model.eval()
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else list(indices)
        if not self.indices:
            raise ValueError("FusionExplorer needs at least one pair")
        self.strategies = list(STRATEGIES) if strategies is None else list(strategies)
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; choose from {sorted(STRATEGIES)}")
        self.metric_names = list(metrics)
        modalities = getattr(dataset, "modalities", ("MRI", "CT"))
        self.modalities: tuple[str, str] = (str(modalities[0]), str(modalities[1]))
        self._images: dict[int, tuple[torch.Tensor, torch.Tensor, str]] = {}
        self._features: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.controls: dict[str, Any] = {}
        self.last_result: ExplorerResult | None = None
        self.renders = 0

    def __len__(self) -> int:
        return len(self.indices)

    def pair(self, pair_index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        """The images ``(a, b)`` (1, H, W) and name of pair ``pair_index`` (cached)."""
        if not 0 <= pair_index < len(self.indices):
            raise IndexError(f"pair_index {pair_index} out of range (0..{len(self.indices) - 1})")
        if pair_index not in self._images:
            a, b, name = self.dataset[self.indices[pair_index]]
            self._images[pair_index] = (a, b, str(name))
        return self._images[pair_index]

    def names(self) -> list[str]:
        """The names of the offered pairs, in order (reads the images of each pair once)."""
        return [self.pair(i)[2] for i in range(len(self))]

    def features(self, pair_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Deep features ``f1, f2`` (1, C, H, W) of a pair: encoded on first use, then cached."""
        if pair_index not in self._features:
            a, b, _ = self.pair(pair_index)
            self._features[pair_index] = _encode_pair(self.model, a, b)
        return self._features[pair_index]

    def update(
        self, pair_index: int = 0, strategy: str = "sfnn-max", w1: float | None = None
    ) -> ExplorerResult:
        """Fuse pair ``pair_index`` with ``strategy``: the widget's callback, without a widget.

        ``w1=None`` ("auto") uses the strategy's own weights (for SFNN, Eq. 3-5 with the strategy's
        phi, e.g. ``sfnn-max2``); a number replaces them with ``W1 = w1``, ``W2 = 1 - w1``.
        Returns :class:`ExplorerResult` ``(fused, weights, metrics)``.
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
        if w1 is not None and not 0.0 <= float(w1) <= 1.0:
            raise ValueError(f"w1 must lie in [0, 1], got {w1}")
        a, b, _ = self.pair(pair_index)
        f1, f2 = self.features(pair_index)
        fused, weights = _fuse_decode(self.model, f1, f2, strategy, w1)
        metrics = compute_metrics(a, b, fused, names=self.metric_names) if self.metric_names else {}
        self.last_result = ExplorerResult(fused, weights, metrics)
        return self.last_result

    def render(self, pair_index: int, result: ExplorerResult, strategy: str = "") -> tuple:
        """The figure of ``result`` as PNG bytes and its metrics table as HTML."""
        import io

        import matplotlib.pyplot as plt

        a, b, name = self.pair(pair_index)
        title = f"fused ({strategy})" if strategy else "fused"
        fig = result_figure(a, b, result.fused, result.weights, self.modalities, title)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=72, bbox_inches="tight")
        plt.close(fig)
        table = f"<b>{html.escape(name)}</b>" + metrics_table_html(result.metrics, result.weights)
        self.renders += 1
        return buf.getvalue(), table

    def widget(self, pair_index: int = 0, strategy: str = "sfnn-max"):
        """The explorer as ipywidgets: pair and strategy menus, a W1 slider with an 'auto' box,
        an Image widget with the figure (sources | fused | W1) and an HTML metrics table.

        Every change calls :meth:`update` and redraws. The first drawing happens here, so the
        widget state saved in a notebook already shows a result (the static book page has no
        kernel: there, only this first state is visible). The controls are kept in
        :attr:`controls` (``pair``, ``strategy``, ``w1``, ``auto``, ``image``, ``table``). No
        Output widget is used: the figure is PNG bytes set on an Image widget, so nothing is
        captured from the kernel's display machinery while a callback runs.
        """
        import ipywidgets as widgets

        names = [self.pair(i)[2] for i in range(len(self))]
        first = self.update(pair_index, strategy)  # drawn before any control is observed
        w_first = first.weights[0]
        scalar = w_first is not None and w_first.numel() == 1
        pair = widgets.Dropdown(
            options=[(n, i) for i, n in enumerate(names)], value=pair_index, description="pair"
        )
        strat = widgets.Dropdown(options=self.strategies, value=strategy, description="strategy")
        w1 = widgets.FloatSlider(
            value=round(float(w_first), 2) if scalar else 0.5,
            min=0.0,
            max=1.0,
            step=0.05,
            description="W1",
            disabled=True,
            continuous_update=False,
            readout_format=".2f",
        )
        auto = widgets.Checkbox(value=True, description="auto: the strategy's W1", indent=False)
        image = widgets.Image(format="png")
        table = widgets.HTML()
        self.controls = {
            "pair": pair,
            "strategy": strat,
            "w1": w1,
            "auto": auto,
            "image": image,
            "table": table,
        }
        busy = {"now": False}

        def draw(result: ExplorerResult) -> None:
            image.value, table.value = self.render(pair.value, result, strat.value)

        def redraw(change: Any = None) -> None:
            if busy["now"]:
                return
            busy["now"] = True
            try:
                manual = None if auto.value else float(w1.value)
                result = self.update(pair.value, strat.value, w1=manual)
                w1.disabled = auto.value
                w_auto = result.weights[0]
                if auto.value and w_auto is not None and w_auto.numel() == 1:
                    w1.value = round(float(w_auto), 2)  # show the strategy's W1 on the slider
                draw(result)
            finally:
                busy["now"] = False

        draw(first)
        for control in (pair, strat, w1, auto):
            control.observe(redraw, names="value")
        return widgets.VBox([widgets.HBox([pair, strat]), widgets.HBox([w1, auto]), image, table])

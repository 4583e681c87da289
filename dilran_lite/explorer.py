"""The interactive fusion explorer of chapter 7, testable without a browser.

:class:`FusionExplorer` holds a model and paired images (MRI-CT, and MRI-PET/SPECT through the Y
channel of :mod:`dilran_lite.color`). It caches, per pair, the deep features; per (pair,
strategy), the strategy's own weights; per (pair, weights), the decoded image and its metrics.
:meth:`FusionExplorer.update` is the whole logic of the widget's callback;
:meth:`FusionExplorer.widget` wires ipywidgets controls (7.7 and 8) to it and updates its images in
place (new PNG bytes on ``ipywidgets.Image`` widgets; no figure is drawn).

A slider move with one global weight decodes ``W1 f1 + W2 f2`` exactly, but skips the first
convolution of the reconstructor: that convolution is linear, so its outputs for ``f1`` and ``f2``
are computed once per pair and blended (``conv(W1 f1 + W2 f2) = W1 conv(f1) + W2 conv(f2)``
before the bias); everything after it (ReLUs included) runs on every move.

:func:`static_explorer_html` is the counterpart for readers of the online book (no kernel): the
fused images precomputed over the strategies and a W1 grid, swapped by a small inline script.
"""

from __future__ import annotations

import base64
import copy
import functools
import html
import io
import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .color import rgb_to_ycbcr, ycbcr_to_rgb
from .fusion import STRATEGIES, fuse_features
from .metrics import compute_metrics

__all__ = [
    "DEFAULT_METRICS",
    "STATIC_STRATEGIES",
    "ExplorerResult",
    "FusionExplorer",
    "image_bytes",
    "metrics_table_html",
    "result_figure",
    "static_explorer_html",
    "w1_grid",
    "w1_grid_figure",
]

DEFAULT_METRICS: tuple[str, ...] = ("PSNR", "SSIM", "EN", "MI", "Qabf")
"""Cheap metrics (a few ms each at 256 x 256) shown by the explorer."""

STATIC_STRATEGIES: tuple[str, ...] = ("sfnn-max", "sfnn-max2", "fer", "fl1n", "sfnn-spatial")
"""The strategies precomputed by :func:`static_explorer_html` by default."""

VIEWS: tuple[str, ...] = ("W1 map", "fused - first", "fused - second", "fused - auto")
"""What the explorer's fourth panel can show."""

_CACHE_SIZE = 256  # decoded images kept (256 x 256 float32: 256 KiB each)
_FIRST_CONV_PAIRS = 4  # pairs whose first-convolution outputs are kept (32 MiB each, paper, 256 px)


class ExplorerResult(NamedTuple):
    """What :meth:`FusionExplorer.update` returns (a tuple: ``fused, weights, metrics = ...``).

    ``fused``: the fused image in [0, 1] on the CPU, (1, H, W), or (3, H, W) RGB for a colour
    pair. ``weights``: ``(w1, w2)`` as the strategy returned them (one number per pair, shape
    (1,), for SFNN and the averages; a map (1, 1, H, W) for FER, FL1N and sfnn-spatial;
    ``(None, None)`` for ``max``), or the manual ones. ``metrics``: metric name -> value
    (computed on the luma of a colour pair).
    """

    fused: torch.Tensor
    weights: tuple
    metrics: dict[str, float]


class _SplitDecoder:
    """The reconstructor split after its first (linear) convolution, for exact fast blends.

    With ``L`` that convolution without its bias ``b``, :meth:`prepare` turns a pair's features
    into ``d = L f1 - L f2`` and ``g = L f2 + b``; :meth:`blend` then gives
    ``model.decode(w1 * f1 + w2 * f2)`` (to float rounding) for any scalars w1, w2, from
    ``w1 * d + g`` (one pass when ``w1 + w2 = 1``) and the remaining layers, ReLUs included.
    """

    def __init__(self, conv: nn.Conv2d, rest: nn.Module) -> None:
        self.conv, self.rest = conv, rest
        self.channels_last = conv.out_channels >= 32  # oneDNN prefers it for wide layers

    @classmethod
    def of(cls, model: nn.Module) -> _SplitDecoder | None:
        """The split of ``model.decoder.body`` if it starts with a plain convolution, else None."""
        body = getattr(getattr(model, "decoder", None), "body", None)
        if not isinstance(body, nn.Sequential) or len(body) < 2:
            return None
        head = body[0]
        layers = list(head) if isinstance(head, nn.Sequential) else [head]
        conv = layers[0]
        if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros":
            return None
        rest = copy.deepcopy(nn.Sequential(*layers[1:], *list(body)[1:])).eval()
        split = cls(conv, rest)
        if split.channels_last:
            split.rest = split.rest.to(memory_format=torch.channels_last)
        return split

    def _bias(self) -> torch.Tensor | float:
        b = self.conv.bias
        return 0.0 if b is None else b.view(1, -1, 1, 1)

    def prepare(self, f1: torch.Tensor, f2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (1, C, H, W) x 2 -> ``d = L f1 - L f2``, ``g = L f2 + b`` (1, C', H, W)."""
        c = self.conv
        f = torch.cat([f1, f2]).to(c.weight.dtype)
        if self.channels_last:
            f = f.contiguous(memory_format=torch.channels_last)
        lf1, lf2 = F.conv2d(f, c.weight, None, c.stride, c.padding, c.dilation, c.groups).chunk(2)
        return lf1 - lf2, lf2 + self._bias()

    def blend(self, d: torch.Tensor, g: torch.Tensor, w1: float, w2: float) -> torch.Tensor:
        """``decode(w1 * f1 + w2 * f2)`` from :meth:`prepare`'s ``d`` and ``g`` (unclamped)."""
        if abs(w1 + w2 - 1.0) < 1e-6:  # float32 weights that sum to 1 up to rounding
            x = torch.add(g, d, alpha=w1)  # L(w1 f1 + w2 f2) + b = g + w1 d
        else:  # w1 d + (w1 + w2) L f2 + b, with L f2 = g - b
            x = torch.add(g * (w1 + w2), d, alpha=w1)
            x += (1.0 - (w1 + w2)) * self._bias()
        return self.rest(x)


def _encode_pair(
    model: torch.nn.Module, a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images (1, H, W) through the encoder in one batch: -> f1, f2 of shape (1, C, H, W)."""
    a = a if a.ndim == 4 else a.unsqueeze(0)
    b = b if b.ndim == 4 else b.unsqueeze(0)
    with torch.inference_mode():
        f = model.encode(torch.cat([a, b]))
    return f[:1], f[1:]


def _strategy(name: str, temperature: float | None):
    """The strategy to pass to ``fuse_features``: its name, or sfnn-spatial at a temperature."""
    if name == "sfnn-spatial" and temperature is not None:
        return functools.partial(STRATEGIES[name], temperature=float(temperature))
    return name


def w1_grid(
    model: torch.nn.Module,
    a: torch.Tensor,
    b: torch.Tensor,
    w1_values: Sequence[float],
    strategy: str = "sfnn-max",
) -> list[torch.Tensor]:
    """Fused images (1, H, W) of ``a`` and ``b`` for each fixed ``W1`` in ``w1_values``.

    ``a`` and ``b`` are (1, H, W) or (1, 1, H, W) images in [0, 1]; they are encoded once, and each
    ``W1`` replaces the strategy's weight (``W2 = 1 - W1``) before decoding with ``model.decode``.
    With one global weight per pair, the strategy only matters through this override, so every
    strategy but ``max`` (treated as the plain weighted sum) gives the same images.
    """
    f1, f2 = _encode_pair(model, a, b)
    if strategy == "max":
        strategy = "average"
    out = []
    with torch.inference_mode():
        for w in w1_values:
            fused_f = fuse_features(f1, f2, strategy, weights=float(w))
            out.append(model.decode(fused_f).clamp(0, 1)[0].cpu().clone())
    return out


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


def _weight_map(w1: torch.Tensor | None, shape: tuple[int, int]) -> np.ndarray | None:
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
        im = ax.imshow(_weight_map(w1, tuple(fused.shape[-2:])), cmap="viridis", vmin=0, vmax=1)
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


# --- the explorer -----------------------------------------------------------------------------


class _Pair(NamedTuple):
    a: torch.Tensor  # MRI (1, H, W)
    b: torch.Tensor  # second image as given: (1, H, W), or (3, H, W) RGB
    y: torch.Tensor  # what is fused with the MRI: b, or the Y channel of an RGB b
    name: str
    modalities: tuple[str, str]


class FusionExplorer:
    """Fuse pairs with any strategy and any W1, caching features, weights and decoded images.

    Parameters
    ----------
    model:
        A :class:`dilran_lite.model.DILRAN` (any object with ``encode`` and ``decode``).
    dataset:
        Items ``(mri, other, name)`` with images in [0, 1]: ``other`` (1, H, W) (CT) or (3, H, W)
        (PET/SPECT, fused through its Y channel, BT.601), e.g. from
        :func:`dilran_lite.data.load_pairs` or a :class:`dilran_lite.phantom.PhantomDataset`.
        More datasets (MRI-PET, MRI-SPECT) join with :meth:`add_pairs`.
    indices:
        The dataset indices offered (default: all). ``pair_index`` counts over all offered pairs.
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
        self._sources: list[tuple[Any, int]] = []
        self.add_pairs(dataset, indices)
        self.strategies = list(STRATEGIES) if strategies is None else list(strategies)
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; choose from {sorted(STRATEGIES)}")
        self.metric_names = list(metrics)
        self._split = _SplitDecoder.of(model)
        self._images: dict[int, _Pair] = {}
        self._features: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._first: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._weights: dict[tuple, tuple] = {}
        self._fused: OrderedDict[tuple, tuple[torch.Tensor, dict[str, float]]] = OrderedDict()
        self.controls: dict[str, Any] = {}
        self.last_result: ExplorerResult | None = None
        self.renders = 0
        self.decodes = 0

    # -- pairs and caches --

    def add_pairs(self, dataset: Any, indices: Sequence[int] | None = None) -> FusionExplorer:
        """Offer more pairs (e.g. an MRI-PET dataset after an MRI-CT one); returns ``self``."""
        idx = list(range(len(dataset))) if indices is None else list(indices)
        if not idx:
            raise ValueError("FusionExplorer needs at least one pair")
        self._sources += [(dataset, i) for i in idx]
        return self

    @property
    def modalities(self) -> tuple[str, str]:
        """The modalities of the first pair, e.g. ``("MRI", "CT")``."""
        return self._modalities_of(self._sources[0][0])

    @staticmethod
    def _modalities_of(dataset: Any) -> tuple[str, str]:
        m = getattr(dataset, "modalities", ("MRI", "CT"))
        return (str(m[0]), str(m[1]))

    def __len__(self) -> int:
        return len(self._sources)

    def _pair(self, pair_index: int) -> _Pair:
        if not 0 <= pair_index < len(self._sources):
            raise IndexError(f"pair_index {pair_index} out of range (0..{len(self) - 1})")
        if pair_index not in self._images:
            dataset, i = self._sources[pair_index]
            a, b, name = dataset[i]
            y = rgb_to_ycbcr(b)[:1] if b.shape[0] == 3 else b
            self._images[pair_index] = _Pair(a, b, y, str(name), self._modalities_of(dataset))
        return self._images[pair_index]

    def pair(self, pair_index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        """The images ``(a, b)`` ((1, H, W); b (3, H, W) if colour) and name of a pair (cached)."""
        p = self._pair(pair_index)
        return p.a, p.b, p.name

    def label(self, pair_index: int) -> str:
        """``"MRI-CT: name"``: what the pair menu shows."""
        p = self._pair(pair_index)
        return f"{p.modalities[0]}-{p.modalities[1]}: {p.name}"

    def names(self) -> list[str]:
        """The names of the offered pairs, in order (reads the images of each pair once)."""
        return [self._pair(i).name for i in range(len(self))]

    def features(self, pair_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Deep features ``f1, f2`` (1, C, H, W) of a pair: encoded on first use, then cached.

        Made under ``torch.inference_mode`` (inference tensors: clone them to use with autograd).
        """
        if pair_index not in self._features:
            p = self._pair(pair_index)
            self._features[pair_index] = _encode_pair(self.model, p.a, p.y)
        return self._features[pair_index]

    def _first_conv(self, pair_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if pair_index not in self._first:
            f1, f2 = self.features(pair_index)
            with torch.inference_mode():
                self._first[pair_index] = self._split.prepare(f1, f2)
            while len(self._first) > _FIRST_CONV_PAIRS:
                self._first.popitem(last=False)
        self._first.move_to_end(pair_index)
        return self._first[pair_index]

    def weights(self, pair_index: int, strategy: str, temperature: float | None = None) -> tuple:
        """The strategy's own ``(w1, w2)`` for a pair, computed once per (pair, strategy, T)."""
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
        t = temperature if strategy == "sfnn-spatial" else None
        key = (pair_index, strategy, t)
        if key not in self._weights:
            f1, f2 = self.features(pair_index)
            with torch.inference_mode():
                fused_f, w = fuse_features(f1, f2, _strategy(strategy, t), return_weights=True)
            w = tuple(None if x is None else torch.as_tensor(x).cpu() for x in w)
            if w[0] is None or w[0].numel() > 1:  # max or a map: keep its decode too
                self._store(key, self._decode_features(fused_f))
            self._weights[key] = w
        return self._weights[key]

    def _map_image(self, key: tuple, w: tuple) -> tuple[torch.Tensor, dict]:
        """The decoded image of a map strategy (or max) from its cached weights."""
        if key not in self._fused:  # evicted from the cache: blend again with the same maps
            f1, f2 = self.features(key[0])
            with torch.inference_mode():
                if w[0] is None:
                    fused_f = fuse_features(f1, f2, "max")
                else:
                    fused_f = fuse_features(f1, f2, "average", weights=w)
            self._store(key, self._decode_features(fused_f))
        self._fused.move_to_end(key)
        return self._fused[key]

    def _decode_features(self, fused_f: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model.decode(fused_f).clamp(0, 1)[0].cpu()
        self.decodes += 1
        return out

    def _decode_scalar(self, pair_index: int, w1: float, w2: float) -> torch.Tensor:
        """``decode(w1 * f1 + w2 * f2)`` for scalar weights (first convolution cached)."""
        if self._split is None:
            f1, f2 = self.features(pair_index)
            with torch.inference_mode():
                return self._decode_features(w1 * f1 + w2 * f2)
        d, g = self._first_conv(pair_index)
        with torch.inference_mode():
            out = self._split.blend(d, g, w1, w2).clamp_(0, 1)[0].cpu()
        self.decodes += 1
        return out

    def _store(self, key: tuple, y: torch.Tensor) -> None:
        self._fused[key] = (y, {})
        self._fused.move_to_end(key)
        while len(self._fused) > _CACHE_SIZE:
            self._fused.popitem(last=False)

    def _fused_y(self, pair_index: int, key: tuple, w: tuple) -> tuple[torch.Tensor, dict]:
        """The fused (luma) image and its metric cache for a weights key, decoded once."""
        if key not in self._fused:
            self._store(key, self._decode_scalar(pair_index, float(w[0]), float(w[1])))
        self._fused.move_to_end(key)
        return self._fused[key]

    def _colour(self, p: _Pair, y: torch.Tensor) -> torch.Tensor:
        """The fused luma as an image: itself for a grey pair, RGB with b's Cb, Cr for colour."""
        if p.b.shape[0] != 3:
            return y
        ycc = rgb_to_ycbcr(p.b)
        return ycbcr_to_rgb(torch.cat([y.to(ycc.dtype), ycc[1:]]))

    # -- the callback --

    def update(
        self,
        pair_index: int = 0,
        strategy: str = "sfnn-max",
        w1: float | None = None,
        temperature: float | None = None,
    ) -> ExplorerResult:
        """Fuse pair ``pair_index`` with ``strategy``: the widget's callback, without a widget.

        ``w1=None`` ("auto") uses the strategy's own weights (for SFNN, Eq. 3-5 with the strategy's
        phi, e.g. ``sfnn-max2``); a number replaces them with ``W1 = w1``, ``W2 = 1 - w1`` (for
        ``max`` too, which then is the weighted sum). ``temperature`` sets T of
        ``sfnn-spatial`` (default 0.1). Returns :class:`ExplorerResult` ``(fused, weights,
        metrics)``.
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
        if w1 is not None and not 0.0 <= float(w1) <= 1.0:
            raise ValueError(f"w1 must lie in [0, 1], got {w1}")
        p = self._pair(pair_index)
        if w1 is None:
            w = self.weights(pair_index, strategy, temperature)
        else:
            w = (torch.tensor([float(w1)]), torch.tensor([1.0 - float(w1)]))
        if w[0] is None or w[0].numel() > 1:
            t = temperature if strategy == "sfnn-spatial" else None
            y, cache = self._map_image((pair_index, strategy, t), w)
        else:
            key = (pair_index, "w", round(float(w[0]), 9), round(float(w[1]), 9))
            y, cache = self._fused_y(pair_index, key, w)
        missing = [m for m in self.metric_names if m not in cache]
        if missing:
            cache.update(compute_metrics(p.a, p.y, y, names=missing))
        metrics = {m: cache[m] for m in self.metric_names}
        self.last_result = ExplorerResult(self._colour(p, y), w, metrics)
        return self.last_result

    # -- the widget --

    def panels(
        self,
        pair_index: int,
        result: ExplorerResult,
        view: str = "W1 map",
        zoom: int = 1,
        strategy: str = "sfnn-max",
        temperature: float | None = None,
        which: Sequence[str] = ("first", "second", "fused", "view"),
    ) -> dict[str, bytes]:
        """PNG bytes of the panels named in ``which``: ``first``, ``second``, ``fused``, ``view``.

        ``view`` is one of :data:`VIEWS`: the W1 map (viridis, 0..1), or a difference (red:
        fused brighter, blue: darker, -0.5..0.5) with the first image, the second one (its luma)
        or the strategy's own ``auto`` fusion.
        """
        p = self._pair(pair_index)
        out = {}
        if "first" in which:
            out["first"] = image_bytes(p.a, zoom=zoom)
        if "second" in which:
            out["second"] = image_bytes(p.b, zoom=zoom)
        if "fused" in which:
            out["fused"] = image_bytes(result.fused, zoom=zoom)
        if "view" in which:
            out["view"] = self._view(pair_index, result, view, zoom, strategy, temperature)
        return out

    def _view(
        self,
        pair_index: int,
        result: ExplorerResult,
        view: str,
        zoom: int,
        strategy: str,
        temperature: float | None,
    ) -> bytes:
        p = self._pair(pair_index)
        y = self._fused_luma(result, p)
        w1 = result.weights[0]
        if view == "W1 map" and (w1 is None or w1.numel() == 1):  # uniform: a small image
            value = 0.5 if w1 is None else float(w1)
            return image_bytes(np.full((8, 8), value), cmap=None if w1 is None else "viridis")
        if view == "W1 map":
            view_png = image_bytes(_weight_map(w1, tuple(y.shape[-2:])), cmap="viridis", zoom=zoom)
        else:
            if view == "fused - first":
                ref = p.a
            elif view == "fused - second":
                ref = p.y
            elif view == "fused - auto":
                ref = self._fused_luma(self.update(pair_index, strategy, None, temperature), p)
                self.last_result = result
            else:
                raise ValueError(f"unknown view {view!r}; choose from {VIEWS}")
            view_png = image_bytes(y - ref, cmap="RdBu_r", lo=-0.5, hi=0.5, zoom=zoom)
        return view_png

    @staticmethod
    def _fused_luma(result: ExplorerResult, p: _Pair) -> torch.Tensor:
        f = result.fused
        return rgb_to_ycbcr(f)[:1] if f.shape[0] == 3 else f

    def widget(self, pair_index: int = 0, strategy: str = "sfnn-max"):
        """The explorer as ipywidgets (7.7 or 8): menus for pair, strategy, view and zoom, a W1
        slider with an 'auto' box, the temperature of sfnn-spatial, four Image widgets (first,
        second, fused, view) and an HTML line with W1, W2 and the metrics.

        Every change calls :meth:`update` and sets new PNG bytes on the images that changed (no
        figure is drawn, nothing is captured from the display machinery). The first drawing
        happens here, so a saved notebook shows a result. Controls are kept in
        :attr:`controls`.
        """
        import ipywidgets as widgets

        c = self.controls = _make_controls(widgets, self, pair_index, strategy)
        busy = {"now": False}
        shown = {"pair": None, "zoom": None}

        def draw() -> None:
            manual = None if c["auto"].value else float(c["w1"].value)
            temp = float(c["temperature"].value)
            res = self.update(c["pair"].value, c["strategy"].value, w1=manual, temperature=temp)
            w_auto = res.weights[0]
            c["w1"].disabled = c["auto"].value
            c["temperature"].disabled = c["strategy"].value != "sfnn-spatial"
            if c["auto"].value and w_auto is not None and w_auto.numel() == 1:
                c["w1"].value = round(float(w_auto), 2)  # the strategy's W1 on the slider
            sources = shown["pair"] != c["pair"].value or shown["zoom"] != c["zoom"].value
            which = ("first", "second", "fused", "view") if sources else ("fused", "view")
            args = (c["view"].value, int(c["zoom"].value), c["strategy"].value, temp, which)
            pngs = self.panels(c["pair"].value, res, *args)
            if sources:
                c["first"].value, c["second"].value = pngs["first"], pngs["second"]
                shown.update(pair=c["pair"].value, zoom=c["zoom"].value)
                _label_sources(c, self._pair(c["pair"].value).modalities)
            c["fused"].value, c["view_image"].value = pngs["fused"], pngs["view"]
            c["table"].value = metrics_table_html(res.metrics, res.weights)
            self.renders += 1

        def redraw(change: Any = None) -> None:
            if busy["now"]:
                return
            busy["now"] = True
            try:
                draw()
            finally:
                busy["now"] = False

        redraw()
        for name in ("pair", "strategy", "w1", "auto", "temperature", "view", "zoom"):
            c[name].observe(redraw, names="value")
        return _layout(widgets, c)


def _make_controls(widgets: Any, ex: FusionExplorer, pair_index: int, strategy: str) -> dict:
    """The explorer's ipywidgets controls and images (API common to ipywidgets 7.7 and 8)."""
    size = "220px"
    options = [(ex.label(i), i) for i in range(len(ex))]
    return {
        "pair": widgets.Dropdown(options=options, value=pair_index, description="pair"),
        "strategy": widgets.Dropdown(options=ex.strategies, value=strategy, description="strategy"),
        "w1": widgets.FloatSlider(
            value=0.5,
            min=0.0,
            max=1.0,
            step=0.05,
            description="W1",
            disabled=True,
            continuous_update=False,
            readout_format=".2f",
        ),
        "auto": widgets.Checkbox(value=True, description="auto: the strategy's W1", indent=False),
        "temperature": widgets.FloatLogSlider(
            value=0.1,
            base=10,
            min=-2,
            max=1,
            step=0.25,
            description="T (spatial)",
            continuous_update=False,
            readout_format=".3g",
            disabled=strategy != "sfnn-spatial",
        ),
        "view": widgets.Dropdown(options=list(VIEWS), value="W1 map", description="4th panel"),
        "zoom": widgets.Dropdown(options=[1, 2, 4], value=1, description="zoom"),
        "first": widgets.Image(format="png", width=size, height=size),
        "second": widgets.Image(format="png", width=size, height=size),
        "fused": widgets.Image(format="png", width=size, height=size),
        "view_image": widgets.Image(format="png", width=size, height=size),
        "labels": [widgets.HTML(value=t) for t in ("MRI", "CT", "fused", "view")],
        "table": widgets.HTML(),
    }


def _label_sources(c: dict, modalities: tuple[str, str]) -> None:
    c["labels"][0].value, c["labels"][1].value = (f"<b>{html.escape(m)}</b>" for m in modalities)


def _layout(widgets: Any, c: dict):
    c["labels"][2].value = "<b>fused</b>"
    c["labels"][3].value = "<b>4th panel (see the menu)</b>"
    cols = [
        widgets.VBox([label, c[k]])
        for label, k in zip(c["labels"], ("first", "second", "fused", "view_image"))
    ]
    return widgets.VBox(
        [
            widgets.HBox([c["pair"], c["strategy"]]),
            widgets.HBox([c["w1"], c["auto"]]),
            widgets.HBox([c["temperature"], c["view"], c["zoom"]]),
            widgets.HBox(cols),
            c["table"],
        ]
    )


# --- the static explorer of the online book ----------------------------------------------------


def _data_uri(data: bytes, fmt: str) -> str:
    mime = "image/jpeg" if fmt in ("jpg", "jpeg") else "image/png"
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _static_pair(
    ex: FusionExplorer,
    i: int,
    strategies: Sequence[str],
    w1_values: Sequence[float],
    fmt: str,
    quality: int,
) -> dict:
    """One pair's images (data URIs) and numbers for :func:`static_explorer_html`."""
    p = ex._pair(i)

    def uri(x: Any, **kw: Any) -> str:
        return _data_uri(image_bytes(x, fmt=fmt, quality=quality, **kw), fmt)

    def entry(res: ExplorerResult) -> dict:
        w1, w2 = res.weights
        if w1 is None:
            wtext = ["none (element-wise max)", "none"]
        elif w1.numel() == 1:
            wtext = [f"{float(w1):.3f}", f"{float(w2):.3f}"]
        else:
            wtext = [f"map, mean {float(w1.mean()):.3f}", f"1 - W1, mean {float(w2.mean()):.3f}"]
        out = {"img": uri(res.fused), "w1": wtext[0], "w2": wtext[1]}
        out["m"] = {k: round(v, 3) for k, v in res.metrics.items()}
        if w1 is not None and w1.numel() > 1:
            out["map"] = uri(_weight_map(w1, tuple(res.fused.shape[-2:])), cmap="viridis")
        return out

    return {
        "label": ex.label(i),
        "first": uri(p.a),
        "second": uri(p.b),
        "modalities": list(p.modalities),
        "auto": {s: entry(ex.update(i, s)) for s in strategies},
        "grid": [entry(ex.update(i, strategies[0], w1=float(w))) for w in w1_values],
    }


_STATIC_JS = """
(function () {
  var root = document.getElementById("%(id)s");
  var data = JSON.parse(document.getElementById("%(id)s-data").textContent);
  function q(name) { return root.querySelector("[data-role=" + name + "]"); }
  var pair = q("pair"), strat = q("strategy"), slider = q("w1"), auto = q("auto");
  function show() {
    var p = data.pairs[+pair.value], s = strat.value, e, how;
    if (auto.checked) {
      e = p.auto[s]; how = "the strategy's own weights (" + s + ")";
    } else {
      e = p.grid[+slider.value]; how = "manual W1 (the strategy does not matter)";
    }
    q("first").src = p.first; q("second").src = p.second; q("fused").src = e.img;
    q("label1").textContent = p.modalities[0]; q("label2").textContent = p.modalities[1];
    var map = q("map");
    if (e.map) { map.src = e.map; } else { map.removeAttribute("src"); }
    map.style.visibility = q("t4").style.visibility = e.map ? "visible" : "hidden";
    q("w1text").textContent = e.w1; q("w2text").textContent = e.w2; q("how").textContent = how;
    q("w1value").textContent = (+data.w1[+slider.value]).toFixed(2) +
      (auto.checked ? " (not used while auto is ticked)" : "");
    var rows = "";
    for (var k in e.m) { rows += "<td>" + k + " " + e.m[k].toFixed(3) + "</td>"; }
    q("metrics").innerHTML = rows;
  }
  pair.addEventListener("change", show);
  strat.addEventListener("change", function () { auto.checked = true; show(); });
  auto.addEventListener("change", show);
  slider.addEventListener("input", function () { auto.checked = false; show(); });
  show();
})();
"""


def static_explorer_html(
    model: torch.nn.Module | FusionExplorer,
    pairs: Any,
    strategies: Sequence[str] = STATIC_STRATEGIES,
    w1_values: Sequence[float] = tuple(np.round(np.linspace(0, 1, 11), 2)),
    metrics: Sequence[str] = ("EN", "MI", "SSIM", "Qabf"),
    fmt: str = "jpeg",
    quality: int = 85,
    element_id: str = "dilran-explorer",
) -> str:
    """A self-contained HTML explorer for a page without a kernel (the online book).

    ``model``: a DILRAN, or a :class:`FusionExplorer` whose cache is reused (then ``pairs`` are
    its pair indices). Otherwise ``pairs`` is a dataset or list of ``(mri, other, name)`` items.
    For every pair, the page holds the sources, the fused image of each strategy with its own
    weights and of each manual ``W1`` in ``w1_values``, with W1, W2 and ``metrics``, as base64
    ``fmt`` images (JPEG by default: about 8 KB for 256 x 256). A short inline script (no
    external file) swaps them as the reader moves the controls. Display it with
    ``IPython.display.HTML``.
    """
    if isinstance(model, FusionExplorer):
        ex, idx = model, list(pairs)
    else:
        ex = FusionExplorer(model, pairs, strategies=strategies, metrics=metrics)
        idx = list(range(len(ex)))
    saved, ex.metric_names = ex.metric_names, list(metrics)
    try:
        data = {
            "w1": [float(w) for w in w1_values],
            "pairs": [_static_pair(ex, i, list(strategies), w1_values, fmt, quality) for i in idx],
        }
    finally:
        ex.metric_names = saved
    return _static_markup(data, list(strategies), element_id)


def _static_markup(data: dict, strategies: list[str], eid: str) -> str:
    eid = html.escape(eid)
    opts = "".join(
        f'<option value="{i}">{html.escape(p["label"])}</option>'
        for i, p in enumerate(data["pairs"])
    )
    sopts = "".join(
        f'<option value="{html.escape(s)}">{html.escape(s)}</option>' for s in strategies
    )
    n = len(data["w1"]) - 1
    mid = n // 2
    img = 'style="width:200px;height:200px;image-rendering:pixelated" alt=""'
    cells = "".join(
        f'<td><div data-role="{lab}" style="font-weight:bold">{title}</div>'
        f'<img data-role="{role}" {img}></td>'
        for lab, title, role in (
            ("label1", "", "first"),
            ("label2", "", "second"),
            ("t3", "fused", "fused"),
            ("t4", "W1 map (per-pixel strategies)", "map"),
        )
    )
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (
        f'<div id="{eid}" class="dilran-static-explorer" style="font-size:0.9em">'
        f'<div><label>pair <select data-role="pair">{opts}</select></label> '
        f'<label>strategy <select data-role="strategy">{sopts}</select></label> '
        f'<label><input type="checkbox" data-role="auto" checked> auto: the strategy\'s W1'
        f"</label></div>"
        f'<div><label>manual W1 <input type="range" data-role="w1" min="0" max="{n}" step="1" '
        f'value="{mid}" style="vertical-align:middle"></label> '
        f'<span data-role="w1value"></span></div>'
        f"<table><tr>{cells}</tr></table>"
        f'<div>W1 = <b data-role="w1text"></b>, W2 = <b data-role="w2text"></b>; '
        f'<span data-role="how"></span></div>'
        f'<table class="dilran-metrics"><tr data-role="metrics"></tr></table>'
        f'<script type="application/json" id="{eid}-data">{payload}</script>'
        f"<script>{_STATIC_JS % {'id': eid}}</script></div>"
    )

"""The explorer's logic and caches: :class:`FusionExplorer`, :class:`ExplorerResult`, w1_grid.

:class:`FusionExplorer` holds a model and paired images (MRI-CT, and MRI-PET/SPECT through the Y
channel of :mod:`dilran_lite.color`). It caches, per pair, the deep features; per (pair,
strategy), the strategy's own weights; per (pair, weights), the decoded image and its metrics.
:meth:`FusionExplorer.update` is the whole logic of the widget's callback. The drawing is left
to :mod:`.figures` (:meth:`~FusionExplorer.panels`) and :mod:`.widget`
(:meth:`~FusionExplorer.widget`).

A slider move with one global weight decodes ``W1 f1 + W2 f2`` exactly, but skips the first
convolution of the reconstructor: that convolution is linear, so its outputs for ``f1`` and ``f2``
are computed once per pair and blended (``conv(W1 f1 + W2 f2) = W1 conv(f1) + W2 conv(f2)``
before the bias); everything after it (ReLUs included) runs on every move.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..color import rgb_to_luma, rgb_to_ycbcr, ycbcr_to_rgb
from ..fusion import STRATEGIES, fuse_features
from ..metrics import compute_metrics
from .figures import panel_images
from .widget import build_widget

__all__ = ["DEFAULT_METRICS", "ExplorerPair", "ExplorerResult", "FusionExplorer", "w1_grid"]

DEFAULT_METRICS: tuple[str, ...] = ("PSNR", "SSIM", "EN", "MI", "Qabf")
"""Cheap metrics (a few ms each at 256 x 256) shown by the explorer."""

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


def _luma(x: torch.Tensor) -> torch.Tensor:
    """What is fused of an image: itself (1, H, W), or the Y channel of an RGB (3, H, W) one."""
    return rgb_to_luma(x) if x.shape[0] == 3 else x


class ExplorerPair(NamedTuple):
    """One pair as the explorer holds it (:meth:`FusionExplorer.sources`)."""

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
        self._images: dict[int, ExplorerPair] = {}
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

    def _pair(self, pair_index: int) -> ExplorerPair:
        if not 0 <= pair_index < len(self._sources):
            raise IndexError(f"pair_index {pair_index} out of range (0..{len(self) - 1})")
        if pair_index not in self._images:
            dataset, i = self._sources[pair_index]
            a, b, name = dataset[i]
            modalities = self._modalities_of(dataset)
            self._images[pair_index] = ExplorerPair(a, b, _luma(b), str(name), modalities)
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

    def _colour(self, p: ExplorerPair, y: torch.Tensor) -> torch.Tensor:
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

    # -- what the display modules read --

    def sources(self, pair_index: int) -> ExplorerPair:
        """A pair's images, name and modalities (read once, then cached)."""
        return self._pair(pair_index)

    def pair_modalities(self, pair_index: int) -> tuple[str, str]:
        """The modalities of one pair, e.g. ``("MRI", "PET")``."""
        return self._pair(pair_index).modalities

    @staticmethod
    def fused_luma(result: ExplorerResult) -> torch.Tensor:
        """The fused image as fused: itself (1, H, W), or the Y channel of an RGB result."""
        return _luma(result.fused)

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

        ``view`` is one of :data:`~dilran_lite.explorer.VIEWS`: the W1 map (viridis, 0..1), or a
        difference (red: fused brighter, blue: darker, -0.5..0.5) with the first image, the second
        one (its luma) or the strategy's own ``auto`` fusion.
        """
        return panel_images(self, pair_index, result, view, zoom, strategy, temperature, which)

    def widget(self, pair_index: int = 0, strategy: str = "sfnn-max"):
        """The explorer as ipywidgets (7.7 or 8): menus for pair, strategy, view and zoom, a W1
        slider with an 'auto' box, the temperature of sfnn-spatial, four Image widgets (first,
        second, fused, view) and an HTML line with W1, W2 and the metrics.

        Every change calls :meth:`update` and sets new PNG bytes on the images that changed (no
        figure is drawn, nothing is captured from the display machinery). The first drawing
        happens here, so a saved notebook shows a result. Controls are kept in
        :attr:`controls`.
        """
        return build_widget(self, pair_index, strategy)

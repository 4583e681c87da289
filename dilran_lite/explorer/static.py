"""The static explorer of the online book: fused images precomputed, swapped by a small script.

:func:`static_explorer_html` runs a :class:`~dilran_lite.explorer.FusionExplorer` over the
strategies and a grid of manual W1 values and writes one self-contained HTML fragment (base64
images, a JSON payload, an inline script; nothing loaded from outside) for a page without a kernel.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .core import ExplorerResult, FusionExplorer
from .figures import image_bytes, weight_map

__all__ = ["STATIC_STRATEGIES", "static_explorer_html"]

STATIC_STRATEGIES: tuple[str, ...] = ("sfnn-max", "sfnn-max2", "fer", "fl1n", "sfnn-spatial")
"""The strategies precomputed by :func:`static_explorer_html` by default."""


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
    p = ex.sources(i)

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
            out["map"] = uri(weight_map(w1, tuple(res.fused.shape[-2:])), cmap="viridis")
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
    map.style.visibility = q("t4").style.visibility = q("legend").style.visibility =
      e.map ? "visible" : "hidden";
    q("legend0").textContent = "0: " + p.modalities[1];
    q("legend1").textContent = "1: " + p.modalities[0];
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


# The colour scale of the W1 map: matplotlib's viridis from 0 (all the second image) to 1 (all MRI).
_VIRIDIS = "#440154,#482878,#3e4989,#31688e,#26828e,#1f9e89,#35b779,#6ece58,#b5de2b,#fde725"
_LEGEND = (
    f'<div data-role="legend" style="max-width:200px;font-size:0.85em">'
    f'<div style="height:8px;background:linear-gradient(to right,{_VIRIDIS})"></div>'
    '<span data-role="legend0" style="float:left"></span>'
    '<span data-role="legend1" style="float:right"></span></div>'
)


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
        f'<img data-role="{role}" {img}>{_LEGEND if role == "map" else ""}</td>'
        for lab, title, role in (
            ("label1", "", "first"),
            ("label2", "", "second"),
            ("t3", "fused", "fused"),
            ("t4", "W1 map", "map"),
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

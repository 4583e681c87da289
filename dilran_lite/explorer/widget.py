"""The explorer as ipywidgets (7.7, as on Colab, and 8): controls, four Image widgets, a table.

:func:`build_widget` is the body of :meth:`dilran_lite.explorer.FusionExplorer.widget`. It takes
any explorer object (``update``, ``panels``, ``label``, ``pair_modalities``, ``strategies``) and
imports ipywidgets only when called. Only widgets and options common to 7.7 and 8 are used.
"""

from __future__ import annotations

import html
from typing import Any

from .figures import VIEWS, metrics_table_html

__all__ = ["build_widget"]


def build_widget(ex: Any, pair_index: int = 0, strategy: str = "sfnn-max"):
    """The explorer's ipywidgets box, drawn once; every control change redraws in place.

    Each change calls ``ex.update`` and sets new PNG bytes on the images that changed; the
    controls are kept in ``ex.controls`` and each drawing adds one to ``ex.renders``.
    """
    import ipywidgets as widgets

    c = ex.controls = _make_controls(widgets, ex, pair_index, strategy)
    busy = {"now": False}
    shown = {"pair": None, "zoom": None}

    def draw() -> None:
        manual = None if c["auto"].value else float(c["w1"].value)
        temp = float(c["temperature"].value)
        res = ex.update(c["pair"].value, c["strategy"].value, w1=manual, temperature=temp)
        w_auto = res.weights[0]
        c["w1"].disabled = c["auto"].value
        c["temperature"].disabled = c["strategy"].value != "sfnn-spatial"
        if c["auto"].value and w_auto is not None and w_auto.numel() == 1:
            c["w1"].value = round(float(w_auto), 2)  # the strategy's W1 on the slider
        sources = shown["pair"] != c["pair"].value or shown["zoom"] != c["zoom"].value
        which = ("first", "second", "fused", "view") if sources else ("fused", "view")
        args = (c["view"].value, int(c["zoom"].value), c["strategy"].value, temp, which)
        pngs = ex.panels(c["pair"].value, res, *args)
        if sources:
            c["first"].value, c["second"].value = pngs["first"], pngs["second"]
            shown.update(pair=c["pair"].value, zoom=c["zoom"].value)
            _label_sources(c, ex.pair_modalities(c["pair"].value))
        c["fused"].value, c["view_image"].value = pngs["fused"], pngs["view"]
        c["table"].value = metrics_table_html(res.metrics, res.weights)
        ex.renders += 1

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


def _make_controls(widgets: Any, ex: Any, pair_index: int, strategy: str) -> dict:
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

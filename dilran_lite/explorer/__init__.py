"""The interactive fusion explorer of chapter 7, testable without a browser.

:class:`FusionExplorer` holds a model and paired images (MRI-CT, and MRI-PET/SPECT through the Y
channel of :mod:`dilran_lite.color`) and caches features, weights and decoded images;
:meth:`FusionExplorer.update` is the whole logic of the widget's callback;
:meth:`FusionExplorer.widget` wires ipywidgets controls (7.7 and 8) to it and updates its images in
place (new PNG bytes on ``ipywidgets.Image`` widgets; no figure is drawn).
:func:`static_explorer_html` is the counterpart for readers of the online book (no kernel): the
fused images precomputed over the strategies and a W1 grid, swapped by a small inline script.

The modules, by job (each imports only those above it):

- :mod:`.figures`: images as PNG/JPEG bytes, the widget's panels, matplotlib figures, the table;
- :mod:`.widget`: the ipywidgets controls and their wiring;
- :mod:`.core`: :class:`FusionExplorer`, :class:`ExplorerResult`, :func:`w1_grid` (the caches);
- :mod:`.static`: :func:`static_explorer_html` and its markup.
"""

from .core import DEFAULT_METRICS, ExplorerPair, ExplorerResult, FusionExplorer, w1_grid
from .figures import VIEWS, image_bytes, metrics_table_html, result_figure, w1_grid_figure
from .static import STATIC_STRATEGIES, static_explorer_html

__all__ = [
    "DEFAULT_METRICS",
    "STATIC_STRATEGIES",
    "VIEWS",
    "ExplorerPair",
    "ExplorerResult",
    "FusionExplorer",
    "image_bytes",
    "metrics_table_html",
    "result_figure",
    "static_explorer_html",
    "w1_grid",
    "w1_grid_figure",
]

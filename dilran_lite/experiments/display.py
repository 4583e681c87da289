"""Results tables made for reading on a page: a few columns, units in the headers, 2-4
significant digits, integers as integers, the best value of each column in bold, no NaN, and the
full table folded underneath (an HTML ``<details>``).

:func:`styled_table` returns a :class:`Table`, which Jupyter (and the book) shows as HTML and
``print`` shows as text. :func:`short_method` shortens the method names of the results tables so
that they fit on one line.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

__all__ = [
    "DASH",
    "METRIC_UNITS",
    "METRIC_DIGITS",
    "LOWER_IS_BETTER",
    "NO_BEST",
    "PAGE_WIDTH_PX",
    "Table",
    "format_column",
    "best_cells",
    "styled_table",
    "short_method",
    "results_frame",
]

DASH = "\u2013"
"""What a missing value (NaN, None) shows: an en dash."""

METRIC_UNITS = {
    "PSNR": "dB",
    "MI": "bits",
    "EN": "bits",
    "SD": "grey levels",
    "SF": "grey levels",
    "AG": "grey levels / px",
    "W2_CT": "CT weight",
}
"""Units of the metrics of :mod:`dilran_lite.metrics` (the others are dimensionless)."""

METRIC_DIGITS = {"PSNR": 4}
"""Significant digits of the columns that need more than 3 (PSNR: 15.21 dB, not 15.2)."""

LOWER_IS_BETTER: tuple[str, ...] = ()
"""Columns where a smaller value is the better one: none of the metrics (all higher-is-better)."""

NO_BEST = ("W2_CT", "n_pairs", "n_test_in_train", "pairs")
"""Columns never set in bold when ``best`` is not given: weights and counts, not scores."""

PAGE_WIDTH_PX = 730
"""The width of the book's text column at a 1280 px window, in CSS pixels."""

CHAR_PX = 7.2  # mean width of a character at the table's font size (0.85 em of 16 px)
CELL_PAD_PX = 10  # left + right padding of a cell
CELL_CSS = "padding:2px 5px;white-space:nowrap;"
WRAP_CSS = "padding:2px 5px;text-align:left;min-width:12em;"
WRAP_CHARS = 36  # the width, in characters, counted for a column whose cells wrap
TABLE_CSS = (
    "border-collapse:collapse;font-size:0.85em;font-variant-numeric:tabular-nums;"
    "margin:0.3em 0 0.6em 0;max-width:100%;"
)


@dataclass
class Table:
    """A table for a page: ``html`` (what Jupyter shows), ``text`` (what ``print`` shows),
    ``width_px`` (an estimate of its width in CSS pixels) and the cells shown (strings)."""

    html: str
    text: str
    width_px: int
    cells: pd.DataFrame = field(repr=False)

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


def _is_integral(values: pd.Series) -> bool:
    """Whether every finite value of a numeric column is a whole number."""
    finite = values[values.map(lambda v: isinstance(v, (int, float)) and math.isfinite(v))]
    return len(finite) > 0 and bool((finite == finite.round()).all())


def _decimals(magnitude: float, digits: int) -> int:
    """Decimals that give ``digits`` significant digits to a number of this ``magnitude``."""
    return max(0, digits - 1 - (math.floor(math.log10(magnitude)) if magnitude > 0 else 0))


def format_column(values: pd.Series, digits: int = 3) -> pd.Series:
    """``values`` as strings: integers as integers; other numbers with ``digits`` significant
    digits (2-4 make sense) for the column's largest magnitude and the same number of decimals
    in every row (when the values span more than a factor of 10: ``digits`` significant digits
    each); NaN and None as an en dash; text (and booleans) as it is."""
    values = pd.Series(values, dtype=object)
    is_text = values.map(lambda v: isinstance(v, (str, bool)) or v is None)
    numeric = pd.to_numeric(values.where(~is_text), errors="coerce").astype(float)
    numbers = numeric[~is_text & numeric.notna()]
    if _is_integral(numbers):
        fmt = lambda v: f"{int(v)}"  # noqa: E731
    else:
        finite = numbers[numbers.map(math.isfinite)].abs()
        top = float(finite.max()) if len(finite) else 0.0
        low = float(finite[finite > 0].min()) if (finite > 0).any() else top
        if top < 10 * low:  # one order of magnitude: the same decimals in every row
            fmt = lambda v: f"{v:.{_decimals(top, digits)}f}"  # noqa: E731
        else:  # a wide range (0.04 s and 15 s): the digits of each value
            fmt = lambda v: f"{v:.{_decimals(abs(v), digits)}f}"  # noqa: E731

    def one(v: object, x: float) -> str:
        if v is None or (not isinstance(v, (str, bool)) and x != x):
            return DASH
        if isinstance(v, (str, bool)):
            return str(v)
        return ("\u221e" if x > 0 else "-\u221e") if math.isinf(x) else fmt(x)

    return pd.Series([one(v, x) for v, x in zip(values, numeric)], index=values.index)


def best_cells(
    df: pd.DataFrame,
    shown: pd.DataFrame,
    columns: Sequence[str],
    lower_is_better: Sequence[str] = (),
    rows: Sequence | None = None,
) -> pd.DataFrame:
    """A boolean frame like ``shown``: True at the best value of each column of ``columns``
    (the largest, the smallest for ``lower_is_better``) among ``rows`` (None: every row). Ties
    on the shown digits are all best."""
    mark = pd.DataFrame(False, index=shown.index, columns=shown.columns)
    eligible = list(df.index if rows is None else rows)
    for col in columns:
        values = pd.to_numeric(df.loc[eligible, col], errors="coerce").dropna()
        if values.empty:
            continue
        best = values.idxmin() if col in lower_is_better else values.idxmax()
        target = shown.loc[best, col]
        mark[col] = [r in values.index and shown.loc[r, col] == target for r in shown.index]
    return mark


def _default_best(df: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    """The numeric columns of ``cols`` that hold scores: not whole numbers, not in NO_BEST."""
    return [
        c for c in cols
        if c not in NO_BEST and pd.api.types.is_numeric_dtype(df[c])
        and not _is_integral(pd.to_numeric(df[c], errors="coerce"))
    ]


def _cells(
    df: pd.DataFrame,
    cols: list,
    digits: int | Mapping[str, int],
    best: Sequence[str] | None,
    lower_is_better: Sequence[str],
    best_rows: Sequence | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shown strings of ``df[cols]`` and where they are bold, column by column."""
    shown = pd.DataFrame(
        {c: format_column(df[c], digits if isinstance(digits, int) else digits.get(c, 3))
         for c in cols},
        index=df.index,
    )
    best = _default_best(df, cols) if best is None else best
    return shown, best_cells(df, shown, list(best), lower_is_better, best_rows)


def _row_cells(
    df: pd.DataFrame,
    digits: int | Mapping[str, int],
    best: Sequence[str] | None,
    lower_is_better: Sequence[str],
    best_rows: Sequence | None,
    units: Mapping[str, str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`_cells` row by row (one quantity per row), the unit in the row label."""
    t = df.T
    shown_t, bold_t = _cells(t, list(t.columns), digits, best, lower_is_better, best_rows)
    shown, bold = shown_t.T, bold_t.T
    shown.index = [f"{r} ({units[r]})" if r in units else r for r in df.index]
    bold.index = shown.index
    return shown, bold


def _header(name: str, unit: str | None) -> str:
    """A header cell's HTML: the name, and the unit in small type below it."""
    text = html.escape(name)
    if unit:
        text += f'<br><span style="font-weight:normal;font-size:0.85em">{html.escape(unit)}</span>'
    return text


def _html_table(
    shown: pd.DataFrame,
    bold: pd.DataFrame,
    headers: list[str],
    title: str,
    label: str,
    wrap: Sequence[str] = (),
) -> str:
    """The ``<table>`` of ``shown`` (strings), with ``bold`` cells in bold, the row labels
    (named ``label``) in the first column, and the cells of ``wrap`` free to wrap."""
    head = "".join(
        f'<th style="{CELL_CSS}text-align:{"left" if i == 0 else "right"};'
        f'border-bottom:1px solid currentColor;vertical-align:bottom">{h}</th>'
        for i, h in enumerate([html.escape(label), *headers])
    )
    body = []
    for r in shown.index:
        cells = [f'<td style="{CELL_CSS}text-align:left">{html.escape(str(r))}</td>']
        for c in shown.columns:
            v = html.escape(shown.loc[r, c])
            v = f"<b>{v}</b>" if bold.loc[r, c] else v
            css = WRAP_CSS if c in wrap else CELL_CSS + "text-align:right"
            cells.append(f'<td style="{css}">{v}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = (
        f'<caption style="caption-side:top;text-align:left;font-weight:bold;'
        f'padding-bottom:0.3em">{html.escape(title)}</caption>'
        if title
        else ""
    )
    return (
        f'<table style="{TABLE_CSS}">{caption}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _width_px(
    shown: pd.DataFrame,
    names: list[str],
    units: list[str | None],
    label: str,
    wrap: Sequence[str] = (),
) -> int:
    """An estimate of the table's width: the longest cell or header line of each column
    (at most :data:`WRAP_CHARS` for the columns in ``wrap``)."""
    total = 0.0
    columns = [(label, [str(r) for r in shown.index], None, False)]
    columns += [
        (n, list(shown[c]), u, c in wrap) for n, c, u in zip(names, shown.columns, units)
    ]
    for name, cells, unit, wraps in columns:
        longest = max([len(name), len(unit or "") * 0.85, *(len(s) for s in cells)])
        longest = min(longest, WRAP_CHARS) if wraps else longest
        total += longest * CHAR_PX + CELL_PAD_PX
    return int(math.ceil(total))


def styled_table(
    df: pd.DataFrame,
    columns: Sequence[str] | None = None,
    title: str = "",
    best: Sequence[str] | None = None,
    units: Mapping[str, str] | None = None,
    lower_is_better: Sequence[str] = LOWER_IS_BETTER,
    best_rows: Sequence | None = None,
    names: Mapping[str, str] | None = None,
    digits: int | Mapping[str, int] | None = None,
    label: str | None = None,
    full: bool = True,
    wrap: Sequence[str] = (),
    per_row: bool = False,
) -> Table:
    """A table for the page: ``df``'s rows (its index as row labels: set a short, readable one)
    and only ``columns`` (None: all), under ``title``.

    ``best``: columns whose best value is set in bold (None: every score column shown, see
    :data:`NO_BEST`), among ``best_rows`` (index labels; None: every row), the smallest for the
    columns in ``lower_is_better``. ``units``: column -> unit in the header (default
    :data:`METRIC_UNITS`). ``names``: column -> header text. ``digits``: significant digits,
    per column (default :data:`METRIC_DIGITS`, 3 for the others) or one for all.
    ``label``: the header of the row labels (default: the index name). ``full``: fold the whole
    ``df``, every column, under the table (an HTML ``<details>``) when ``columns`` leaves some
    out. ``wrap``: text columns whose cells may wrap (long sentences); nothing else wraps.
    ``per_row``: the rows are the quantities (e.g. one metric per row): digits, units (in the
    row label), bold and ``lower_is_better`` then go by row, and ``best`` names rows.
    Missing values show as an en dash.
    """
    cols = list(df.columns if columns is None else columns)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"columns not in the table: {missing}; it has {list(df.columns)}")
    units = METRIC_UNITS if units is None else units
    names = names or {}
    label = label if label is not None else str(df.index.name or "")
    digits = METRIC_DIGITS if digits is None else digits
    if per_row:
        shown, bold = _row_cells(df[cols], digits, best, lower_is_better, best_rows, units)
        units = {}
    else:
        shown, bold = _cells(df, cols, digits, best, lower_is_better, best_rows)
    heads = [names.get(c, str(c)) for c in cols]
    hunits = [units.get(c) for c in cols]
    headers = [_header(h, u) for h, u in zip(heads, hunits)]
    out = _html_table(shown, bold, headers, title, label, wrap)
    extra = [c for c in df.columns if c not in cols]
    if full and extra:
        every = styled_table(df, None, "", None, units, lower_is_better, best_rows, names,
                             digits, label, full=False, wrap=wrap, per_row=per_row)
        out += (
            f"<details><summary>Full table ({len(df.columns)} columns)</summary>"
            f'<div style="overflow-x:auto">{every.html}</div></details>'
        )
    plain = shown.rename(columns=dict(zip(cols, heads))).to_string()
    text = (f"{title}\n" if title else "") + plain
    return Table(f"<div>{out}</div>", text, _width_px(shown, heads, hunits, label, wrap), shown)


SHORT_NAMES = (
    ("Laplacian pyramid (4 levels, max-abs details)", "Laplacian pyramid"),
    ("Laplacian pyramid (4 levels, salience-match details", "Laplacian (salience)"),
    ("guided-filter fusion", "guided filter (GFF)"),
    ("DILRAN as in the paper", "DILRAN, paper"),
    ("DILRAN with the released code's affine", "DILRAN, affine decoder"),
    ("published DILRAN, SFNN max^2", "published, SFNN max\u00b2"),
    ("published DILRAN, SFNN max", "published, SFNN max"),
    ("pixel average (quoted)", "pixel average, quoted"),
)


def short_method(method: str, strategy: str = "", weights: str = "") -> str:
    """A method name of the results tables short enough for one line: e.g. ``"Laplacian pyramid
    (4 levels, max-abs details)"`` -> ``"Laplacian pyramid"``, ``"best variant (...)"`` ->
    ``"best variant: WEIGHTS + STRATEGY"``; ``strategy`` is added to DILRAN rows."""
    if method.startswith("best variant"):
        return f"best variant: {weights} + {strategy}" if weights else "best variant"
    for long, short in SHORT_NAMES:
        if method.startswith(long):
            return f"{short} ({strategy})" if strategy and short.startswith("DILRAN") else short
    return method


def results_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A table of :mod:`dilran_lite.experiments.tables` (Tables 1-3, as read from its CSV)
    indexed by one short label per row (:func:`short_method`; Table 1: ``weights + strategy``),
    made unique, for :func:`styled_table`."""
    labels = []
    for _, row in df.iterrows():
        method, strategy, weights = (
            "" if pd.isna(row.get(k)) else str(row.get(k))
            for k in ("method", "strategy", "weights")
        )
        if str(row.get("table", "")) == "Table 1":
            label = f"{weights} + {strategy}"
        elif str(row.get("table", "")) == "Table 3":
            label = f"{method} ({strategy})"
        else:
            label = short_method(method, strategy, weights)
        labels.append(label)
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    out = df.copy()
    out.index = pd.Index(unique, name="method")
    return out

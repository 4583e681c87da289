"""Tests of dilran_lite.experiments.display: the tables of the results chapters (bold on the
best cell, integers as integers, no NaN, a width that fits the page) and the comparison figure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dilran_lite.experiments import shipped_results
from dilran_lite.experiments.display import (
    DASH,
    PAGE_WIDTH_PX,
    format_column,
    short_method,
    styled_table,
)
from dilran_lite.experiments.figures import score_ratio_figure


@pytest.fixture
def small() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "n_pairs": [41.0, 41.0, np.nan],
            "PSNR": [15.3704, 16.758, 14.8312],
            "SSIM": [0.744368, np.nan, 0.741988],
            "W2_CT": [0.54, 0.77, 0.58],
            "extra": [1.0, 2.5, 3.25],
        },
        index=pd.Index(["fer", "sfnn-max2", "sfnn-spatial"], name="method"),
    )


def test_integers_print_as_integers_and_nan_as_a_dash(small: pd.DataFrame) -> None:
    assert list(format_column(small["n_pairs"])) == ["41", "41", DASH]
    assert list(format_column(pd.Series([0.0, 1.0, 3.0]))) == ["0", "1", "3"]
    t = styled_table(small, ["n_pairs", "PSNR", "SSIM"], "T")
    assert "41.0" not in t.html and "nan" not in t.html.lower() and "NaN" not in t.text
    assert list(t.cells["n_pairs"]) == ["41", "41", DASH]


def test_significant_digits_follow_the_column_magnitude() -> None:
    assert list(format_column(pd.Series([15.3704, 9.5]))) == ["15.4", "9.5"]  # one decimal each
    assert list(format_column(pd.Series([15.3704, 9.5]), digits=4)) == ["15.37", "9.50"]
    assert list(format_column(pd.Series([0.744368, 0.7]))) == ["0.744", "0.700"]
    assert list(format_column(pd.Series([0.744368]), digits=2)) == ["0.74"]
    assert list(format_column(pd.Series([math.inf, 1.25]))) == ["\u221e", "1.25"]
    assert list(format_column(pd.Series(["a", None]))) == ["a", DASH]


def test_bold_marks_the_best_cell_of_each_column(small: pd.DataFrame) -> None:
    t = styled_table(small, ["PSNR", "SSIM", "W2_CT"], "T")
    assert "<b>16.76</b>" in t.html  # the largest PSNR, to 4 digits (METRIC_DIGITS)
    assert "<b>0.744</b>" in t.html  # the largest SSIM, the NaN left out
    assert "<b>0.77" not in t.html  # W2_CT is a weight, not a score: never bold by default
    low = styled_table(small, ["PSNR"], "T", lower_is_better=["PSNR"])
    assert "<b>14.83</b>" in low.html and "<b>16.76</b>" not in low.html
    some = styled_table(small, ["PSNR"], "T", best_rows=["fer", "sfnn-spatial"])
    assert "<b>15.37</b>" in some.html


def test_ties_on_the_shown_digits_are_all_bold() -> None:
    df = pd.DataFrame({"MI": [3.60294, 3.60294, 3.1]}, index=["sfnn-mean", "sfnn-sum", "fer"])
    assert styled_table(df, title="T").html.count("<b>3.60</b>") == 2


def test_units_title_nowrap_and_the_folded_full_table(small: pd.DataFrame) -> None:
    t = styled_table(small, ["PSNR", "SSIM"], "Table 9: a title")
    assert "dB" in t.html and "Table 9: a title" in t.html.split("<thead>")[0]
    assert "white-space:nowrap" in t.html
    assert "<details>" in t.html and "Full table (5 columns)" in t.html
    assert "3.25" in t.html.split("<details>")[1]  # the left-out column, in the folded table
    assert "<details>" not in styled_table(small, None, "T").html
    with pytest.raises(KeyError, match="nope"):
        styled_table(small, ["nope"])


def test_short_method_names() -> None:
    assert short_method("Laplacian pyramid (4 levels, max-abs details)") == "Laplacian pyramid"
    assert short_method("DILRAN as in the paper (paper preset, sfnn-max)", "sfnn-max") == (
        "DILRAN, paper (sfnn-max)"
    )
    assert short_method("best variant (x)", "sfnn-spatial", "dilran-paper") == (
        "best variant: dilran-paper + sfnn-spatial"
    )
    assert short_method("pixel average") == "pixel average"


def test_the_chapter_tables_fit_the_page() -> None:
    """Tables 1-2 of chapter 9 and the comparison of chapter 10, as the chapters show them."""
    from dilran_lite.experiments.display import results_frame
    from dilran_lite.metrics import PAPER_METRICS

    t2 = pd.read_csv(shipped_results("table2_series.csv"))
    shown = styled_table(results_frame(t2), ["n_pairs", *PAPER_METRICS], "Table 2")
    assert shown.width_px <= PAGE_WIDTH_PX, shown.width_px
    beyond = pd.read_csv(shipped_results("beyond_series.csv"), index_col=0)
    from dilran_lite.experiments import BEYOND_METRICS

    b = styled_table(beyond.iloc[:-3], BEYOND_METRICS, "Comparison")
    assert b.width_px <= PAGE_WIDTH_PX, b.width_px


def test_score_ratio_figure() -> None:
    df = pd.DataFrame({"PSNR": [15.0, 16.0], "MI": [3.0, 2.0]}, index=["a", "b"])
    fig = score_ratio_figure(df, ["PSNR", "MI"], "a title")
    ax = fig.axes[0]
    assert ax.get_title() == "a title"
    data = ax.images[0].get_array()
    assert np.allclose(data, [[15 / 16, 1.0], [1.0, 2 / 3]])
    assert len(fig.axes) == 2  # the colour bar


def test_wrapped_text_columns_count_at_most_their_wrap_width() -> None:
    df = pd.DataFrame({"detail": ["a long sentence " * 8]}, index=["claim"])
    assert styled_table(df, title="T").width_px > PAGE_WIDTH_PX
    wrapped = styled_table(df, title="T", wrap=["detail"])
    assert wrapped.width_px < PAGE_WIDTH_PX and "min-width:12em" in wrapped.html


def test_one_quantity_per_row() -> None:
    df = pd.DataFrame({"average": [15.2102, 0.7249, 8.0], "max": [14.0727, 0.7326, 8.0]},
                      index=["PSNR", "SSIM", "EN"])
    t = styled_table(df, title="T", per_row=True)
    assert list(t.cells.loc["PSNR (dB)"]) == ["15.21", "14.07"]
    assert list(t.cells.loc["SSIM"]) == ["0.725", "0.733"]
    assert list(t.cells.loc["EN (bits)"]) == ["8", "8"]
    assert "<b>15.21</b>" in t.html and "<b>0.733</b>" in t.html


def test_mixed_columns_format_the_numbers_only() -> None:
    assert list(format_column(pd.Series([15.31, "average", None, 5.5]))) == [
        "15.3", "average", DASH, "5.5"]
    assert list(format_column(pd.Series([True, False]))) == ["True", "False"]


def test_a_wide_range_keeps_the_digits_of_each_value() -> None:
    assert list(format_column(pd.Series([0.0432, 15.639, 1.431]))) == ["0.0432", "15.6", "1.43"]

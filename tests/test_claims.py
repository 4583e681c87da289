"""Tests of dilran_lite.experiments.claims: the "what reproduces" checks of chapter 9, on small
hand-made tables whose verdicts are known, and on the shipped results (where they must agree
with the chapter's saved output)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from dilran_lite.experiments import STRATEGY_ORDER, check_claims, claims_weights, shipped_results
from dilran_lite.experiments.claims import CLAIM_COLUMNS, find_row, versus

ROOT = Path(__file__).resolve().parents[1]
PSNR = dict(zip(STRATEGY_ORDER, [12.0, 14.0, 15.0, 15.5, 15.0, 15.2, 17.0, 15.2, 13.0]))


def _tables(weights: str = "w") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tables 1-3 as the CSV files hold them, with values chosen so every verdict is known."""
    t1 = pd.DataFrame(
        {
            "weights": weights,
            "strategy": STRATEGY_ORDER,
            "PSNR": [PSNR[s] for s in STRATEGY_ORDER],
            "MI": 3.0,
            "FSIM": 0.8,
            "EN": [4.0 + 0.1 * i for i in range(len(STRATEGY_ORDER))],
        }
    )
    t2 = pd.DataFrame(
        {
            "source": ["measured", "measured", "measured", "quoted: released code"],
            "method": [
                "pixel average",
                "best variant (w + sfnn-max2, chosen on series/val)",
                "best variant (w + sfnn-max2, chosen on series/val)",
                "pixel average (quoted)",
            ],
            "pairs": ["all", "all", "not in any training set (3)", "all"],
            "PSNR": [15.0, 16.0, 99.0, 15.19],
            "MI": [3.5, 3.9, 99.0, 3.45],
            "FSIM": [0.7, 0.8, 0.9, float("nan")],
            "EN": [3.5, 4.5, 99.0, 3.96],
        }
    )
    t3 = pd.DataFrame(
        {
            "method": ["MSE only", "MSE + gradient (lambda1 = 0.2)", "MSE + gradient + perceptual"],
            "strategy": ["sfnn-max", "sfnn-max", "sfnn-max"],
            "PSNR": [15.8, 15.5, float("nan")],
            "MI": [2.9, 3.0, float("nan")],
        }
    )
    return t1, t2, t3


def _verdicts(df: pd.DataFrame) -> dict[str, str]:
    return dict(zip(df["claim"], df["holds here"]))


def test_known_verdicts_on_hand_made_tables() -> None:
    released = [
        dict(split="series", method="published DILRAN, SFNN max", PSNR=15.68, EN=4.22, MI=4.0)
    ]
    got = check_claims(*_tables(), "w", "series", released)
    assert list(got.columns) == CLAIM_COLUMNS
    assert list(got["holds here"]) == [
        "yes",  # sfnn-max2 17.0 > sfnn-max 15.5
        "yes",  # FER 12.0 is the lowest
        "yes",  # mean 15.0 == sum 15.0
        "yes",  # DILRAN 15.5 > average 15.0 (PSNR)
        "no",  # MI 3.0 < 3.5
        "yes",  # FSIM 0.8 > 0.7
        "yes",  # best 16.0 > 15.68: the "all pairs" row, not the leak-free one
        "yes",  # EN 4.5 > 4.22
        "no",  # MI 3.9 < 4.0
        "yes",  # MSE only 15.8 > 15.5
        "yes",  # MI 3.0 > 2.9
        "no",  # EN of 9.8 bits never holds
    ]
    detail = dict(zip(got["claim"], got["detail"]))
    assert detail["SFNN max^2 has a higher PSNR than SFNN max (Table 1)"] == "17.00 vs 15.50 dB (w)"
    assert detail["the gradient loss raises MI (Table 3)"] == "3.000 vs 2.900 bits"
    # EN over Table 1 and the measured rows of Table 2 (not the quoted ones)
    assert detail["EN of about 9.8 bits (Tables 1-3)"].endswith("ours are 3.5 to 99.0")


def test_verdicts_follow_the_numbers() -> None:
    t1, t2, t3 = _tables()
    t1.loc[t1["strategy"] == "sfnn-max2", "PSNR"] = 10.0  # below FER and below sfnn-max
    t1.loc[t1["strategy"] == "sfnn-sum", "PSNR"] = 15.01
    t3.loc[0, "PSNR"] = 15.0
    got = _verdicts(check_claims(t1, t2, t3, "w", "series", []))
    assert got["SFNN max^2 has a higher PSNR than SFNN max (Table 1)"] == "no"
    assert got["FER has the lowest PSNR of the strategies (Table 1)"] == "no"
    assert got["SFNN mean and sum rows are identical"] == "no"
    assert got["MSE only has a slightly higher PSNR than the full loss (Table 3)"] == "no"
    # no released numbers for this split: those claims are left out
    assert not any("published model" in c for c in got)


def test_missing_rows_and_metrics() -> None:
    t1, t2, t3 = _tables()
    # weights without Table 1 rows: no Table 1 claims and no DILRAN row for Table 2
    got = check_claims(t1, t2, t3, "other", "series")
    assert not any("(Table 1)" in c or "pixel average" in c for c in got["claim"])
    # a table without FSIM (the quick mode's metrics): that claim is n/a, the others stand
    got = _verdicts(check_claims(t1.drop(columns="FSIM"), t2.drop(columns="FSIM"), t3, "w"))
    assert got["DILRAN (SFNN max) beats the pixel average on FSIM (Table 2)"] == "n/a"
    assert got["DILRAN (SFNN max) beats the pixel average on PSNR (Table 2)"] == "yes"
    # no ablation rows: no Table 3 claims
    got = check_claims(t1, t2, t3.iloc[:0], "w")
    assert not any("(Table 3)" in c for c in got["claim"])
    assert got["claim"].iloc[-1] == "EN of about 9.8 bits (Tables 1-3)"


def test_find_row_matches_prefixes_as_text() -> None:
    df = pd.DataFrame({"method": ["MSE only", "MSE + gradient"], "strategy": ["sfnn-max2", "x"]})
    assert find_row(df, method="MSE").name == 0
    assert find_row(df, method="MSE +").name == 1
    assert find_row(df, method="MSE", strategy="sfnn-max").name == 0
    assert find_row(df, method="nothing") is None
    assert find_row(pd.DataFrame({"n": [3, 41]}), n="4").name == 1


def test_versus_is_na_on_nan() -> None:
    row = versus("x beats y", {"PSNR": float("nan")}, {"PSNR": 1.0}, "PSNR", ".2f")
    assert row == {"claim": "x beats y", "holds here": "n/a", "detail": "PSNR not in these tables"}
    assert (
        versus("t", {"MI": 2.0}, {"MI": 1.0}, "MI", ".1f", " bits")["detail"] == "2.0 vs 1.0 bits"
    )


def test_claims_weights_skips_placeholder_weights() -> None:
    summary = {
        "splits": {"series": {"weights_used": {"table2_paper_model": "dilran-paper"}}},
        "weights": {"dilran-paper": {"temporary": False}},
    }
    assert claims_weights(summary, "series") == "dilran-paper"
    summary["weights"]["dilran-paper"]["temporary"] = True
    assert claims_weights(summary, "series") == "dilran-lite"


def _shipped(split: str) -> tuple[pd.DataFrame, str]:
    summary = json.loads(shipped_results("summary.json").read_text())
    tables = [
        pd.read_csv(shipped_results(f"{t}_{split}.csv")) for t in ("table1", "table2", "table3")
    ]
    weights = claims_weights(summary, split)
    return check_claims(*tables, weights, split), weights


@pytest.mark.parametrize("split", ["series", "paper"])
def test_shipped_results_every_claim_checked(split: str) -> None:
    got, weights = _shipped(split)
    assert len(got) == 12 and "n/a" not in set(got["holds here"])  # full results: every metric
    t1 = pd.read_csv(shipped_results(f"table1_{split}.csv"))
    psnr = t1[t1["weights"] == weights].set_index("strategy")["PSNR"]
    first = got.iloc[0]
    assert first["detail"] == f"{psnr['sfnn-max2']:.2f} vs {psnr['sfnn-max']:.2f} dB ({weights})"
    assert first["holds here"] == ("yes" if psnr["sfnn-max2"] > psnr["sfnn-max"] else "no")
    assert got.iloc[-1]["holds here"] == "no"


def test_chapter_9_shows_what_the_package_computes() -> None:
    """The claims table saved in chapter 9 equals check_claims on the shipped results."""
    nb = json.loads((ROOT / "notebooks" / "09_reproducing.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "check_claims(" in "".join(c["source"]))
    shown = "".join(
        "".join(o["data"]["text/html"]) for o in cell["outputs"] if "text/html" in o.get("data", {})
    )
    cells = [html.unescape(c) for c in re.findall(r"<td [^>]*>(.*?)</td>", shown)]
    got, _ = _shipped("series")
    assert cells == [str(v) for row in got.itertuples(index=False) for v in row]

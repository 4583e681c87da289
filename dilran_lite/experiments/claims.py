"""What reproduces: the paper's claims checked on our tables (the directions of its claims,
which row beats which, since its absolute values cannot be compared with ours).

:func:`check_claims` reads Tables 1-3 as written by ``python -m dilran_lite.experiments``
(``table1_<split>.csv`` ...) and returns one row per claim: ``claim``, ``holds here``
(``yes`` / ``no`` / ``n/a``) and ``detail`` (the numbers behind the verdict).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .reference import RELEASED_MEASURED

__all__ = [
    "CLAIM_COLUMNS",
    "find_row",
    "claims_weights",
    "claim",
    "versus",
    "table1_claims",
    "average_claims",
    "released_claims",
    "ablation_claims",
    "entropy_claim",
    "check_claims",
]

CLAIM_COLUMNS = ["claim", "holds here", "detail"]
_VERDICT = {True: "yes", False: "no", None: "n/a"}


def find_row(df: pd.DataFrame, **match: str) -> pd.Series | None:
    """The first row of ``df`` whose column ``k`` starts with ``v`` for every ``k=v`` of
    ``match`` (values compared as text); None when no row does."""
    sel = df
    for k, v in match.items():
        sel = sel[sel[k].astype(str).str.startswith(v)]
    return None if sel.empty else sel.iloc[0]


def claims_weights(summary: dict, split: str) -> str:
    """The weights whose Table 1 rows the claims are checked on: DILRAN as in the paper (the
    paper preset), unless its weights were still a placeholder (then ``dilran-lite``)."""
    weights = summary["splits"][split]["weights_used"]["table2_paper_model"]
    if summary["weights"].get(weights, {}).get("temporary"):
        weights = "dilran-lite"
    return weights


def claim(text: str, ok: bool | None, detail: str) -> dict:
    """One row of the claims table (``ok`` None: the claim could not be checked)."""
    return {
        "claim": text,
        "holds here": _VERDICT[None if ok is None else bool(ok)],
        "detail": detail,
    }


def _value(row: pd.Series, metric: str) -> float | None:
    """``row[metric]`` as a float; None when the tables lack the metric or it is NaN."""
    value = row.get(metric)
    return None if value is None or pd.isna(value) else float(value)


def versus(
    text: str, x: pd.Series | dict, y: pd.Series | dict, metric: str, fmt: str, unit: str = ""
) -> dict:
    """The claim ``text`` that ``x`` beats ``y`` on ``metric`` (higher is better), with both
    values (format ``fmt``, then ``unit``) as its detail; ``n/a`` when either is missing."""
    a, b = _value(pd.Series(x), metric), _value(pd.Series(y), metric)
    if a is None or b is None:
        return claim(text, None, f"{metric} not in these tables")
    return claim(text, a > b, f"{a:{fmt}} vs {b:{fmt}}{unit}")


def table1_claims(t1: pd.DataFrame, weights: str) -> list[dict]:
    """Table 1's claims on the rows of ``weights`` (none when it has no rows; ``n/a`` when
    Table 1 has no PSNR)."""
    rows = t1[t1["weights"] == weights]
    if rows.empty:
        return []
    texts = [
        "SFNN max^2 has a higher PSNR than SFNN max (Table 1)",
        "FER has the lowest PSNR of the strategies (Table 1)",
        "SFNN mean and sum rows are identical",
    ]
    if "PSNR" not in rows:
        return [claim(t, None, "PSNR not in these tables") for t in texts]

    def psnr(strategy: str) -> float:
        return float(rows.loc[rows["strategy"] == strategy, "PSNR"].iloc[0])

    lowest = rows.loc[rows["PSNR"].idxmin(), "strategy"]
    return [
        claim(
            texts[0],
            psnr("sfnn-max2") > psnr("sfnn-max"),
            f"{psnr('sfnn-max2'):.2f} vs {psnr('sfnn-max'):.2f} dB ({weights})",
        ),
        claim(
            texts[1],
            psnr("fer") == rows["PSNR"].min(),
            f"FER {psnr('fer'):.2f} dB, lowest {lowest} {rows['PSNR'].min():.2f} dB",
        ),
        claim(
            texts[2],
            psnr("sfnn-mean") == psnr("sfnn-sum"),
            "same weights by construction (the paper's sum^2 row differs from mean^2)",
        ),
    ]


def average_claims(dilran: pd.Series | None, average: pd.Series | None) -> list[dict]:
    """Table 2: DILRAN (SFNN max) against the pixel average on PSNR, MI and FSIM."""
    if dilran is None or average is None:
        return []
    text = "DILRAN (SFNN max) beats the pixel average on {} (Table 2)"
    return [versus(text.format(m), dilran, average, m, ".3f") for m in ("PSNR", "MI", "FSIM")]


def released_claims(best: pd.Series | None, published: dict | None) -> list[dict]:
    """Our best variant against the released model's quoted PSNR, EN and MI (the appendix)."""
    if best is None or published is None:
        return []
    text = "our best variant beats the published model on {} (quoted, appendix)"
    return [versus(text.format(m), best, published, m, ".2f") for m in ("PSNR", "EN", "MI")]


def ablation_claims(mse: pd.Series | None, full: pd.Series | None) -> list[dict]:
    """Table 3: MSE only against MSE + gradient (PSNR a little higher, MI lower)."""
    if mse is None or full is None:
        return []
    return [
        versus(
            "MSE only has a slightly higher PSNR than the full loss (Table 3)",
            mse,
            full,
            "PSNR",
            ".2f",
            " dB",
        ),
        versus("the gradient loss raises MI (Table 3)", full, mse, "MI", ".3f", " bits"),
    ]


def entropy_claim(t1: pd.DataFrame, t2: pd.DataFrame) -> dict:
    """The paper's EN of about 9.8 bits: impossible for 8-bit images; our range of EN."""
    detail = "impossible for 8-bit images (at most 8 bits)"
    if "EN" in t1 and "EN" in t2:
        en = pd.concat([t1["EN"], t2.loc[t2["source"] == "measured", "EN"]])
        detail += f": ours are {en.min():.1f} to {en.max():.1f}"
    return claim("EN of about 9.8 bits (Tables 1-3)", False, detail)


def check_claims(
    t1: pd.DataFrame,
    t2: pd.DataFrame,
    t3: pd.DataFrame,
    weights: str,
    split: str = "series",
    released: Sequence[dict] = RELEASED_MEASURED,
) -> pd.DataFrame:
    """Every claim checked on Tables 1-3 of ``split`` (as read from its CSV files), DILRAN's
    rows taken from ``weights`` (see :func:`claims_weights`); ``released``: the released
    model's quoted numbers. Claims whose rows are missing are left out, except EN's."""
    published = {r["method"]: r for r in released if r["split"] == split}
    dilran = find_row(t1[t1["weights"] == weights], strategy="sfnn-max")
    rows = [
        *table1_claims(t1, weights),
        *average_claims(dilran, find_row(t2, method="pixel average", source="measured")),
        *released_claims(
            find_row(t2, method="best variant", pairs="all"),
            published.get("published DILRAN, SFNN max"),
        ),
        *ablation_claims(
            find_row(t3, method="MSE only", strategy="sfnn-max"),
            find_row(t3, method="MSE + gradient", strategy="sfnn-max"),
        ),
        entropy_claim(t1, t2),
    ]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)

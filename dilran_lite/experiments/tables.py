"""One function per table of the results chapter, each ``(split runs, metrics) -> DataFrame``
(``metrics`` None: the run's own), and :func:`write_tables`, which writes them all as CSV."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .._io import atomic_write
from .plan import SplitRuns
from .reference import (
    PAPER_COLUMNS,
    PAPER_STRATEGY,
    PAPER_TABLES,
    PAPER_TABLES_SOURCE,
    PERCEPTUAL_NOTE,
    RELEASED_MEASURED,
    RELEASED_SOURCE,
    STRATEGY_ORDER,
)
from .runs import Run, mean_scores

__all__ = [
    "TABLE_COLUMNS",
    "table_row",
    "table_frame",
    "table1",
    "table2",
    "table3",
    "gap_table",
    "w2_table",
    "per_image_table",
    "selection_table",
    "paper_tables",
    "write_csv",
    "write_tables",
]

TABLE_COLUMNS = [
    "table",
    "split",
    "source",
    "method",
    "weights",
    "strategy",
    "pairs",
    "n_pairs",
    "n_test_in_train",
    "W2_CT",
]
"""The leading columns of Tables 1-3 and the gap table; the metrics and ``note`` follow."""

LEAK_FREE = "leak-free subset of the test pairs"


def table_row(
    table: str,
    split: str,
    run: Run,
    metrics: Sequence[str],
    seen: set[str] | None,
    label: str,
    subset: set[str] | None = None,
    subset_label: str = "all",
    note: str = "",
) -> dict:
    """One measured row: ``run``'s mean scores over its pairs (those in ``subset`` only, when
    given), with ``n_test_in_train``: how many of them are in ``seen`` (the training pairs)."""
    names = set(run.fused) if subset is None else set(run.fused) & subset
    return {
        "table": table,
        "split": split,
        "source": "measured",
        "method": label,
        "weights": run.weights or "",
        "strategy": run.strategy or "",
        "pairs": subset_label,
        "n_pairs": len(names),
        "n_test_in_train": len(names & seen) if seen is not None else 0,
        **mean_scores(run, metrics, subset),
        "note": note,
    }


def table_frame(rows: list[dict], metrics: Sequence[str]) -> pd.DataFrame:
    """``rows`` as a table with the columns :data:`TABLE_COLUMNS`, ``metrics``, ``note``."""
    return pd.DataFrame(rows).reindex(columns=[*TABLE_COLUMNS, *metrics, "note"])


def table1(sr: SplitRuns, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 1, the fusion strategies: one row per (Table 1 weights, strategy)."""
    metrics = list(metrics or sr.metrics)
    rows = []
    for w in sr.plan["table1"]:
        for s in STRATEGY_ORDER:
            notes = [sr.leak_note(w)]
            if s in ("sfnn-sum", "sfnn-sum2"):
                twin = s.replace("sum", "mean")
                notes.append(f"same weights as {twin} (mean and sum differ by a constant)")
            note = "; ".join(x for x in notes if x)
            rows.append(
                table_row(
                    "Table 1", sr.split, sr.runs[(w, s)], metrics, sr.seen_by(w), s, note=note
                )
            )
    return table_frame(rows, metrics)


def _table2_runs(sr: SplitRuns) -> list[tuple[str, Run, str]]:
    """The measured methods of Table 2 as (label, run, note)."""
    runs = sr.runs
    out: list[tuple[str, Run, str]] = [
        ("pixel average", runs[(None, "average")], ""),
        ("pixel maximum", runs[(None, "max")], ""),
        ("Laplacian pyramid (4 levels, max-abs details)", runs[(None, "laplacian")], ""),
        (
            "Laplacian pyramid (4 levels, salience-match details, Burt & Kolczynski 1993)",
            runs[(None, "laplacian-salience")],
            "",
        ),
        ("guided-filter fusion (GFF, Li, Kang & Hu 2013)", runs[(None, "gff")], ""),
    ]
    paper_w, affine_w = sr.plan["paper_model"], sr.plan["affine_model"]
    if paper_w:
        preset = sr.records.get(paper_w, {}).get("preset", "?")
        label = f"DILRAN as in the paper ({preset} preset, sfnn-max)"
        out.append((label, runs[(paper_w, PAPER_STRATEGY)], sr.leak_note(paper_w)))
    if affine_w:
        label = "DILRAN with the released code's affine reconstructor (paper preset, sfnn-max)"
        out.append((label, runs[(affine_w, PAPER_STRATEGY)], sr.leak_note(affine_w)))
    if sr.selection:
        bw, bs = sr.selection["weights"], sr.selection["strategy"]
        label = f"best variant ({bw} + {bs}, chosen on {sr.val_split})"
        out.append((label, runs[(bw, bs)], sr.leak_note(bw)))
    return out


def _released_rows(split: str, metrics: Sequence[str]) -> list[dict]:
    """The released code's numbers on ``split`` (:data:`RELEASED_MEASURED`) as quoted rows."""
    return [
        {
            "table": "Table 2",
            "split": split,
            "source": RELEASED_SOURCE,
            "method": ref["method"],
            "weights": "released (authors)",
            "pairs": "all",
            "n_pairs": ref["n_pairs"],
            **{m: ref.get(m, math.nan) for m in metrics},
            "note": "the numbers to beat (PSNR, EN, MI only)",
        }
        for ref in RELEASED_MEASURED
        if ref["split"] == split
    ]


def table2(sr: SplitRuns, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 2, the methods: baselines, DILRAN as in the paper, the best variant; again on the
    test pairs no weights were trained on (when some were); the released code's numbers."""
    metrics = list(metrics or sr.metrics)
    methods = _table2_runs(sr)
    rows = [
        table_row("Table 2", sr.split, r, metrics, sr.seen_by(r.weights), lab, note=nt)
        for lab, r, nt in methods
    ]
    names = set(sr.names)
    seen = [sr.seen_by(r.weights) for _, r, _ in methods]
    unseen = names - set().union(*(s or set() for s in seen))
    if any(s and names & s for s in seen):
        sub = f"not in any training set ({len(unseen)})"
        rows += [
            table_row("Table 2", sr.split, r, metrics, s, lab, unseen, sub, LEAK_FREE)
            for (lab, r, _), s in zip(methods, seen)
            if unseen
        ]
    return table_frame(rows + _released_rows(sr.split, metrics), metrics)


def _not_run_row(split: str, strategy: str) -> dict:
    return {
        "table": "Table 3",
        "split": split,
        "source": "not run",
        "method": "MSE + gradient + perceptual",
        "strategy": strategy,
        "note": PERCEPTUAL_NOTE,
    }


def table3(sr: SplitRuns, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 3, the loss ablation: MSE only against MSE + gradient, for the paper's strategy and
    the best variant's; again on the test pairs neither arm saw; the perceptual arm, not run."""
    metrics = list(metrics or sr.metrics)
    mse_w, full_w = sr.plan["ablation"]
    arms = [
        (w, lab) for w, lab in ((mse_w, "MSE only"), (full_w, "MSE + gradient (lambda1 = 0.2)"))
    ]
    arms = [(w, lab) for w, lab in arms if w]
    names = set(sr.names)
    unseen = names - set().union(*(sr.seen_by(w) or set() for w, _ in arms))
    rows = []
    for s in sr.ablation_strategies:
        runs = [(w, lab, sr.runs[(w, s)], sr.seen_by(w)) for w, lab in arms]
        rows += [
            table_row("Table 3", sr.split, r, metrics, seen, lab, note=sr.leak_note(w))
            for w, lab, r, seen in runs
        ]
        if unseen and unseen != names:
            sub = f"not in any training set ({len(unseen)})"
            rows += [
                table_row("Table 3", sr.split, r, metrics, seen, lab, unseen, sub, LEAK_FREE)
                for _, lab, r, seen in runs
            ]
        rows.append(_not_run_row(sr.split, s))
    return table_frame(rows, metrics)


def gap_table(sr: SplitRuns, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Where the paper (and affine) model's image departs from a weighted average: the network's
    image, the weighted average of the autoencoded sources and of the sources themselves, with
    the autoencoder's mean PSNR on each source (``AE_PSNR_MRI``, ``AE_PSNR_CT``, dB). Empty when
    the split has no paper model."""
    metrics = list(metrics or sr.metrics)
    rows = []
    for pw, ae_table in sr.gap_ae.items():
        gap = [
            table_row("Gap", sr.split, r, metrics, sr.seen_by(pw), lab, note=sr.leak_note(pw))
            for lab, r in (
                ("network: decode(W1 f1 + W2 f2)", sr.runs[(pw, PAPER_STRATEGY)]),
                ("W1 D(E(MRI)) + W2 D(E(CT))", sr.runs[(pw, "gap:autoencoded")]),
                ("W1 MRI + W2 CT", sr.runs[(pw, "gap:pixels")]),
            )
        ]
        ae = ae_table[["AE_PSNR_MRI", "AE_PSNR_CT"]].mean()
        for row in gap:
            row.update({k: float(v) for k, v in ae.items()})
        rows += gap
    return table_frame(rows, [*metrics, "AE_PSNR_MRI", "AE_PSNR_CT"])


def w2_table(sr: SplitRuns, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """The CT weight W2 of every DILRAN run on every test pair (one row per pair and run;
    ``metrics`` is unused, for the common signature)."""
    rows = [
        {
            "split": sr.test_split,
            "pair": nm,
            "weights": r.weights,
            "strategy": r.strategy,
            "W2_CT": r.w2.get(nm),
        }
        for (_, s), r in sr.runs.items()
        if r.weights and not s.startswith("gap:")
        for nm in sr.names
    ]
    return pd.DataFrame(rows)


def per_image_table(sr: SplitRuns, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Every run's score on every test pair (index ``image``; ``metrics``: those columns only)."""
    frames = [
        r.scores.assign(method=r.method, weights=r.weights or "", strategy=r.strategy or "")
        for r in sr.runs.values()
    ]
    df = pd.concat(frames)
    return df if metrics is None else df[[*metrics, "method", "weights", "strategy"]]


def selection_table(sr: SplitRuns, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """The validation scores behind the best variant, with ``mean_rank`` and ``selected``
    (empty when there was nothing to choose from; ``metrics`` is unused)."""
    return pd.DataFrame() if sr.val_table is None else sr.val_table


def paper_tables() -> pd.DataFrame:
    """The paper's own Tables 1-3 (:data:`PAPER_TABLES`), one row per method."""
    rows = [
        {"table": t, "method": m, **dict(zip(PAPER_COLUMNS, v)), "source": PAPER_TABLES_SOURCE}
        for t, rows_ in PAPER_TABLES.items()
        for m, v in rows_.items()
    ]
    return pd.DataFrame(rows)


def write_csv(df: pd.DataFrame, path: str | os.PathLike, **kwargs) -> Path:
    """``df.to_csv(path, **kwargs)`` written atomically (``index=False`` unless given)."""
    kwargs.setdefault("index", False)
    return atomic_write(path, lambda tmp: df.to_csv(tmp, **kwargs))


def write_tables(sr: SplitRuns, out: str | os.PathLike) -> list[Path]:
    """Write every table of ``sr`` to ``out`` as ``<table>_<split>.csv``; return the paths."""
    out, split = Path(out), sr.split
    paths = []
    if sr.val_table is not None:
        paths.append(
            write_csv(selection_table(sr), out / f"selection_{split}.csv", float_format="%.6g")
        )
    for name, fn in (("table1", table1), ("table2", table2), ("table3", table3)):
        paths.append(write_csv(fn(sr), out / f"{name}_{split}.csv", float_format="%.6g"))
    gap = gap_table(sr)
    if len(gap):
        paths.append(write_csv(gap, out / f"gap_{split}.csv", float_format="%.6g"))
    paths.append(write_csv(w2_table(sr), out / f"w2_{split}.csv", float_format="%.5g"))
    per_image = per_image_table(sr)
    paths.append(
        write_csv(per_image, out / f"per_image_{split}.csv", index=True, float_format="%.5g")
    )
    return paths

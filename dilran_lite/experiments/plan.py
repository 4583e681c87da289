"""One split from start to scores: which weights play which role (:func:`plan_split`), the best
variant chosen on the validation pairs, every method fused on the test pairs and scored
(:func:`fuse_split`), kept in a :class:`SplitRuns` that every table reads."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from ..baselines import BASELINES
from ..metrics import METRICS
from .reference import PAPER_STRATEGY, QUICK_METRICS, SELECTION_METRICS, STRATEGY_ORDER, WEIGHTS
from .runs import (
    MetricCache,
    Pairs,
    Run,
    fuse_with_baseline,
    fuse_with_model,
    load_models,
    load_split_pairs,
    log,
    reconstruction_gap,
    score_runs,
    select_best_variant,
    shipped_info,
    training_names,
)

__all__ = [
    "torch_threads",
    "default_metrics",
    "selection_metrics",
    "wanted_weights",
    "plan_split",
    "SplitRuns",
    "fuse_split",
]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` torch threads (at least 1), then restore the previous
    count; None leaves the setting alone."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_metrics(metrics: Sequence[str] | None, quick: bool) -> list[str]:
    """``metrics`` as a list; by default every metric, :data:`QUICK_METRICS` when ``quick``."""
    if metrics is not None:
        return list(metrics)
    return list(QUICK_METRICS) if quick else list(METRICS)


def selection_metrics(metrics: Sequence[str]) -> list[str]:
    """The :data:`SELECTION_METRICS` among ``metrics`` (all of ``metrics`` when none are)."""
    return [m for m in SELECTION_METRICS if m in metrics] or list(metrics)


def wanted_weights(quick: bool) -> list[str]:
    """The shipped weights a run uses: all of :data:`WEIGHTS`; the lite ones when ``quick``."""
    return [w for k, w in WEIGHTS.items() if not (quick and k.startswith("paper"))]


def plan_split(split: str, quick: bool, have: Sequence[str]) -> dict:
    """Which of the weights in ``have`` play which role on ``split``; roles left None (or an
    empty Table 1 list) are skipped.

    Keys: ``table1`` (weights whose every strategy is a Table 1 row), ``paper_model`` (DILRAN
    as in the paper, Table 2), ``affine_model`` (the released code's affine reconstructor) and
    ``ablation`` (MSE-only weights, MSE + gradient weights).
    """
    have = set(have)

    def pick(*names: str) -> str | None:
        return next((n for n in names if n in have), None)

    # each split is served by weights trained on its own training part (the series-trained
    # weights saw 12 of the paper split's 20 test pairs); quick mode uses the lite preset only
    sfx = "" if split == "series" else "_paper_split"
    paper, affine = WEIGHTS["paper" + sfx], WEIGHTS["paper_affine" + sfx]
    lite, lite_mse = WEIGHTS["lite" + sfx], WEIGHTS["mse" + sfx]
    return {
        "table1": [w for w in ([] if quick else [paper, affine]) + [lite] if w in have],
        "paper_model": pick(lite) if quick else pick(paper),
        "affine_model": None if quick else pick(affine),
        "ablation": (
            (pick(lite_mse), pick(lite))
            if quick
            else (pick(WEIGHTS["paper_mse" + sfx]), pick(paper))
        ),
    }


@dataclass
class SplitRuns:
    """Every run of one split, fused and scored, and what the tables need to label its rows.

    ``runs`` is keyed by (weights, strategy): ``(None, baseline)`` for the baselines,
    ``(weights, "gap:autoencoded")`` and ``(weights, "gap:pixels")`` for
    :func:`~dilran_lite.experiments.runs.reconstruction_gap`. ``seen``: weights -> the names of
    the pairs it was trained on; ``schemes``: weights -> the split scheme it was trained on.
    """

    split: str
    pairs: Pairs
    data_label: str
    metrics: list[str]
    plan: dict
    seen: dict[str, set[str]]
    schemes: dict[str, str]
    records: dict[str, dict]
    runs: dict[tuple[str | None, str], Run] = field(default_factory=dict)
    selection: dict | None = None
    val_table: pd.DataFrame | None = None
    gap_ae: dict[str, pd.DataFrame] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def test_split(self) -> str:
        return f"{self.split}/test"

    @property
    def val_split(self) -> str:
        return f"{self.split}/val"

    @property
    def names(self) -> list[str]:
        """The test pairs' names, in order."""
        return [nm for _, _, nm in self.pairs]

    @property
    def ablation_strategies(self) -> list[str]:
        """The strategies of Table 3: the paper's, and the best variant's when it differs."""
        out = [PAPER_STRATEGY]
        if self.selection and self.selection["strategy"] not in out:
            out.append(self.selection["strategy"])
        return out

    def seen_by(self, weights: str | None) -> set[str] | None:
        """The training pairs of ``weights``; None for a method without weights."""
        return self.seen.get(weights) if weights else None

    def leak_note(self, weights: str | None) -> str:
        """A row's note on ``weights``: test pairs it was trained on, a checkpoint passed in
        instead of the shipped file, placeholder weights; ``""`` when none applies."""
        if not weights:
            return ""
        names = self.names
        k = len(set(names) & self.seen[weights])
        notes = [f"LEAKY: {k} of {len(names)} test pairs in {weights}'s training set" if k else ""]
        record = self.records.get(weights, {})
        rec_notes = str(record.get("notes") or "")
        if rec_notes.startswith("NOT the shipped file"):
            notes.append(rec_notes.split(". ")[0])
        elif record.get("temporary"):
            notes.append(f"{weights}: TEMPORARY placeholder weights")
        return "; ".join(n for n in notes if n)

    def leakage(self) -> dict:
        """Per weights: its training split and the test pairs it was trained on."""
        names = set(self.names)
        return {
            w: {
                "trained_on": f"{self.schemes[w]}/train",
                "test_pairs_in_train": sorted(names & seen),
                "n_test_pairs_in_train": len(names & seen),
            }
            for w, seen in self.seen.items()
        }


def _choose_variant(
    sr: SplitRuns, models: dict, n: int | None, data: str, cache: MetricCache, jobs: int
) -> None:
    """Choose the best variant on the validation pairs, among the Table 1 weights that saw no
    test pair (all of them when each did): sets ``sr.selection`` and ``sr.val_table``."""
    names = set(sr.names)
    table1 = sr.plan["table1"]
    cands = [(w, s) for w in table1 if not (names & sr.seen[w]) for s in STRATEGY_ORDER]
    if not cands:
        cands = [(w, s) for w in table1 for s in STRATEGY_ORDER]
    if not cands:
        return
    sel_metrics = selection_metrics(sr.metrics)
    t0 = time.perf_counter()
    log(f"{sr.split}: selecting the best variant on {sr.val_split} ({len(cands)} candidates)")
    best, val_table = select_best_variant(
        cands, sr.val_split, models, n, data, cache, jobs, sel_metrics
    )
    val_table.insert(0, "split", sr.val_split)
    sr.val_table = val_table
    sr.selection = {
        "rule": f"lowest mean rank over {sel_metrics} (all higher-is-better) on "
        f"{sr.val_split}, among weights x strategies whose weights saw no {sr.test_split} pair "
        "in training; the test pairs play no part in the choice",
        "val_split": sr.val_split,
        "n_val_pairs": int(val_table["n_pairs"].iloc[0]),
        "candidates": len(cands),
        "weights": best[0],
        "strategy": best[1],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _needs(sr: SplitRuns) -> dict[str, list[str]]:
    """Weights -> the strategies its test images are needed with (each once, in table order)."""
    plan, need = sr.plan, {}
    for w in plan["table1"]:
        need.setdefault(w, []).extend(STRATEGY_ORDER)
    for role in ("paper_model", "affine_model"):
        if plan[role]:
            need.setdefault(plan[role], []).append(PAPER_STRATEGY)
    if sr.selection:
        need.setdefault(sr.selection["weights"], []).append(sr.selection["strategy"])
    for w in plan["ablation"]:
        if w:
            need.setdefault(w, []).extend(sr.ablation_strategies)
    return {w: list(dict.fromkeys(s)) for w, s in need.items()}


def _fuse_all(sr: SplitRuns, models: dict) -> None:
    """Fuse the test pairs: each model encodes each pair once and every strategy reuses the
    features; then the baselines, then the reconstruction gap of the paper (and affine) model."""
    for w, strategies in _needs(sr).items():
        log(f"{sr.split}: fusing {len(sr.pairs)} pairs with {w} x {len(strategies)} strategies")
        for s, run in fuse_with_model(models[w], sr.pairs, strategies, w, sr.test_split).items():
            sr.runs[(w, s)] = run
    for key, fn in BASELINES.items():
        sr.runs[(None, key)] = fuse_with_baseline(fn, sr.pairs, key, sr.test_split)
    roles = (sr.plan["paper_model"], sr.plan["affine_model"])
    for gw in dict.fromkeys(w for w in roles if w):
        gap_runs, sr.gap_ae[gw] = reconstruction_gap(
            models[gw], sr.pairs, PAPER_STRATEGY, gw, sr.test_split
        )
        for k in ("autoencoded", "pixels"):
            sr.runs[(gw, f"gap:{k}")] = gap_runs[k]


def fuse_split(
    split: str,
    models: dict[str, torch.nn.Module] | None = None,
    records: dict[str, dict] | None = None,
    *,
    quick: bool = False,
    data: str = "auto",
    n: int | None = None,
    metrics: Sequence[str] | None = None,
    cache: MetricCache | None = None,
    jobs: int = 1,
) -> SplitRuns:
    """Every run of ``split`` (``"series"`` or ``"paper"``), fused on its test pairs and scored.

    ``models``: weights name -> model (None: the shipped weights, the lite ones when ``quick``);
    ``records``: their :func:`~dilran_lite.experiments.runs.weights_record` (None: made here).
    ``n``: the first ``n`` pairs of the test and validation parts (default: all; 4 when
    ``quick``); ``metrics``: default :func:`default_metrics`. E.g. (seconds, lite weights)::

        table1(fuse_split("series", quick=True))
    """
    n = n if n is not None else (4 if quick else None)
    if records is None:
        models, records, _ = load_models(wanted_weights(quick), models=models)
    cache = cache or MetricCache()
    pairs, label = load_split_pairs(f"{split}/test", n, data)
    log(f"{split}: {label}")
    trained = {w: training_names(w, shipped_info(w)) for w in models}
    sr = SplitRuns(
        split,
        pairs,
        label,
        default_metrics(metrics, quick),
        plan_split(split, quick, list(models)),
        seen={w: t[1] for w, t in trained.items()},
        schemes={w: t[0] for w, t in trained.items()},
        records=records,
    )
    _choose_variant(sr, models, n, data, cache, jobs)
    t0 = time.perf_counter()
    _fuse_all(sr, models)
    sr.seconds["fuse"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    score_runs(list(sr.runs.values()), {sr.test_split: pairs}, sr.metrics, cache, jobs)
    sr.seconds["score"] = time.perf_counter() - t0
    return sr

"""Every table and figure of the results chapter ("Reproducing the paper"), from one command::

    DILRAN_DATA=<folder holding harvard-mri-ct> python -m dilran_lite.experiments --out results
    python -m dilran_lite.experiments --out /tmp/r --quick     # 4 pairs, lite weights: seconds

For each split (``series``: whole scan series held out, leak-free; ``paper``: the paper's 20
random test pairs) it writes to ``--out``:

* ``table1_<split>.csv``: fusion strategies (FER, FL1N, SFNN with every phi, SFNN-spatial) on
  the shipped weights, the paper's Table 1;
* ``table2_<split>.csv``: methods: pixel average, pixel maximum, Laplacian pyramid, DILRAN as in
  the paper (paper preset + SFNN-max), this project's best variant (chosen on the *validation*
  part of the split, see :func:`select_best_variant`), and, labelled ``quoted``, the authors'
  released weights measured under the field's metric definitions (the book's appendix "The
  released DILRAN code, measured");
* ``table3_<split>.csv``: the loss ablation, MSE only vs MSE + gradient (the perceptual term
  needs ImageNet VGG16 weights, which were not available offline: no model uses it);
* ``gap_<split>.csv``: the paper model's SFNN-max image against the same weights applied to the
  autoencoded sources and to the sources themselves (:func:`reconstruction_gap`), with the
  autoencoder's PSNR on each source: what the reconstruction error costs each metric;
* ``selection_<split>.csv``: the validation scores behind the choice of the best variant;
* ``w2_<split>.csv``: the CT weight W2 that every DILRAN strategy gave each test pair;
* ``fusion_grid_<split>.png``: 3 test pairs, sources and every method, with zoomed crops;
* ``reference_paper_tables.csv``: the paper's own Tables 1-3 (its metric code: not comparable);
* ``summary.json``: data, splits, weights (with their sidecar notes), leakage counts, selection,
  command, machine, runtimes.

Options: ``--splits series paper``, ``--pairs N`` (first N pairs), ``--metrics ...``, ``--jobs N``
(processes for the metrics), ``--weights NAME=FILE`` (score a checkpoint, e.g. of a training run
still in progress, in place of shipped weights NAME; the summary and the tables say so).

Every number is the mean over the test pairs of :func:`dilran_lite.metrics.compute_metrics`
(8-bit images, 256 bins, bits, PSNR/SSIM with ``data_range = 1``). Metric values are cached by
the content of the (MRI, CT, fused) 8-bit triple, so a re-run after new weights only scores the
new images; the cache is dropped whenever a metric's definition changes.

The modules, by job:

* :mod:`~dilran_lite.experiments.reference`: the paper's tables, the released code's numbers,
  the constants of the plan (strategies, metrics, weights), :func:`shipped_results`;
* :mod:`~dilran_lite.experiments.runs`: test pairs, shipped models, :class:`Run`, fusing with
  a model or a baseline, :class:`MetricCache`, :func:`score_runs`, :func:`select_best_variant`;
* :mod:`~dilran_lite.experiments.plan`: one split from start to scores (:func:`fuse_split`);
* :mod:`~dilran_lite.experiments.tables`: one function per table (:func:`table1` ...);
* :mod:`~dilran_lite.experiments.figures`: :func:`fusion_grid`, :func:`score_ratio_figure`;
* :mod:`~dilran_lite.experiments.display`: :func:`styled_table`, the tables as the chapters show
  them;
* :mod:`~dilran_lite.experiments.summary`: ``summary.json``;
* :mod:`~dilran_lite.experiments.claims`: the paper's claims checked on the tables;
* :mod:`~dilran_lite.experiments.beyond`: chapter 10's tables (the learned fusion layer);
* ``__main__``: the command line.

One table on a few pairs, e.g. in a notebook: ``table1(fuse_split("series", quick=True))``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .beyond import (
    BEYOND_METRICS,
    BEYOND_WEIGHTS,
    beyond_goal,
    beyond_runs,
    beyond_standing,
    beyond_table,
    colour_pairs,
    run_beyond,
)
from .claims import check_claims, claims_weights, find_row
from .display import results_frame, short_method, styled_table
from .figures import fusion_grid, score_ratio_figure, split_figure
from .plan import (
    SplitRuns,
    default_metrics,
    fuse_split,
    plan_split,
    torch_threads,
    wanted_weights,
)
from .reference import (
    PAPER_STRATEGY,
    PAPER_TABLES,
    PERCEPTUAL_NOTE,
    QUICK_METRICS,
    RELEASED_MEASURED,
    RELEASED_SOURCE,
    SELECTION_METRICS,
    STRATEGY_ORDER,
    WEIGHTS,
    shipped_results,
)
from .runs import (
    MetricCache,
    Pairs,
    Run,
    fuse_with_baseline,
    fuse_with_model,
    load_models,
    load_split_pairs,
    log,
    mean_scores,
    rank_select,
    reconstruction_gap,
    score_runs,
    select_best_variant,
    training_names,
)
from .summary import base_summary, split_summary, write_json
from .tables import (
    gap_table,
    paper_tables,
    per_image_table,
    selection_table,
    table1,
    table2,
    table3,
    w2_table,
    write_csv,
    write_tables,
)

__all__ = [
    "STRATEGY_ORDER",
    "PAPER_STRATEGY",
    "QUICK_METRICS",
    "SELECTION_METRICS",
    "WEIGHTS",
    "RELEASED_MEASURED",
    "RELEASED_SOURCE",
    "PERCEPTUAL_NOTE",
    "shipped_results",
    "PAPER_TABLES",
    "Pairs",
    "MetricCache",
    "Run",
    "load_split_pairs",
    "training_names",
    "fuse_with_model",
    "fuse_with_baseline",
    "score_runs",
    "mean_scores",
    "rank_select",
    "select_best_variant",
    "SplitRuns",
    "plan_split",
    "fuse_split",
    "table1",
    "table2",
    "table3",
    "gap_table",
    "w2_table",
    "per_image_table",
    "selection_table",
    "paper_tables",
    "fusion_grid",
    "score_ratio_figure",
    "styled_table",
    "results_frame",
    "short_method",
    "reconstruction_gap",
    "check_claims",
    "claims_weights",
    "find_row",
    "run_experiments",
    "BEYOND_METRICS",
    "BEYOND_WEIGHTS",
    "beyond_runs",
    "beyond_table",
    "beyond_goal",
    "beyond_standing",
    "colour_pairs",
    "run_beyond",
]

_means = mean_scores  # the name scripts/train_learned.py uses


def run_experiments(
    out: str | os.PathLike,
    splits: Sequence[str] = ("series", "paper"),
    quick: bool = False,
    data: str = "auto",
    n_pairs: int | None = None,
    metrics: Sequence[str] | None = None,
    cache_path: str | os.PathLike | None = None,
    jobs: int = 1,
    models: dict[str, torch.nn.Module] | None = None,
    figure: bool = True,
    command: str | None = None,
    threads: int | None = 1,
    weight_files: dict[str, str] | None = None,
) -> dict:
    """Compute every table and figure of the results chapter into ``out``; return the summary.

    ``quick``: 4 pairs per split part, lite weights only, :data:`QUICK_METRICS` (seconds).
    ``models``: weights name -> model, replacing the shipped ones (tests pass untrained models).
    ``weight_files``: weights name -> checkpoint file used instead of the shipped file (marked
    as such in the summary and the notebook).
    ``cache_path``: the metric cache file (None: in memory only). ``threads``: torch threads
    during the run (1 by default: on a busy CPU, more threads make the SVDs of SFNN many times
    slower); None leaves the setting alone.
    """
    with torch_threads(threads):
        t_start = time.perf_counter()
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        metrics = default_metrics(metrics, quick)
        cache = MetricCache(cache_path)
        models, records, missing = load_models(wanted_weights(quick), weight_files, models)
        for w in missing:
            log(f"weights {w!r} not shipped (yet): rows that need them are skipped")
        summary = base_summary(splits, quick, metrics, records, missing, command)
        write_csv(paper_tables(), out / "reference_paper_tables.csv")
        for split in splits:
            t0 = time.perf_counter()
            sr = fuse_split(
                split,
                models,
                records,
                quick=quick,
                data=data,
                n=n_pairs,
                metrics=metrics,
                cache=cache,
                jobs=jobs,
            )
            write_tables(sr, out)
            fig = split_figure(sr, out) if figure else None
            summary["splits"][split] = split_summary(sr, out, fig, time.perf_counter() - t0)
            log(f"{split}: done in {time.perf_counter() - t0:.0f} s")
        summary["runtime_s"] = round(time.perf_counter() - t_start, 1)
        write_json(summary, out / "summary.json")
    return summary

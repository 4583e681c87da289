"""``python -m dilran_lite.experiments``: every table and figure of chapter 9 (``--only beyond``:
chapter 10's tables) into ``--out``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..metrics import METRICS
from ..settings import cache_dir
from . import run_beyond, run_experiments
from .runs import log
from .summary import DEFAULT_COMMAND

__all__ = ["default_cache", "build_parser", "main"]


def default_cache() -> Path:
    """The metric cache file used unless ``--cache`` or ``--no-cache`` says otherwise."""
    return cache_dir() / "metric-cache.json"


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m dilran_lite.experiments``."""
    p = argparse.ArgumentParser(
        prog="python -m dilran_lite.experiments",
        description="Tables 1-3 and the figure of the results chapter, on both splits.",
    )
    p.add_argument("--out", default="results", help="output folder (default results)")
    p.add_argument("--quick", action="store_true", help="4 pairs, lite weights, cheap metrics")
    p.add_argument("--splits", nargs="+", default=["series", "paper"], choices=["series", "paper"])
    p.add_argument("--data", default="auto", choices=["auto", "atlas", "phantom"])
    p.add_argument("--pairs", type=int, default=None, help="first N pairs of every split part")
    p.add_argument("--metrics", nargs="+", default=None, help=f"subset of {list(METRICS)}")
    p.add_argument("--jobs", type=int, default=1, help="processes for the metrics (default 1)")
    p.add_argument("--cache", default=None, help=f"metric cache file (default {default_cache()})")
    p.add_argument("--no-cache", action="store_true", help="keep metric values in memory only")
    p.add_argument("--no-figure", action="store_true")
    p.add_argument(
        "--weights",
        nargs="+",
        default=[],
        metavar="NAME=FILE",
        help="use a checkpoint file instead of shipped weights NAME (e.g. a run in progress)",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: best on a busy CPU)"
    )
    p.add_argument(
        "--colour",
        nargs="*",
        default=["mri-pet", "mri-spect"],
        help="with --only beyond: colour pairs scored on the Y channel (default mri-pet mri-spect)",
    )
    p.add_argument(
        "--only",
        choices=["beyond"],
        default=None,
        help="beyond: only the learned fusion's 8-metric tables (beyond_*.csv)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv``, run :func:`run_experiments`, print where the files are."""
    args = build_parser().parse_args(argv)
    cache = None if args.no_cache else (args.cache or default_cache())
    if args.only == "beyond":
        torch.set_num_threads(args.threads)
        run_beyond(
            args.out,
            args.splits,
            colour=args.colour,
            n_pairs=args.pairs,
            data=args.data,
            cache_path=cache,
            jobs=args.jobs,
        )
        log(f"wrote {args.out}/beyond_*.csv")
        return 0
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = f"{DEFAULT_COMMAND} " + " ".join(argv_list)
    summary = run_experiments(
        args.out,
        splits=args.splits,
        quick=args.quick,
        data=args.data,
        n_pairs=args.pairs,
        metrics=args.metrics,
        cache_path=cache,
        jobs=args.jobs,
        figure=not args.no_figure,
        command=command.strip(),
        threads=args.threads,
        weight_files=dict(w.split("=", 1) for w in args.weights),
    )
    log(f"wrote {args.out}/ in {summary['runtime_s']:.0f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

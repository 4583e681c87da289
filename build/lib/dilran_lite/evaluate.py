"""Evaluate a fusion method on a set of image pairs: one row of metrics per image, plus the mean.

``evaluate(method, dataset, split)`` fuses every pair of ``dataset`` with ``method``, computes
:data:`dilran_lite.metrics.METRICS` (or a chosen subset) on the 8-bit images and returns a
:class:`pandas.DataFrame`. The same is available from the command line::

    python -m dilran_lite.evaluate --method average --split series/test --csv results/avg.csv

(``dilran-lite evaluate`` forwards its arguments to :func:`main`.)
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Union

import numpy as np
import pandas as pd
import torch

from .metrics import METRICS, compute_metrics

__all__ = ["BUILTIN_METHODS", "evaluate", "main", "build_parser", "run_from_args"]

FuseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _average(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + b)


def _maximum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.maximum(a, b)


BUILTIN_METHODS: dict[str, FuseFn] = {"average": _average, "max": _maximum}
"""Baselines with no network: the pixel average and the pixel maximum of the two sources."""


def _resolve_method(method: Union[str, FuseFn]) -> FuseFn:
    if isinstance(method, str):
        try:
            return BUILTIN_METHODS[method]
        except KeyError:
            raise ValueError(
                f"unknown built-in method {method!r}; choose one of {sorted(BUILTIN_METHODS)} "
                "or pass a callable (a, b) -> fused"
            ) from None
    if not callable(method):
        raise TypeError(f"method must be a callable or a string, got {type(method).__name__}")
    return method


def _resolve_dataset(dataset, split: str | None):
    if isinstance(dataset, (str, Path)):
        from .data import PairedDataset  # imported lazily: data.py is optional for metrics

        split = split or "series/test"
        if Path(dataset).is_dir():
            return PairedDataset(root=Path(dataset), split=split)
        return PairedDataset(pairs=str(dataset), split=split)
    if split is not None:
        raise ValueError("split is only used when dataset is a name or a folder, not a dataset")
    return dataset


def _to_image(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    return x


def evaluate(
    method: Union[str, FuseFn],
    dataset: Union[str, os.PathLike, Sequence],
    split: str | None = None,
    metrics: Sequence[str] | None = None,
    csv_path: Union[str, os.PathLike, None] = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Fuse every pair of ``dataset`` with ``method`` and tabulate the fusion metrics.

    Args:
        method: a callable ``(a, b) -> fused`` on float tensors (1, H, W) in [0, 1], or the name
            of a built-in baseline: ``"average"`` or ``"max"``. It runs under ``torch.no_grad``.
            The fused image is clamped to [0, 1] before scoring (a network may overshoot).
        dataset: any sequence of ``(a, b, name)`` with ``a``, ``b`` float tensors (1, H, W) in
            [0, 1] (e.g. ``dilran_lite.data.PairedDataset``); or a pair-set name (``"mri-ct"``)
            or a folder, from which ``PairedDataset`` is built with ``split``.
        split: the split for a named dataset (default ``"series/test"``); must be None when a
            dataset object is passed.
        metrics: metric names from :data:`dilran_lite.metrics.METRICS` (default: all).
        csv_path: where to write the table as CSV (parent folders are created).
        progress: show a tqdm progress bar.

    Returns:
        A DataFrame indexed by image name (index name ``"image"``), one column per metric,
        followed by one last row labelled ``"mean"``: the mean over the images (NaN values, for
        a metric undefined on an image, are skipped). The means are also in
        ``df.attrs["mean"]`` (a dict); use ``df.drop(index="mean")`` for the per-image rows.
        The CSV holds exactly this table.
    """
    fuse = _resolve_method(method)
    data = _resolve_dataset(dataset, split)
    names = list(METRICS) if metrics is None else list(metrics)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; known: {list(METRICS)}")
    try:
        total = len(data)
    except TypeError:
        total = None
    iterator = iter(data)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=total, desc="evaluate", leave=False)

    rows: dict[str, dict[str, float]] = {}
    for i, item in enumerate(iterator):
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"dataset item {i} must be (a, b, name), got {type(item).__name__}")
        a, b, name = item
        a = _to_image(a, "a").float()
        b = _to_image(b, "b").float()
        with torch.no_grad():
            fused = fuse(a, b)
        fused = _to_image(fused, "fused image").detach().float().cpu()
        if fused.shape != a.shape:
            raise ValueError(
                f"method returned shape {tuple(fused.shape)} for inputs of shape {tuple(a.shape)}"
            )
        if not torch.isfinite(fused).all():
            raise ValueError(f"method returned NaN or infinite values for image {name!r}")
        fused = fused.clamp(0.0, 1.0)
        key = str(name)
        if key in rows:
            raise ValueError(f"duplicate image name {key!r} in the dataset")
        rows[key] = compute_metrics(a, b, fused, names)
    if not rows:
        raise ValueError("the dataset is empty")

    table = pd.DataFrame.from_dict(rows, orient="index", columns=names)
    table.index.name = "image"
    with np.errstate(all="ignore"):
        mean = table.replace([math.inf, -math.inf], np.nan).mean(axis=0, skipna=True)
    # An infinite PSNR (F equal to a source) makes the mean infinite too: keep it honest.
    for col in names:
        if np.isinf(table[col]).any():
            mean[col] = math.inf
    table.loc["mean"] = mean
    table.attrs["mean"] = {k: float(v) for k, v in mean.items()}
    if csv_path is not None:
        path = Path(csv_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, float_format="%.6g")
    return table


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``dilran-lite evaluate`` (added to ``parser`` when given)."""
    p = parser or argparse.ArgumentParser(
        prog="dilran-lite evaluate", description="Fusion metrics of a method on a split."
    )
    p.add_argument("--method", default="average", choices=sorted(BUILTIN_METHODS))
    p.add_argument("--dataset", default="mri-ct", help="pair-set name or folder (default mri-ct)")
    p.add_argument("--split", default="series/test", help="e.g. series/test, paper/test")
    p.add_argument("--metrics", nargs="*", default=None, help=f"subset of {list(METRICS)}")
    p.add_argument("--csv", default=None, help="write the table to this CSV file")
    p.add_argument("--no-progress", action="store_true")
    return p


def run_from_args(args: argparse.Namespace, method: FuseFn | None = None) -> int:
    """Run an evaluation from parsed :func:`build_parser` arguments; print the table; return 0.

    For ``dilran-lite evaluate``: ``build_parser(subparsers.add_parser("evaluate"))`` and
    then ``run_from_args(args)``; ``method`` (e.g. a trained model) replaces ``args.method``.
    """
    table = evaluate(
        method if method is not None else args.method,
        args.dataset,
        split=args.split,
        metrics=args.metrics,
        csv_path=args.csv,
        progress=not args.no_progress,
    )
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(table.round(4).to_string())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m dilran_lite.evaluate``): parse ``argv``, run."""
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

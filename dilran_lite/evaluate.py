"""Evaluate a fusion method on a set of image pairs: one row of metrics per image, plus the mean.

``evaluate(method, dataset, split)`` fuses every pair of ``dataset`` with ``method``, computes
:data:`dilran_lite.metrics.METRICS` (or a chosen subset) on the 8-bit images and returns a
:class:`pandas.DataFrame`. ``evaluate_folder(fused_dir, dataset, split)`` scores a folder of
fused images made elsewhere (a user's own method, another paper's outputs), named as
``dilran-lite fuse --data`` names them (``<NAME>.png``). For the colour pairs (MRI-PET,
MRI-SPECT) the colour source and the fused image are scored on their Y channel (BT.601, see
:mod:`dilran_lite.color`). The same is available from the command line::

    python -m dilran_lite.evaluate --method average --split series/test --csv results/avg.csv
    dilran-lite evaluate --fused out/ --dataset data/harvard-mri-ct --split series/test

(``dilran-lite evaluate`` forwards its arguments to :func:`run_from_args`.)

``convention=`` (``--convention``) scores under a named evaluator convention of
:mod:`dilran_lite.conventions` instead of the package's definitions (``textbook``): ``cddfuse``,
``cddfuse-dr255``, ``vifb`` or ``fmi-m``, with that evaluator's own metric names as columns. The
convention is in ``df.attrs["convention"]`` and, with ``csv_path``, in a sidecar file beside
the CSV (``scores.csv`` -> ``scores.csv.convention.json``: name, source, image reading, stretch,
and each metric's unit and pair rule).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Union

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .baselines import BASELINES
from .color import fuse_colour, rgb_to_luma
from .conventions import CONVENTIONS, DEFAULT_CONVENTION, describe, get_convention, score, stretch
from .errors import UserError
from .inference import fuse_pair, fused_filename, make_fuser

__all__ = [
    "BUILTIN_METHODS",
    "evaluate",
    "evaluate_folder",
    "resolve_dataset",
    "sidecar_path",
    "main",
    "build_parser",
    "check_args",
    "run_from_args",
]

FuseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _average(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if b.shape[-3] == 3 and a.shape[-3] == 1:  # a colour source: fuse on Y, keep Cb and Cr
        return fuse_colour(a, b, _average)
    return 0.5 * (a + b)


def _maximum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if b.shape[-3] == 3 and a.shape[-3] == 1:
        return fuse_colour(a, b, _maximum)
    return torch.maximum(a, b)


BUILTIN_METHODS: dict[str, FuseFn] = {"average": _average, "max": _maximum}
"""Baselines with no network: the pixel average and the pixel maximum of the two sources."""


def _resolve_method(method) -> FuseFn:
    """``(a, b) -> fused`` for a built-in name, a baseline name, a model (a DILRAN with the
    default strategy, the learned fusion) or a callable: :func:`dilran_lite.inference.make_fuser`
    is the one interface; colour pairs go through :func:`~dilran_lite.inference.fuse_pair`."""
    if isinstance(method, str) and method in BUILTIN_METHODS:
        return BUILTIN_METHODS[method]
    if isinstance(method, str) and method not in BASELINES:
        raise ValueError(
            f"unknown built-in method {method!r}; choose one of "
            f"{sorted({*BUILTIN_METHODS, *BASELINES})} or pass a callable (a, b) -> fused"
        )
    if isinstance(method, (str, nn.Module)):
        fuser = make_fuser(method)
        return lambda a, b: fuse_pair(fuser, a, b)
    if not callable(method):
        raise TypeError(f"method must be a callable or a string, got {type(method).__name__}")
    return method


def guess_pairs(folder: str | os.PathLike) -> str:
    """The pair set of a dataset folder (or a data root holding one) from its sub-folders, as
    ``dilran-lite fuse --data`` guesses it: ``CT/`` -> mri-ct, ``PET/`` -> mri-pet, ..."""
    from .data import DATASET_DIRS, PAIRS

    root = Path(folder)
    for pairs, (_, other) in PAIRS.items():
        if (root / other).is_dir() or (root / DATASET_DIRS[pairs] / other).is_dir():
            return pairs
    return "mri-ct"


def resolve_dataset(dataset, split: str | None = None, pairs: str | None = None):
    """A dataset of ``(a, b, name)`` from ``dataset``: a pair-set name (``"mri-pet"``), a folder
    (a dataset folder or a data root; its pair set guessed from its sub-folders unless ``pairs``
    is given), or a dataset object (returned as it is; ``split`` and ``pairs`` must be None).
    A folder or a name is read with ``split`` (default ``"series/test"``); problems with it
    raise :class:`UserError` naming the folder."""
    from .data import PAIRS, PairedDataset  # imported lazily: data.py is optional for metrics

    if pairs is not None and pairs not in PAIRS:
        raise UserError(f"unknown pairs {pairs!r}: choose one of {', '.join(PAIRS)}")
    if not isinstance(dataset, (str, Path)):
        if split is not None or pairs is not None:
            raise ValueError(
                "split and pairs are only used when dataset is a name or a folder, not a dataset"
            )
        return dataset
    split = split or "series/test"
    try:
        if str(dataset) in PAIRS:
            if pairs is not None and pairs != str(dataset):
                raise UserError(f"dataset {dataset!r} and pairs {pairs!r} disagree: give one")
            return PairedDataset(pairs=str(dataset), split=split)
        if not Path(dataset).is_dir():
            raise UserError(
                f"dataset {str(dataset)!r} is neither a folder nor one of {', '.join(PAIRS)}"
            )
        return PairedDataset(Path(dataset), pairs=pairs or guess_pairs(dataset), split=split)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise UserError(str(err).strip("'\"")) from err


_resolve_dataset = resolve_dataset


def _check_csv(csv_path) -> Path | None:
    """The CSV path, checked to be writable before any work (its folder is created)."""
    if csv_path is None:
        return None
    path = Path(csv_path)
    if path.is_dir():
        raise UserError(f"--csv {path} is a folder: give a file name such as {path / 'scores.csv'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the folder of --csv {path}: {err.strerror}") from err
    writable = os.access(path, os.W_OK) if path.exists() else os.access(path.parent, os.W_OK)
    if not writable:
        raise UserError(f"cannot write --csv {path}: permission denied; choose another path")
    return path


def _score(a: torch.Tensor, b: torch.Tensor, fused: torch.Tensor, names, conv) -> dict[str, float]:
    """Metrics of one triple under convention ``conv``; a colour source and a colour fused image
    are scored on Y."""
    if b.shape[-3] == 3:
        b = rgb_to_luma(b)
    if fused.shape[-3] == 3:
        fused = rgb_to_luma(fused)
    return score(conv, a, b, fused, names)


def sidecar_path(csv_path: Union[str, os.PathLike]) -> Path:
    """The file beside a results CSV that records its convention: ``NAME.csv.convention.json``."""
    path = Path(csv_path)
    return path.with_name(path.name + ".convention.json")


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.dilran-partial.tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_sidecar(csv: Path, conv_name: str) -> None:
    """Record the convention of ``csv`` (name, source, reading, stretch, units) beside it."""
    conv = get_convention(conv_name)
    info = {
        "convention": conv.name,
        "source": conv.source,
        "image_reading": conv.reading,
        "stretch": conv.stretch,
        "metrics": describe(conv),
        "csv": csv.name,
    }
    text = json.dumps(info, indent=1) + "\n"
    _write_atomic(sidecar_path(csv), lambda p: p.write_text(text, encoding="utf-8"))


def _table(
    rows: dict[str, dict[str, float]],
    names: list[str],
    csv: Path | None,
    convention: str = DEFAULT_CONVENTION,
) -> pd.DataFrame:
    """One row per image, then the ``mean`` row (also in ``attrs["mean"]``); written to ``csv``
    atomically when given, with the convention in a sidecar (:func:`sidecar_path`)."""
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
    table.attrs["convention"] = convention
    if csv is not None:
        _write_atomic(csv, lambda p: table.to_csv(p, float_format="%.6g"))
        _write_sidecar(csv, convention)
    return table


def _convention(convention: str | None) -> str:
    """The convention's name, checked (:class:`UserError` naming the known ones)."""
    try:
        return get_convention(convention).name
    except ValueError as err:
        raise UserError(str(err)) from err


def _metric_names(metrics: Sequence[str] | None, convention: str | None = None) -> list[str]:
    known = get_convention(convention).names
    names = known if metrics is None else list(metrics)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; known: {known}")
    return names


def _to_image(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    return x


def _fused_for_scoring(fuse: FuseFn, a: torch.Tensor, b: torch.Tensor, name, stretched: bool):
    """The method's fused image of one pair, checked, (min-max stretched if ``stretched``) and
    clamped to [0, 1]."""
    with torch.no_grad():
        fused = fuse(a, b)
    fused = _to_image(fused, "fused image").detach().float().cpu()
    if fused.shape != a.shape and fused.shape != b.shape:
        raise ValueError(
            f"method returned shape {tuple(fused.shape)} for inputs of shape {tuple(a.shape)}"
        )
    if not torch.isfinite(fused).all():
        raise ValueError(f"method returned NaN or infinite values for image {name!r}")
    if stretched:
        fused = stretch(fused)
    return fused.clamp(0.0, 1.0)


def evaluate(
    method: Union[str, FuseFn],
    dataset: Union[str, os.PathLike, Sequence],
    split: str | None = None,
    metrics: Sequence[str] | None = None,
    csv_path: Union[str, os.PathLike, None] = None,
    progress: bool = True,
    convention: str | None = None,
) -> pd.DataFrame:
    """Fuse every pair of ``dataset`` with ``method`` and tabulate the fusion metrics.

    Args:
        method: a callable ``(a, b) -> fused`` on float tensors (1, H, W) in [0, 1], or the name
            of a built-in baseline: ``"average"`` or ``"max"``. It runs under ``torch.no_grad``.
            The fused image is clamped to [0, 1] before scoring (a network may overshoot).
        dataset: any sequence of ``(a, b, name)`` with ``a``, ``b`` float tensors (1, H, W) in
            [0, 1] (e.g. ``dilran_lite.data.PairedDataset``); or a pair-set name (``"mri-ct"``)
            or a folder (its pair set guessed), from which ``PairedDataset`` is built with
            ``split``. For the colour pairs ``b`` is (3, H, W) RGB; the method may return the
            fused Y (1, H, W) or an RGB image, and ``b`` and an RGB result are scored on Y.
        split: the split for a named dataset (default ``"series/test"``); must be None when a
            dataset object is passed.
        metrics: metric names of the convention (default: all of them; for ``textbook``
            those of :data:`dilran_lite.metrics.METRICS`).
        csv_path: where to write the table as CSV (parent folders are created; checked to be
            writable before any work; written atomically), with the convention recorded beside
            it (:func:`sidecar_path`).
        progress: show a tqdm progress bar.
        convention: a name of :data:`dilran_lite.conventions.CONVENTIONS` (default
            ``textbook``). A convention whose evaluator stretches the fused image (``cddfuse``:
            min-max to the full range, as CDDFuse's test script does before saving) gets the
            method's output stretched before it is scored.

    Returns:
        A DataFrame indexed by image name (index name ``"image"``), one column per metric,
        followed by one last row labelled ``"mean"``: the mean over the images (NaN values, for
        a metric undefined on an image, are skipped). The means are also in
        ``df.attrs["mean"]`` (a dict); use ``df.drop(index="mean")`` for the per-image rows.
        The CSV holds exactly this table; ``df.attrs["convention"]`` names the convention.
    """
    fuse = _resolve_method(method)
    conv = _convention(convention)
    names = _metric_names(metrics, conv)
    csv = _check_csv(csv_path)
    data = resolve_dataset(dataset, split)
    rows = _score_dataset(fuse, data, names, conv, progress)
    return _table(rows, names, csv, conv)


def _score_dataset(fuse: FuseFn, data, names: list[str], conv: str, progress: bool) -> dict:
    """``{name: {metric: value}}`` for every ``(a, b, name)`` of ``data`` fused by ``fuse``."""
    try:
        total = len(data)
    except TypeError:
        total = None
    iterator = iter(data)
    if progress:
        iterator = tqdm(iterator, total=total, desc="evaluate", leave=False)
    stretch = get_convention(conv).stretch != "none"
    rows: dict[str, dict[str, float]] = {}
    for i, item in enumerate(iterator):
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"dataset item {i} must be (a, b, name), got {type(item).__name__}")
        a, b, name = item
        a, b = _to_image(a, "a").float(), _to_image(b, "b").float()
        fused = _fused_for_scoring(fuse, a, b, name, stretch)
        key = str(name)
        if key in rows:
            raise ValueError(f"duplicate image name {key!r} in the dataset")
        rows[key] = _score(a, b, fused, names, conv)
    return rows


def _expected(data) -> list[tuple[str, tuple[int, int], bool]]:
    """``(name, (H, W), colour)`` of every pair, from the file headers of a PairedDataset
    (nothing decoded), else from the items."""
    from .data import PairedDataset, image_size

    if isinstance(data, PairedDataset):
        colour = data.modalities[1] not in ("CT", "MRI")
        return [(n, image_size(data.path(n, data.modalities[0])), colour) for n in data.names]
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"dataset item {i} must be (a, b, name), got {type(item).__name__}")
        a, b, name = item
        out.append((str(name), tuple(a.shape[-2:]), b.shape[-3] == 3))
    return out


def _check_fused_folder(folder: Path, expected) -> None:
    """Name every missing, unreadable or mis-sized fused image before any work."""
    from PIL import Image, UnidentifiedImageError

    if not folder.is_dir():
        raise UserError(f"fused folder {folder} not found: give the folder `fuse --data` wrote")
    missing, bad = [], []
    for name, size, _ in expected:
        path = folder / fused_filename(name)
        if not path.is_file():
            missing.append(path.name)
            continue
        try:
            with Image.open(path) as im:
                w, h = im.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            bad.append(f"{path.name} (unreadable)")
            continue
        if (h, w) != tuple(size):
            bad.append(f"{path.name} ({h}x{w}, sources {size[0]}x{size[1]})")
    if missing or bad:
        parts = []
        if missing:
            more = " ..." if len(missing) > 5 else ""
            parts.append(f"{len(missing)} missing: {', '.join(missing[:5])}{more}")
        if bad:
            parts.append(
                f"{len(bad)} unusable: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}"
            )
        raise UserError(
            f"fused folder {folder} does not fit the {len(expected)} pairs: {'; '.join(parts)}. "
            "Fuse the same pairs and split (fuse --data D --split S -o FOLDER)"
        )


def evaluate_folder(
    fused_dir: Union[str, os.PathLike],
    dataset: Union[str, os.PathLike, Sequence] = "mri-ct",
    split: str | None = None,
    pairs: str | None = None,
    metrics: Sequence[str] | None = None,
    csv_path: Union[str, os.PathLike, None] = None,
    progress: bool = True,
    convention: str | None = None,
) -> pd.DataFrame:
    """Score the fused images in ``fused_dir`` against the sources of ``dataset``.

    ``fused_dir`` holds one ``<NAME>.png`` per pair (as ``dilran-lite fuse --data`` and
    :func:`dilran_lite.inference.fuse_dataset` write them; other files are ignored): 8-bit
    grey, or RGB for the colour pairs (scored on Y, as is the colour source). ``dataset``,
    ``split`` and ``pairs``: as :func:`resolve_dataset` (a name, a folder whose pair set is
    guessed, or any sequence of ``(a, b, name)`` such as a phantom). Every missing, unreadable
    or mis-sized image and an unwritable ``csv_path`` are named before any work
    (:class:`UserError`). ``convention``: as :func:`evaluate`; the saved images are scored as
    they are (no stretch). Returns the table of :func:`evaluate`.
    """
    from .data import load_image

    conv = _convention(convention)
    names = _metric_names(metrics, conv)
    csv = _check_csv(csv_path)
    data = resolve_dataset(dataset, split, pairs)
    folder = Path(fused_dir)
    expected = _expected(data)
    _check_fused_folder(folder, expected)
    iterator = iter(data)
    if progress:
        iterator = tqdm(iterator, total=len(expected), desc="evaluate", leave=False)
    rows: dict[str, dict[str, float]] = {}
    for (name, _, colour), (a, b, _) in zip(expected, iterator):
        path = folder / fused_filename(name)
        try:
            fused = load_image(path, "RGB" if colour else "L")
        except (FileNotFoundError, ValueError) as err:
            raise UserError(str(err)) from err
        if name in rows:
            raise ValueError(f"duplicate image name {name!r} in the dataset")
        rows[name] = _score(a.float(), b.float(), fused, names, conv)
    return _table(rows, names, csv, conv)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``dilran-lite evaluate`` (added to ``parser`` when given)."""
    p = parser or argparse.ArgumentParser(
        prog="dilran-lite evaluate", description="Fusion metrics of a method on a split."
    )
    p.add_argument(
        "--method",
        default=None,
        choices=sorted(BUILTIN_METHODS),
        help="a baseline (default average)",
    )
    p.add_argument("--fused", default=None, help="score this folder of fused NAME.png images")
    p.add_argument("--dataset", default="mri-ct", help="pair-set name or folder (default mri-ct)")
    p.add_argument("--pairs", default=None, help="with a --dataset folder: mri-ct, mri-pet, ...")
    p.add_argument("--split", default="series/test", help="e.g. series/test, paper/test")
    p.add_argument(
        "--metrics", nargs="*", default=None, help="a subset of the convention's metrics"
    )
    p.add_argument(
        "--convention",
        default=DEFAULT_CONVENTION,
        choices=list(CONVENTIONS),
        help="evaluator convention: the package's (textbook, default) or a published "
        "evaluator's, with its own metric names (see dilran_lite.conventions)",
    )
    p.add_argument("--csv", default=None, help="write the table to this CSV file")
    p.add_argument("--no-progress", action="store_true")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Refuse conflicting or bad options (:class:`UserError`) before anything is loaded."""
    weights = getattr(args, "weights", None)
    given = [f for f, v in (("--fused", args.fused), ("--method", args.method)) if v]
    given += ["--weights"] if weights else []
    if len(given) > 1:
        raise UserError(
            f"give one of --method, --weights or --fused, not {' and '.join(given)}: each names "
            "what is scored"
        )
    _metric_names_or_exit(args.metrics, getattr(args, "convention", None))
    _check_csv(args.csv)


def _metric_names_or_exit(metrics, convention: str | None = None) -> list[str]:
    try:
        return _metric_names(metrics, _convention(convention))
    except KeyError as err:
        raise UserError(str(err).strip("'\"")) from err


def _print(table: pd.DataFrame) -> None:
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(table.round(4).to_string())


def run_from_args(args: argparse.Namespace, method: FuseFn | None = None) -> int:
    """Run an evaluation from parsed :func:`build_parser` arguments; print the table; return 0.

    For ``dilran-lite evaluate``: ``build_parser(subparsers.add_parser("evaluate"))`` and
    then ``run_from_args(args)``; ``method`` (e.g. a trained model) replaces ``args.method``;
    ``--fused DIR`` scores a folder of fused images instead (:func:`evaluate_folder`).
    """
    check_args(args)
    progress = not args.no_progress
    if args.fused:
        table = evaluate_folder(
            args.fused,
            args.dataset,
            split=args.split,
            pairs=args.pairs,
            metrics=args.metrics,
            csv_path=args.csv,
            progress=progress,
            convention=getattr(args, "convention", None),
        )
    else:
        data = resolve_dataset(args.dataset, args.split, args.pairs)
        table = evaluate(
            method if method is not None else args.method or "average",
            data,
            metrics=args.metrics,
            csv_path=args.csv,
            progress=progress,
            convention=getattr(args, "convention", None),
        )
    _print(table)
    if args.csv:
        print(f"wrote {args.csv}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m dilran_lite.evaluate``): parse ``argv``, run; a
    :class:`UserError` is printed as one line with exit status 2."""
    import sys

    try:
        return run_from_args(build_parser().parse_args(argv))
    except UserError as err:
        print(f"dilran-lite evaluate: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

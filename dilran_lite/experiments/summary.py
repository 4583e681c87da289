"""``summary.json``: what a results folder holds and how it was made (data, splits, weights with
their notes, leakage, the selection, the command, the machine, runtimes)."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .._io import atomic_write_text
from ..conventions import DEFAULT_CONVENTION
from .plan import SplitRuns, selection_metrics
from .reference import (
    METRIC_CONVENTIONS,
    PAPER_TABLES_NOTE,
    PERCEPTUAL_NOTE,
    RELEASED_MEASURED,
    RELEASED_SOURCE,
)

__all__ = ["machine_info", "base_summary", "split_summary", "json_default", "write_json"]

DEFAULT_COMMAND = "DILRAN_DATA=<folder holding harvard-mri-ct> python -m dilran_lite.experiments"


def machine_info() -> dict:
    """The machine the results were computed on (CPU only)."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": "cpu",
        "note": "2 CPU cores shared with other jobs: runtimes are indicative only",
    }


def base_summary(
    splits: Sequence[str],
    quick: bool,
    metrics: Sequence[str],
    records: dict,
    missing: Sequence[str],
    command: str | None = None,
) -> dict:
    """The summary before any split is run (``splits`` filled by :func:`split_summary`)."""
    command = command or (
        f"{DEFAULT_COMMAND} --out results --splits {' '.join(splits)}"
        + (" --quick" if quick else "")
    )
    return {
        "title": "Results of dilran-lite against the DILRAN paper (arXiv 2212.04661)",
        "command": command,
        "quick": quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "package_version": __version__,
        "machine": machine_info(),
        "metrics": {
            "names": list(metrics),
            "convention": DEFAULT_CONVENTION,
            "conventions": METRIC_CONVENTIONS,
            "selection_metrics": selection_metrics(metrics),
        },
        "weights": records,
        "missing_weights": list(missing),
        "perceptual": PERCEPTUAL_NOTE,
        "published_reference": {"source": RELEASED_SOURCE, "rows": RELEASED_MEASURED},
        "paper_tables_note": PAPER_TABLES_NOTE,
        "splits": {},
    }


def split_summary(
    sr: SplitRuns, out: str | os.PathLike, figure: Path | None, seconds: float
) -> dict:
    """The summary of one split: data, pairs, weights per role, leakage, selection, the files
    of the split in ``out``, runtimes (``seconds``: the whole split)."""
    plan, selection = sr.plan, sr.selection
    mse_w, full_w = plan["ablation"]
    return {
        "data": sr.data_label,
        "test_split": sr.test_split,
        "val_split": sr.val_split,
        "test_pairs": sr.names,
        "weights_used": {
            "table1": plan["table1"],
            "table2_paper_model": plan["paper_model"],
            "table2_affine_model": plan["affine_model"],
            "table3": {"mse_only": mse_w, "mse_gradient": full_w},
            "best_variant": selection and selection["weights"],
        },
        "leakage": sr.leakage(),
        "selection": selection,
        "files": sorted(p.name for p in Path(out).glob(f"*_{sr.split}.*")),
        "figure": figure.name if figure else None,
        "runtime_s": {
            "fuse": round(sr.seconds["fuse"], 1),
            "score": round(sr.seconds["score"], 1),
            "total": round(seconds, 1),
        },
    }


def json_default(o: object) -> object:
    """JSON for numpy scalars and sets (sorted); ``str`` of anything else."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, set):
        return sorted(o)
    return str(o)


def write_json(obj: object, path: str | os.PathLike) -> Path:
    """``obj`` as indented JSON (one space) with a final newline, written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=1, default=json_default) + "\n")

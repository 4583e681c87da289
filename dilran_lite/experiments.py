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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from . import __version__
from ._io import atomic_write_text
from .baselines import BASELINES
from .errors import UserError
from .fusion import PHI, fuse_features, softmax_nuclear_norms
from .metrics import METRICS, _psnr_one, compute_metrics, to_uint8
from .settings import cache_dir

__all__ = [
    "STRATEGY_ORDER",
    "PAPER_STRATEGY",
    "QUICK_METRICS",
    "SELECTION_METRICS",
    "WEIGHTS",
    "RELEASED_MEASURED",
    "shipped_results",
    "PAPER_TABLES",
    "MetricCache",
    "Run",
    "load_split_pairs",
    "training_names",
    "fuse_with_model",
    "fuse_with_baseline",
    "score_runs",
    "select_best_variant",
    "fusion_grid",
    "reconstruction_gap",
    "run_experiments",
    "BEYOND_METRICS",
    "beyond_runs",
    "beyond_table",
    "beyond_goal",
    "run_beyond",
    "main",
]

STRATEGY_ORDER = [
    "fer",
    "fl1n",
    "sfnn-mean",
    "sfnn-max",
    "sfnn-sum",
    "sfnn-mean2",
    "sfnn-max2",
    "sfnn-sum2",
    "sfnn-spatial",
]
"""The rows of Table 1: the paper's eight strategies and this project's per-pixel extension."""

PAPER_STRATEGY = "sfnn-max"
"""The strategy the paper settles on (Sec. 4.4)."""

QUICK_METRICS = ["PSNR", "SSIM", "MI", "EN", "SD", "SF", "AG", "SCD", "VIF", "Qabf"]
"""The metrics of ``--quick``: every metric but FMI and FSIM, which cost ~2 s per image."""

SELECTION_METRICS = ["PSNR", "SSIM", "MI", "SCD", "VIF", "Qabf"]
"""The best variant maximises the mean rank over these on the validation pairs: scores that
compare the fused image with both sources (fidelity), cheap to compute; no-reference statistics
(EN, SD, SF, AG) are left out because noise raises them."""

WEIGHTS = {
    "paper": "dilran-paper",
    "paper_affine": "dilran-paper-affine",
    "paper_mse": "dilran-paper-mse",
    "lite": "dilran-lite",
    "mse": "dilran-lite-mse",
    "paper_paper_split": "dilran-paper-paper-split",
    "paper_affine_paper_split": "dilran-paper-affine-paper-split",
    "paper_mse_paper_split": "dilran-paper-mse-paper-split",
    "lite_paper_split": "dilran-lite-paper-split",
    "mse_paper_split": "dilran-lite-mse-paper-split",
}
"""The shipped weights used here (see :mod:`dilran_lite.pretrained`); ``*_paper_split`` ones were
trained on the ``paper`` split's training part, the others on the ``series`` split's."""

_DEFAULT_TRAIN_SPLIT = {
    w: "paper" if k.endswith("paper_split") else "series" for k, w in WEIGHTS.items()
}

RELEASED_SOURCE = (
    "quoted: released code, measured (appendix), weights of Zhou et al. (model_v5.py + last.pt) "
    "scored with the field's definitions (8-bit, 256 bins, bits, MI = MI(F,CT) + MI(F,MRI))"
)
RELEASED_MEASURED = [
    dict(
        split="series",
        method="published DILRAN, SFNN max",
        n_pairs=41,
        PSNR=15.68,
        EN=4.22,
        MI=3.68,
    ),
    dict(
        split="series",
        method="published DILRAN, SFNN max^2",
        n_pairs=41,
        PSNR=17.04,
        EN=4.17,
        MI=3.83,
    ),
    dict(split="series", method="pixel average (quoted)", n_pairs=41, PSNR=15.19, EN=3.96, MI=3.45),
    dict(
        split="paper", method="published DILRAN, SFNN max", n_pairs=20, PSNR=16.16, EN=4.00, MI=3.64
    ),
    dict(split="paper", method="pixel average (quoted)", n_pairs=20, PSNR=15.70, EN=3.75, MI=3.46),
]
"""The numbers to beat: the authors' released weights (``model_v5.py`` + ``pretrained/last.pt``)
run on our splits and scored under the field's definitions (the appendix of the book)."""

_PAPER_COLS = ["PSNR", "SSIM", "MI", "FMI-pixel", "FSIM", "Entropy"]
PAPER_TABLES = {
    "Table 1": {
        "FER": [13.944, 0.736, 4.551, 0.876, 0.806, 8.720],
        "FL1N": [15.979, 0.739, 4.569, 0.878, 0.813, 9.782],
        "SFNN (mean)": [15.876, 0.740, 4.578, 0.876, 0.812, 9.772],
        "SFNN (mean^2)": [16.311, 0.741, 4.567, 0.883, 0.819, 9.812],
        "SFNN (max)": [16.413, 0.740, 4.558, 0.891, 0.820, 9.816],
        "SFNN (max^2)": [18.258, 0.740, 4.451, 0.891, 0.829, 9.887],
        "SFNN (sum)": [15.876, 0.740, 4.578, 0.876, 0.812, 9.772],
        "SFNN (sum^2)": [16.311, 0.740, 4.578, 0.876, 0.819, 9.812],
    },
    "Table 2": {
        "Zero-shot": [13.525, 0.681, 4.633, 0.836, 0.738, 4.279],
        "MSDRA": [15.693, 0.697, 4.586, 0.867, 0.797, 8.167],
        "MSRPAN": [14.528, 0.741, 4.652, 0.874, 0.808, 8.969],
        "Ours (DILRAN, SFNN max)": [16.413, 0.740, 4.558, 0.891, 0.820, 9.816],
    },
    "Table 3": {
        "Only MSE": [16.519, 0.739, 4.428, 0.890, 0.820, 8.72],
        "All loss": [16.413, 0.740, 4.558, 0.891, 0.820, 9.816],
    },
}
"""The paper's own Tables 1-3 (paper split, its own metric code): NOT comparable with ours.
Its EN exceeds 8 bits (entropy of distinct float values), its MI comes from a buggy joint
entropy, its "FMI-pixel" used edge features, and BatchNorm stayed in training mode (measured on
the released code)."""

PERCEPTUAL_NOTE = (
    "perceptual loss (Eq. 8) not used by any model: ImageNet VGG16 weights were not available "
    "offline, so lambda2 = 0 everywhere"
)

Pairs = list[tuple[torch.Tensor, torch.Tensor, str]]


def shipped_results(name: str = "") -> Path:
    """The path of a result file shipped inside the package (``""``: the folder itself).

    ``name`` is relative to ``dilran_lite/results``: ``"table1_series.csv"``, ``"summary.json"``,
    ``"fusion_grid_series.png"``, ``"benchmarks/speed.json"``... They were written by
    ``python -m dilran_lite.experiments --out dilran_lite/results`` (full run, atlas, shipped
    weights) and ``python -m benchmarks.run``; an installed wheel has them, no checkout needed.
    """
    path = Path(str(resources.files("dilran_lite").joinpath("results", *Path(name).parts)))
    if not path.exists():
        raise UserError(
            f"{name!r} is not among the shipped results ({path.parent}): "
            f"choose one of {sorted(p.name for p in path.parent.glob('*'))}"
        )
    return path


def _log(msg: str) -> None:
    print(f"[experiments {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Data and weights
# --------------------------------------------------------------------------------------------
def load_split_pairs(split: str, n: int | None = None, data: str = "auto") -> tuple[Pairs, str]:
    """The pairs of ``split`` (``"series/test"``) as a list of ``(mri, ct, name)``, and a label.

    ``data``: ``"atlas"`` (error when missing), ``"phantom"``, or ``"auto"`` (the atlas when
    found, else the phantom). ``n`` keeps the first ``n`` pairs of the split.
    """
    from .data import DATASET_DIRS, PhantomDataset, load_pairs

    if data not in ("auto", "atlas", "phantom"):
        raise ValueError(f"data must be 'auto', 'atlas' or 'phantom', got {data!r}")
    if data == "phantom":
        offset = {"train": 0, "val": 10_000, "test": 20_000}.get(split.rpartition("/")[2], 30_000)
        ds = PhantomDataset(n=n or 8, seed=offset)
    else:
        ds = load_pairs(
            "mri-ct", split=split, fallback="phantom" if data == "auto" else None, n_phantom=n or 8
        )
    count = len(ds) if n is None else min(n, len(ds))
    pairs = [(a.float(), b.float(), str(name)) for a, b, name in (ds[i] for i in range(count))]
    if getattr(ds, "root", None) is not None:
        label = f"Harvard atlas MRI-CT ({DATASET_DIRS['mri-ct']}), {split}, {count} pairs"
    else:
        label = f"{ds.source}, standing in for {split}, {count} pairs"
    return pairs, label


def training_names(weights: str, info: dict | None = None) -> tuple[str, set[str], set[str]]:
    """Which split scheme shipped ``weights`` were trained on, and its train and val names.

    Read from the sidecar's ``train_config.split``; a sidecar without one (a placeholder) falls
    back to the scheme the weights are documented with.
    """
    from .data import load_splits

    info = info or {}
    scheme = (info.get("train_config") or {}).get("split") or _DEFAULT_TRAIN_SPLIT.get(
        weights, "series"
    )
    splits = load_splits("mri-ct")
    parts = splits.get(scheme, {})
    return scheme, set(parts.get("train", [])), set(parts.get("val", []))


def _weights_record(name: str, path: str | os.PathLike | None = None) -> dict:
    """What a table needs to say about weights ``name``: preset, training split, epochs, notes,
    a short sha256. ``path``: a checkpoint file standing in for the shipped one."""
    from .pretrained import WEIGHTS_DIR, pretrained_info
    from .train import read_metadata

    if path is None:
        info = pretrained_info(name)
        path = WEIGHTS_DIR / f"{name}.safetensors"
    else:
        path = Path(path)
        info = read_metadata(path)
        info["notes"] = (
            f"NOT the shipped file: checkpoint {path.name} passed with --weights "
            f"(epoch {info.get('epoch')}). " + str(info.get("notes") or "")
        ).strip()
    tc = info.get("train_config") or {}
    hist = info.get("history") or {}
    scheme, _, _ = training_names(name, info)
    return {
        "name": name,
        "preset": tc.get("preset") or ("paper" if info["model_config"]["width"] == 64 else "lite"),
        "trained_on": f"{scheme}/train",
        "epochs": info.get("epoch"),
        "steps": int(sum(hist.get("steps", []))) or None,
        "best_val_loss": info.get("best_val_loss"),
        "lambda1_gradient": tc.get("lambda1"),
        "lambda2_perceptual": tc.get("lambda2"),
        "perceptual": info.get("perceptual"),
        "notes": info.get("notes"),
        "temporary": "TEMPORARY" in str(info.get("notes", "")).upper(),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
    }


def _load_models(
    names: Sequence[str], files: dict[str, str] | None = None
) -> tuple[dict, dict, list[str]]:
    """Shipped models by name (eval mode, CPU), their records, and the names not shipped.

    ``files`` maps a name to a checkpoint file used instead of the shipped weights.
    """
    from .pretrained import available, load_weights, pretrained

    have = set(available())
    files = files or {}
    models, records, missing = {}, {}, []
    for name in dict.fromkeys(names):
        if name in files:
            models[name] = load_weights(Path(files[name]))
            records[name] = _weights_record(name, files[name])
        elif name in have:
            models[name] = pretrained(name)
            records[name] = _weights_record(name)
        else:
            missing.append(name)
    return models, records, missing


# --------------------------------------------------------------------------------------------
# Fusing and scoring
# --------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One method on one set of pairs: fused 8-bit images by pair name, and per-image scores."""

    method: str
    split: str
    weights: str | None = None
    strategy: str | None = None
    fused: dict[str, np.ndarray] = field(default_factory=dict)
    w2: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    scores: pd.DataFrame | None = None


@torch.inference_mode()
def fuse_with_model(
    model: torch.nn.Module, pairs: Pairs, strategies: Sequence[str], weights: str, split: str
) -> dict[str, Run]:
    """Fuse every pair with every strategy, encoding each pair once.

    Returns one :class:`Run` per strategy; ``w2`` holds the mean CT weight W2 per pair (the
    scalar of SFNN, the mean of a weight map; NaN for ``max``, which has none).
    """
    runs = {s: Run(f"{weights} + {s}", split, weights, s) for s in strategies}
    sfnn = [s for s in strategies if s.startswith("sfnn-") and s[5:] in PHI]
    for a, b, name in pairs:
        t0 = time.perf_counter()
        feats = model.encode(torch.stack([a, b]))
        f1, f2 = feats[:1], feats[1:]
        # SFNN: the nuclear norms (Eq. 3-4) once per pair, every phi from them (as sfnn_weights)
        norms = softmax_nuclear_norms(feats).chunk(2) if sfnn else None
        t_enc = (time.perf_counter() - t0) / max(1, len(strategies))
        for s in strategies:
            t1 = time.perf_counter()
            override = None
            if s in sfnn:
                p1, p2 = (PHI[s[5:]](n) for n in norms)
                w1 = (p1 / (p1 + p2)).to(f1.dtype)
                override = (w1, 1 - w1)
            fused_f, (_, w2) = fuse_features(f1, f2, s, weights=override, return_weights=True)
            out = model.decode(fused_f).clamp(0, 1)[0].float().cpu()
            run = runs[s]
            run.fused[name] = to_uint8(out)
            run.w2[name] = math.nan if w2 is None else float(torch.as_tensor(w2).float().mean())
            run.seconds += t_enc + time.perf_counter() - t1
    return runs


def fuse_with_baseline(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], pairs: Pairs, method: str, split: str
) -> Run:
    """A :class:`Run` of a network-free baseline ``(a, b) -> fused``."""
    run = Run(method, split)
    t0 = time.perf_counter()
    for a, b, name in pairs:
        run.fused[name] = to_uint8(fn(a, b).clamp(0, 1))
    run.seconds = time.perf_counter() - t0
    return run


@torch.inference_mode()
def reconstruction_gap(
    model: torch.nn.Module,
    pairs: Pairs,
    strategy: str,
    weights: str,
    split: str,
) -> tuple[dict[str, Run], pd.DataFrame]:
    """Where a global-weight strategy's image departs from a plain weighted average.

    For each pair the strategy's weights (W1, W2) are applied three ways: to the feature maps
    and decoded (the network's image, as :func:`fuse_with_model`), to the two *autoencoded*
    sources, W1 D(E(a)) + W2 D(E(b)), and to the sources themselves, W1 a + W2 b. With an affine
    decoder the first two are equal (the released model's is affine); the gap between the last
    two is what the autoencoder's reconstruction error costs. Returns the three runs (keys
    ``network``, ``autoencoded``, ``pixels``) and a table of the autoencoder's PSNR on each
    source (dB, 8-bit images).
    """
    if not (strategy.startswith("sfnn-") and strategy[5:] in PHI) and strategy != "average":
        raise ValueError(f"{strategy!r} has no single weight per pair; use an SFNN strategy")
    keys = {
        "network": f"{weights} + {strategy}",
        "autoencoded": f"W1 D(E(MRI)) + W2 D(E(CT)), weights of {weights} + {strategy}",
        "pixels": f"W1 MRI + W2 CT, weights of {weights} + {strategy}",
    }
    runs = {
        k: Run(lab, split, weights, strategy if k == "network" else f"{strategy} on {k}")
        for k, lab in keys.items()
    }
    rows = []
    for a, b, name in pairs:
        t0 = time.perf_counter()
        feats = model.encode(torch.stack([a, b]))
        f1, f2 = feats[:1], feats[1:]
        fused_f, (w1, w2) = fuse_features(f1, f2, strategy, return_weights=True)
        w1, w2 = float(torch.as_tensor(w1).mean()), float(torch.as_tensor(w2).mean())
        rec = model.decode(feats).clamp(0, 1).float().cpu()
        images = {
            "network": model.decode(fused_f).clamp(0, 1)[0].float().cpu(),
            "autoencoded": w1 * rec[0] + w2 * rec[1],
            "pixels": w1 * a + w2 * b,
        }
        seconds = (time.perf_counter() - t0) / len(images)
        for k, img in images.items():
            runs[k].fused[name] = to_uint8(img)
            runs[k].w2[name] = w2
            runs[k].seconds += seconds
        err = {
            f"AE_PSNR_{mod}": _psnr_one(to_uint8(src), to_uint8(rec[i]))
            for i, (mod, src) in enumerate((("MRI", a), ("CT", b)))
        }
        rows.append({"pair": name, "W2_CT": w2, **err})
    return runs, pd.DataFrame(rows)


def _metrics_fingerprint() -> str:
    """A hash of every metric's value on a fixed synthetic 96 x 96 triple: it changes when a
    metric's definition changes (not when a comment does)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96] / 95.0
    a = np.clip(
        0.5 + 0.4 * np.sin(6 * xx) * np.cos(4 * yy) + 0.05 * rng.standard_normal(xx.shape), 0, 1
    )
    b = np.clip((xx > 0.4) * 0.7 + 0.2 * yy + 0.05 * rng.standard_normal(xx.shape), 0, 1)
    f = 0.5 * (a + b)
    vals = compute_metrics(a, b, f)
    text = json.dumps({k: round(float(v), 6) for k, v in vals.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class MetricCache:
    """Metric values keyed by the bytes of the 8-bit (MRI, CT, fused) triple.

    Stored as JSON at ``path`` (None: in memory only); the whole cache is discarded when a
    metric's value on a fixed probe changes, so a value is never reused across definitions.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.fingerprint = _metrics_fingerprint()
        self.values: dict[str, dict[str, float]] = {}
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if data.get("fingerprint") == self.fingerprint:
                    self.values = data.get("values", {})
            except (OSError, json.JSONDecodeError):
                self.values = {}

    @staticmethod
    def key(a8: np.ndarray, b8: np.ndarray, f8: np.ndarray) -> str:
        h = hashlib.blake2b(digest_size=16)
        for x in (a8, b8, f8):
            h.update(str(x.shape).encode())
            h.update(np.ascontiguousarray(x).tobytes())
        return h.hexdigest()

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"fingerprint": self.fingerprint, "values": self.values}, fh)
        os.replace(tmp, self.path)


def _score_one(args: tuple) -> dict[str, float]:
    a8, b8, f8, names = args
    return compute_metrics(a8, b8, f8, names)


def score_runs(
    runs: Sequence[Run],
    pairs: dict[str, Pairs],
    metrics: Sequence[str],
    cache: MetricCache | None = None,
    jobs: int = 1,
) -> None:
    """Fill ``run.scores`` (a DataFrame: one row per pair, one column per metric) for every run.

    ``pairs`` maps each run's split to its pairs. Identical triples are scored once (e.g.
    SFNN-mean and SFNN-sum); ``jobs`` > 1 scores in that many processes.
    """
    cache = cache or MetricCache()
    metrics = list(metrics)
    src8 = {
        (split, name): (to_uint8(a), to_uint8(b))
        for split, ps in pairs.items()
        for a, b, name in ps
    }
    todo: dict[str, tuple] = {}
    keys: dict[tuple[int, str], str] = {}
    for i, run in enumerate(runs):
        for name, f8 in run.fused.items():
            a8, b8 = src8[(run.split, name)]
            k = MetricCache.key(a8, b8, f8)
            keys[(i, name)] = k
            missing = [m for m in metrics if m not in cache.values.get(k, {})]
            if missing and k not in todo:
                todo[k] = (a8, b8, f8, missing)
    if todo:
        _log(f"scoring {len(todo)} new fused images ({len(metrics)} metrics, {jobs} job(s))")
        t0 = time.perf_counter()
        items = list(todo.items())
        if jobs > 1:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                results = list(pool.map(_score_one, [v for _, v in items], chunksize=4))
        else:
            results = []
            for j, (_, v) in enumerate(items):
                results.append(_score_one(v))
                if (j + 1) % 50 == 0:
                    _log(f"  {j + 1}/{len(items)} scored, {time.perf_counter() - t0:.0f} s")
                    cache.values.update(
                        {k: {**cache.values.get(k, {}), **r} for (k, _), r in zip(items, results)}
                    )
                    cache.save()
        for (k, _), r in zip(items, results):
            cache.values[k] = {**cache.values.get(k, {}), **r}
        cache.save()
        _log(f"scored in {time.perf_counter() - t0:.0f} s")
    for i, run in enumerate(runs):
        rows = {name: {m: cache.values[keys[(i, name)]][m] for m in metrics} for name in run.fused}
        df = pd.DataFrame.from_dict(rows, orient="index", columns=metrics)
        df.index.name = "image"
        run.scores = df


def _means(run: Run, metrics: Sequence[str], subset: set[str] | None = None) -> dict[str, float]:
    df = run.scores if subset is None else run.scores.loc[run.scores.index.isin(subset)]
    with np.errstate(all="ignore"):
        out = df[list(metrics)].replace([np.inf, -np.inf], np.nan).mean(axis=0).to_dict()
    w2 = [v for k, v in run.w2.items() if subset is None or k in subset]
    out["W2_CT"] = float(np.nanmean(w2)) if w2 and not all(math.isnan(v) for v in w2) else math.nan
    return out


# --------------------------------------------------------------------------------------------
# Selection of this project's best variant (on validation pairs only)
# --------------------------------------------------------------------------------------------
def _rank_select(val: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Add ``mean_rank`` (1 = best; every selection metric is higher-is-better) and
    ``selected`` (the lowest mean rank; ties go to the earlier candidate)."""
    val = val.copy()
    ranks = val[list(metrics)].rank(ascending=False, method="average")
    val["mean_rank"] = ranks.mean(axis=1)
    best = int(np.argmin(val["mean_rank"].to_numpy()))
    val["selected"] = [i == best for i in range(len(val))]
    return val


def select_best_variant(
    candidates: Sequence[tuple[str, str]],
    split: str,
    models: dict[str, torch.nn.Module],
    n: int | None = None,
    data: str = "auto",
    cache: MetricCache | None = None,
    jobs: int = 1,
    metrics: Sequence[str] = SELECTION_METRICS,
) -> tuple[tuple[str, str], pd.DataFrame]:
    """Pick the (weights, strategy) with the best mean rank over ``metrics`` on ``split``.

    ``split`` must be a validation part (``"series/val"``): choosing on the test pairs would
    make the reported test numbers optimistic. Returns the choice and the validation table.
    """
    if not split.endswith("/val"):
        raise ValueError(f"select the best variant on a validation split, not {split!r}")
    pairs, _ = load_split_pairs(split, n, data)
    runs: list[Run] = []
    for w in dict.fromkeys(w for w, _ in candidates):
        strategies = [s for ww, s in candidates if ww == w]
        got = fuse_with_model(models[w], pairs, strategies, w, split)
        runs += [got[s] for s in strategies]
    score_runs(runs, {split: pairs}, metrics, cache, jobs)
    rows = [
        {
            "weights": r.weights,
            "strategy": r.strategy,
            "n_pairs": len(r.fused),
            **_means(r, metrics),
        }
        for r in runs
    ]
    val = _rank_select(pd.DataFrame(rows), metrics)
    best = val.loc[val["selected"]].iloc[0]
    return (str(best["weights"]), str(best["strategy"])), val


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------
def _zoom_window(a8: np.ndarray, b8: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window with the most gradient in both sources."""
    g = np.zeros(a8.shape, dtype=np.float64)
    for x in (a8.astype(np.float64), b8.astype(np.float64)):
        gy, gx = np.gradient(x)
        g += np.hypot(gx, gy) / (x.std() + 1e-6)
    h, w = g.shape
    best, corner, step = -1.0, (0, 0), max(1, size // 4)
    for top in range(0, max(1, h - size + 1), step):
        for left in range(0, max(1, w - size + 1), step):
            v = g[top : top + size, left : left + size].sum()
            if v > best:
                best, corner = v, (top, left)
    return corner


def fusion_grid(
    pairs: Pairs, columns: dict[str, dict[str, np.ndarray]], path: str | os.PathLike, title: str
) -> Path:
    """Save a grid: for each pair, a row of full images (MRI, CT, each method's fusion) with
    the zoom window marked, then a row of the zoomed crops. ``columns``: label -> pair -> 8-bit."""
    import matplotlib.patches as patches
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    labels = ["MRI", "CT", *columns]
    ncol, nrow = len(labels), 2 * len(pairs)
    fig = Figure(figsize=(1.45 * ncol, 1.5 * nrow))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for p, (a, b, name) in enumerate(pairs):
        a8, b8 = to_uint8(a), to_uint8(b)
        size = max(16, min(a8.shape) // 4)
        top, left = _zoom_window(a8, b8, size)
        imgs = [a8, b8, *(columns[c][name] for c in columns)]
        for c, (lab, img) in enumerate(zip(labels, imgs)):
            ax, axz = axes[2 * p, c], axes[2 * p + 1, c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            ax.add_patch(
                patches.Rectangle(
                    (left - 0.5, top - 0.5), size, size, fill=False, edgecolor="red", linewidth=0.8
                )
            )
            axz.imshow(
                img[top : top + size, left : left + size],
                cmap="gray",
                vmin=0,
                vmax=255,
                interpolation="nearest",
            )
            if p == 0:
                ax.set_title(lab, fontsize=7)
            if c == 0:
                ax.set_ylabel(Path(name).stem, fontsize=7)
                axz.set_ylabel("zoom", fontsize=7)
            for x in (ax, axz):
                x.set_xticks([])
                x.set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    _shrink_png(path)
    return path


def _shrink_png(path: Path, colors: int = 96) -> None:
    """Re-save a PNG with an adaptive palette: grey images and red boxes need few colours, and
    the file becomes a fraction of the size (the figures are committed)."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


# --------------------------------------------------------------------------------------------
# The experiment plan
# --------------------------------------------------------------------------------------------
def _machine() -> dict:
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


def _row(
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
        **_means(run, metrics, subset),
        "note": note,
    }


def _split_plan(split: str, quick: bool, records: dict) -> dict:
    """Which weights play which role on ``split``; roles left None are skipped."""
    have = set(records)

    def pick(*names: str) -> str | None:
        return next((n for n in names if n in have), None)

    # each split is served by weights trained on its own training part (the series-trained
    # weights saw 12 of the paper split's 20 test pairs); quick mode uses the lite preset only
    sfx = "" if split == "series" else "_paper_split"
    paper, affine = WEIGHTS["paper" + sfx], WEIGHTS["paper_affine" + sfx]
    lite, lite_mse = WEIGHTS["lite" + sfx], WEIGHTS["mse" + sfx]
    plan = {
        "table1": [w for w in ([] if quick else [paper, affine]) + [lite] if w in have],
        "paper_model": pick(lite) if quick else pick(paper),
        "affine_model": None if quick else pick(affine),
        "ablation": (
            (pick(lite_mse), pick(lite))
            if quick
            else (pick(WEIGHTS["paper_mse" + sfx]), pick(paper))
        ),
    }
    return plan


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
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    try:
        return _run_experiments(
            out,
            splits,
            quick,
            data,
            n_pairs,
            metrics,
            cache_path,
            jobs,
            models,
            figure,
            command,
            weight_files,
        )
    finally:
        torch.set_num_threads(before)


def _run_experiments(
    out: str | os.PathLike,
    splits: Sequence[str],
    quick: bool,
    data: str,
    n_pairs: int | None,
    metrics: Sequence[str] | None,
    cache_path: str | os.PathLike | None,
    jobs: int,
    models: dict[str, torch.nn.Module] | None,
    figure: bool,
    command: str | None,
    weight_files: dict[str, str] | None = None,
) -> dict:
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = n_pairs if n_pairs is not None else (4 if quick else None)
    metrics = list(metrics) if metrics is not None else (QUICK_METRICS if quick else list(METRICS))
    sel_metrics = [m for m in SELECTION_METRICS if m in metrics] or metrics
    cache = MetricCache(cache_path)

    wanted = [w for k, w in WEIGHTS.items() if not (quick and k.startswith("paper"))]
    if models is None:
        models, records, missing = _load_models(wanted, weight_files)
    else:
        records = {
            k: {
                "name": k,
                "preset": "lite" if m.config.width < 64 else "paper",
                "notes": "model passed in by the caller, not the shipped weights",
                "trained_on": f"{_DEFAULT_TRAIN_SPLIT.get(k, 'series')}/train",
                "temporary": True,
            }
            for k, m in models.items()
        }
        missing = [w for w in wanted if w not in models]
    for w in missing:
        _log(f"weights {w!r} not shipped (yet): rows that need them are skipped")

    summary: dict = {
        "title": "Results of dilran-lite against the DILRAN paper (arXiv 2212.04661)",
        "command": command
        or "DILRAN_DATA=<folder holding harvard-mri-ct> python -m dilran_lite.experiments "
        f"--out results --splits {' '.join(splits)}"
        + (" --quick" if quick else ""),
        "quick": quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "package_version": __version__,
        "machine": _machine(),
        "metrics": {
            "names": metrics,
            "conventions": "dilran_lite.metrics: every image quantised to 8 bits (round(x*255)); "
            "256 bins; information in bits; PSNR, SSIM with data_range = 1.0 on [0, 1]; pair "
            "value = average of the two sources for PSNR, SSIM, FMI, FSIM; sum for MI, VIF, SCD",
            "selection_metrics": sel_metrics,
        },
        "weights": records,
        "missing_weights": missing,
        "perceptual": PERCEPTUAL_NOTE,
        "published_reference": {"source": RELEASED_SOURCE, "rows": RELEASED_MEASURED},
        "paper_tables_note": (
            "reference_paper_tables.csv: the paper's own values (its metric code, paper split, "
            "BatchNorm in train mode); not comparable with these tables: EN over 8 bits is "
            "impossible for 8-bit images, the MI code has a joint-entropy bug, FMI-pixel used "
            "edge features."
        ),
        "splits": {},
    }
    _write_paper_tables(out / "reference_paper_tables.csv")

    for split in splits:
        t_split = time.perf_counter()
        test_split, val_split = f"{split}/test", f"{split}/val"
        test_pairs, data_label = load_split_pairs(test_split, n, data)
        names = [nm for _, _, nm in test_pairs]
        _log(f"{split}: {data_label}")
        plan = _split_plan(split, quick, {k: 1 for k in models})
        seen = {w: training_names(w, _safe_info(w))[1] for w in models}
        leakage = {
            w: {
                "trained_on": f"{training_names(w, _safe_info(w))[0]}/train",
                "test_pairs_in_train": sorted(set(names) & seen[w]),
                "n_test_pairs_in_train": len(set(names) & seen[w]),
            }
            for w in models
        }

        # ---- fuse: each model encodes each test pair once; every strategy reuses the features
        runs: dict[tuple[str | None, str], Run] = {}
        need: dict[str, list[str]] = {}
        for w in plan["table1"]:
            need.setdefault(w, []).extend(STRATEGY_ORDER)
        for role in ("paper_model", "affine_model"):
            if plan[role]:
                need.setdefault(plan[role], []).append(PAPER_STRATEGY)

        # the best variant is chosen on validation pairs, among weights that saw no test pair
        cands = [
            (w, s) for w in plan["table1"] if not (set(names) & seen[w]) for s in STRATEGY_ORDER
        ]
        if not cands:
            cands = [(w, s) for w in plan["table1"] for s in STRATEGY_ORDER]
        selection = None
        if cands:
            t0 = time.perf_counter()
            _log(f"{split}: selecting the best variant on {val_split} ({len(cands)} candidates)")
            best, val_table = select_best_variant(
                cands, val_split, models, n, data, cache, jobs, sel_metrics
            )
            val_table.insert(0, "split", val_split)
            val_table.to_csv(out / f"selection_{split}.csv", index=False, float_format="%.6g")
            need.setdefault(best[0], []).append(best[1])
            selection = {
                "rule": f"lowest mean rank over {sel_metrics} (all higher-is-better) on "
                f"{val_split}, among weights x strategies whose weights saw no {test_split} pair "
                "in training; the test pairs play no part in the choice",
                "val_split": val_split,
                "n_val_pairs": int(val_table["n_pairs"].iloc[0]),
                "candidates": len(cands),
                "weights": best[0],
                "strategy": best[1],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        mse_w, full_w = plan["ablation"]
        ablation_strategies = [PAPER_STRATEGY]
        if selection and selection["strategy"] not in ablation_strategies:
            ablation_strategies.append(selection["strategy"])
        for w in (mse_w, full_w):
            if w:
                need.setdefault(w, []).extend(ablation_strategies)

        t0 = time.perf_counter()
        for w, strategies in need.items():
            strategies = list(dict.fromkeys(strategies))
            _log(f"{split}: fusing {len(test_pairs)} pairs with {w} x {len(strategies)} strategies")
            for s, run in fuse_with_model(models[w], test_pairs, strategies, w, test_split).items():
                runs[(w, s)] = run
        for key, fn in BASELINES.items():
            runs[(None, key)] = fuse_with_baseline(fn, test_pairs, key, test_split)
        gap_ae: dict[str, pd.DataFrame] = {}
        for gw in dict.fromkeys(w for w in (plan["paper_model"], plan["affine_model"]) if w):
            gap_runs, gap_ae[gw] = reconstruction_gap(
                models[gw], test_pairs, PAPER_STRATEGY, gw, test_split
            )
            for k in ("autoencoded", "pixels"):
                runs[(gw, f"gap:{k}")] = gap_runs[k]
        t_fuse = time.perf_counter() - t0
        t0 = time.perf_counter()
        score_runs(list(runs.values()), {test_split: test_pairs}, metrics, cache, jobs)
        t_score = time.perf_counter() - t0

        def seen_of(w: str | None, seen: dict = seen) -> set[str] | None:
            return seen.get(w) if w else None

        def leak_note(w: str | None, seen: dict = seen, names: list = names) -> str:
            if not w:
                return ""
            k = len(set(names) & seen[w])
            notes = [f"LEAKY: {k} of {len(names)} test pairs in {w}'s training set" if k else ""]
            rec_notes = str(records.get(w, {}).get("notes") or "")
            if rec_notes.startswith("NOT the shipped file"):
                notes.append(rec_notes.split(". ")[0])
            elif records.get(w, {}).get("temporary"):
                notes.append(f"{w}: TEMPORARY placeholder weights")
            return "; ".join(n for n in notes if n)

        # ---- Table 1
        t1 = []
        for w in plan["table1"]:
            for s in STRATEGY_ORDER:
                notes = [leak_note(w)]
                if s in ("sfnn-sum", "sfnn-sum2"):
                    twin = s.replace("sum", "mean")
                    notes.append(f"same weights as {twin} (mean and sum differ by a constant)")
                note = "; ".join(x for x in notes if x)
                t1.append(_row("Table 1", split, runs[(w, s)], metrics, seen_of(w), s, note=note))
        _table(t1, metrics).to_csv(out / f"table1_{split}.csv", index=False, float_format="%.6g")

        # ---- Table 2
        paper_w = plan["paper_model"]
        t2_runs: list[tuple[str, Run, str]] = [
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
        if paper_w:
            preset = records.get(paper_w, {}).get("preset", "?")
            t2_runs.append(
                (
                    f"DILRAN as in the paper ({preset} preset, sfnn-max)",
                    runs[(paper_w, PAPER_STRATEGY)],
                    leak_note(paper_w),
                )
            )
        affine_w = plan["affine_model"]
        if affine_w:
            t2_runs.append(
                (
                    "DILRAN with the released code's affine reconstructor (paper preset, sfnn-max)",
                    runs[(affine_w, PAPER_STRATEGY)],
                    leak_note(affine_w),
                )
            )
        if selection:
            bw, bs = selection["weights"], selection["strategy"]
            t2_runs.append(
                (
                    f"best variant ({bw} + {bs}, chosen on {val_split})",
                    runs[(bw, bs)],
                    leak_note(bw),
                )
            )
        t2 = [
            _row("Table 2", split, r, metrics, seen_of(r.weights), lab, note=nt)
            for lab, r, nt in t2_runs
        ]
        unseen = set(names) - set().union(*(seen_of(r.weights) or set() for _, r, _ in t2_runs))
        if any(seen_of(r.weights) and set(names) & seen_of(r.weights) for _, r, _ in t2_runs):
            sub = f"not in any training set ({len(unseen)})"
            t2 += [
                _row(
                    "Table 2",
                    split,
                    r,
                    metrics,
                    seen_of(r.weights),
                    lab,
                    unseen,
                    sub,
                    "leak-free subset of the test pairs",
                )
                for lab, r, _ in t2_runs
                if unseen
            ]
        for ref in RELEASED_MEASURED:
            if ref["split"] == split:
                t2.append(
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
                )
        _table(t2, metrics).to_csv(out / f"table2_{split}.csv", index=False, float_format="%.6g")

        # ---- Table 3
        t3 = []
        for s in ablation_strategies:
            arms = [
                (w, lab)
                for w, lab in ((mse_w, "MSE only"), (full_w, "MSE + gradient (lambda1 = 0.2)"))
                if w
            ]
            t3 += [
                _row("Table 3", split, runs[(w, s)], metrics, seen_of(w), lab, note=leak_note(w))
                for w, lab in arms
            ]
            ab_unseen = set(names) - set().union(*(seen_of(w) or set() for w, _ in arms))
            if ab_unseen and ab_unseen != set(names):
                sub = f"not in any training set ({len(ab_unseen)})"
                leak_free = "leak-free subset of the test pairs"
                t3 += [
                    _row(
                        "Table 3",
                        split,
                        runs[(w, s)],
                        metrics,
                        seen_of(w),
                        lab,
                        ab_unseen,
                        sub,
                        leak_free,
                    )
                    for w, lab in arms
                ]
            t3.append(
                {
                    "table": "Table 3",
                    "split": split,
                    "source": "not run",
                    "method": "MSE + gradient + perceptual",
                    "strategy": s,
                    "note": PERCEPTUAL_NOTE,
                }
            )
        _table(t3, metrics).to_csv(out / f"table3_{split}.csv", index=False, float_format="%.6g")

        # ---- where the faithful model's image departs from a weighted average (chapter 9)
        gap = []
        for pw, ae_table in gap_ae.items():
            rows = [
                _row("Gap", split, r, metrics, seen_of(pw), lab, note=leak_note(pw))
                for lab, r in (
                    ("network: decode(W1 f1 + W2 f2)", runs[(pw, PAPER_STRATEGY)]),
                    ("W1 D(E(MRI)) + W2 D(E(CT))", runs[(pw, "gap:autoencoded")]),
                    ("W1 MRI + W2 CT", runs[(pw, "gap:pixels")]),
                )
            ]
            ae = ae_table[["AE_PSNR_MRI", "AE_PSNR_CT"]].mean()
            for row in rows:
                row.update({k: float(v) for k, v in ae.items()})
            gap += rows
        if gap:
            _table(gap, [*metrics, "AE_PSNR_MRI", "AE_PSNR_CT"]).to_csv(
                out / f"gap_{split}.csv", index=False, float_format="%.6g"
            )

        # ---- W2 per pair
        w2_rows = [
            {
                "split": test_split,
                "pair": nm,
                "weights": r.weights,
                "strategy": r.strategy,
                "W2_CT": r.w2.get(nm),
            }
            for (_, s), r in runs.items()
            if r.weights and not s.startswith("gap:")
            for nm in names
        ]
        pd.DataFrame(w2_rows).to_csv(out / f"w2_{split}.csv", index=False, float_format="%.5g")

        # ---- figure
        fig_file = None
        if figure:
            idx = np.linspace(0, len(test_pairs) - 1, min(3, len(test_pairs))).round().astype(int)
            shown = [test_pairs[i] for i in dict.fromkeys(idx.tolist())]
            cols = {
                "average": runs[(None, "average")].fused,
                "maximum": runs[(None, "max")].fused,
                "Laplacian": runs[(None, "laplacian")].fused,
            }
            if paper_w:
                cols["DILRAN paper\n(sfnn-max)"] = runs[(paper_w, PAPER_STRATEGY)].fused
            if selection:
                cols[f"best: {selection['strategy']}\n({selection['weights']})"] = runs[
                    (selection["weights"], selection["strategy"])
                ].fused
            fig_file = fusion_grid(
                shown,
                cols,
                out / f"fusion_grid_{split}.png",
                f"{data_label}; zoomed crops below each row",
            )

        pd.concat(
            [
                r.scores.assign(method=r.method, weights=r.weights or "", strategy=r.strategy or "")
                for r in runs.values()
            ]
        ).to_csv(out / f"per_image_{split}.csv", float_format="%.5g")
        summary["splits"][split] = {
            "data": data_label,
            "test_split": test_split,
            "val_split": val_split,
            "test_pairs": names,
            "weights_used": {
                "table1": plan["table1"],
                "table2_paper_model": paper_w,
                "table2_affine_model": affine_w,
                "table3": {"mse_only": mse_w, "mse_gradient": full_w},
                "best_variant": selection and selection["weights"],
            },
            "leakage": leakage,
            "selection": selection,
            "files": sorted(p.name for p in out.glob(f"*_{split}.*")),
            "figure": fig_file.name if fig_file else None,
            "runtime_s": {
                "fuse": round(t_fuse, 1),
                "score": round(t_score, 1),
                "total": round(time.perf_counter() - t_split, 1),
            },
        }
        _log(f"{split}: done in {time.perf_counter() - t_split:.0f} s")
    summary["runtime_s"] = round(time.perf_counter() - t_start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default) + "\n")
    return summary


def _safe_info(name: str) -> dict:
    try:
        from .pretrained import pretrained_info

        return pretrained_info(name)
    except ValueError:
        return {}


def _json_default(o: object) -> object:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, set):
        return sorted(o)
    return str(o)


def _table(rows: list[dict], metrics: Sequence[str]) -> pd.DataFrame:
    cols = [
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
        *metrics,
        "note",
    ]
    return pd.DataFrame(rows).reindex(columns=cols)


def _write_paper_tables(path: Path) -> None:
    rows = [
        {
            "table": t,
            "method": m,
            **dict(zip(_PAPER_COLS, v)),
            "source": "arXiv 2212.04661 (paper split, the authors' metric code): not comparable",
        }
        for t, rows_ in PAPER_TABLES.items()
        for m, v in rows_.items()
    ]
    pd.DataFrame(rows).to_csv(path, index=False)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# Beyond DILRAN: the learned fusion layer against every baseline and every DILRAN rule
# --------------------------------------------------------------------------------------------
BEYOND_METRICS = ["EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM"]
"""The 8 metrics of the "Beyond DILRAN" chapter; higher is better for each."""

BEYOND_WEIGHTS = {
    "series": ("dilran-paper", "learned-fusion"),
    "paper": ("dilran-paper-paper-split", "learned-fusion-paper-split"),
}
"""Per split: the frozen backbone and the learned layer trained on that split's training part."""


class _FeatureMemo(torch.nn.Module):
    """A backbone whose ``encode`` remembers its last input, so that the DILRAN rules and the
    learned layer share one encoding per pair."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        self._last: tuple[bytes, torch.Tensor] | None = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        key = hashlib.blake2b(x.detach().cpu().numpy().tobytes(), digest_size=16).digest()
        if self._last is None or self._last[0] != key:
            self._last = (key, self.backbone.encode(x))
        return self._last[1]

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return self.backbone.decode(f)


@torch.inference_mode()
def beyond_runs(
    pairs: Pairs,
    split: str,
    backbone: torch.nn.Module,
    learned: torch.nn.Module | None,
    weights: str,
    learned_name: str,
) -> list[Run]:
    """Fuse ``pairs`` with every baseline, every DILRAN rule of ``backbone`` (the shipped
    ``weights``) and ``learned`` (a :class:`dilran_lite.learned.LearnedFusion` on the same
    backbone, named ``learned_name``): one :class:`Run` each, the learned layer's last
    (left out when ``learned`` is None: what a learned layer has to beat)."""
    runs = [fuse_with_baseline(fn, pairs, name, split) for name, fn in BASELINES.items()]
    memo = _FeatureMemo(backbone)
    if learned is not None:
        learned.attach(backbone)
    rules: dict[str, Run] = {}
    mine = Run(f"learned fusion ({learned_name})", split, learned_name, "learned")
    for a, b, name in pairs:
        for s, r in fuse_with_model(memo, [(a, b, name)], STRATEGY_ORDER, weights, split).items():
            acc = rules.setdefault(s, Run(r.method, split, r.weights, s))
            acc.fused.update(r.fused)
            acc.seconds += r.seconds
        if learned is None:
            continue
        t0 = time.perf_counter()
        x = torch.stack([a, b])
        f1, f2 = memo.encode(x).chunk(2)
        out, _ = learned.fuse_features(f1, f2, x[:1], x[1:])
        mine.fused[name] = to_uint8(out.clamp(0, 1)[0].float())
        mine.seconds += time.perf_counter() - t0
    return [*runs, *(rules[s] for s in STRATEGY_ORDER), *([mine] if learned is not None else [])]


def beyond_table(runs: Sequence[Run], metrics: Sequence[str] = BEYOND_METRICS) -> pd.DataFrame:
    """Mean of each metric per run (scored runs), with the learned layer's standing in the last
    rows: ``best other`` (the best of every other method per metric), ``learned / best``, and
    ``wins`` (1 where the learned layer beats every other method)."""
    rows = [{"method": r.method, "n_pairs": len(r.fused), **_means(r, metrics)} for r in runs]
    df = pd.DataFrame(rows).set_index("method")[list(metrics)]
    mine, others = df.iloc[-1], df.iloc[:-1]
    best = others.max(axis=0)
    df.loc["best other"] = best
    df.loc["learned / best"] = mine / best
    df.loc["wins"] = (mine > best).astype(float)
    df.insert(0, "n_pairs", [len(r.fused) for r in runs] + [np.nan] * 3)
    return df


def beyond_goal(table: pd.DataFrame) -> dict:
    """The chapter's goal on one table: wins (of 8), and whether the others are within 5%."""
    ratio = table.loc["learned / best", BEYOND_METRICS].astype(float)
    wins = int(table.loc["wins", BEYOND_METRICS].sum())
    short = {m: round(float(1 - v), 4) for m, v in ratio.items() if v <= 1}
    return {
        "wins": wins,
        "shortfall": short,
        "goal_met": wins >= 6 and all(v <= 0.05 for v in short.values()),
    }


def _colour_pairs(pairs: str, n: int | None) -> tuple[Pairs, str] | None:
    """MRI and the colour image's Y channel for ``series/test`` of ``pairs``; None without atlas."""
    from .color import rgb_to_luma
    from .data import DATASET_DIRS, load_pairs

    try:
        ds = load_pairs(pairs, "series/test", fallback=None)
    except FileNotFoundError:
        return None
    count = len(ds) if n is None else min(n, len(ds))
    out = []
    for i in range(count):
        mri, colour, name = ds[i]
        y = rgb_to_luma(colour) if colour.shape[0] == 3 else colour
        out.append((mri.float(), y.float(), str(name)))
    return out, f"Harvard atlas {DATASET_DIRS[pairs]}, series/test, {count} pairs, Y channel"


def run_beyond(
    out_dir: str | os.PathLike,
    splits: Sequence[str] = ("series", "paper"),
    colour: Sequence[str] = ("mri-pet", "mri-spect"),
    n_pairs: int | None = None,
    data: str = "auto",
    cache_path: str | os.PathLike | None = None,
    jobs: int = 1,
) -> dict:
    """Write ``beyond_<split>.csv`` (MRI-CT test pairs of each split) and ``beyond_<pairs>.csv``
    (MRI-PET, MRI-SPECT series/test on the Y channel, with the series weights) to ``out_dir``,
    and ``beyond_summary.json`` (data, weights, wins and shortfalls per table)."""
    from .learned import load_learned_fusion
    from .pretrained import WEIGHTS_DIR, pretrained

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = MetricCache(cache_path)
    jobs_todo: list[tuple[str, str, Pairs, str]] = []
    for split in splits:
        pairs, label = load_split_pairs(f"{split}/test", n_pairs, data)
        jobs_todo.append((split, split, pairs, label))
    for name in colour if data != "phantom" else ():
        got = _colour_pairs(name, n_pairs)
        if got is not None:
            jobs_todo.append((name, "series", *got))
    summary: dict = {"metrics": BEYOND_METRICS, "tables": {}}
    path = out / "beyond_summary.json"
    if path.is_file():  # keep the tables of earlier calls (e.g. one split per call)
        summary["tables"] = json.loads(path.read_text()).get("tables", {})
    for key, split, pairs, label in jobs_todo:
        backbone_name, learned_name = BEYOND_WEIGHTS[split]
        _log(f"beyond: {key}, {len(pairs)} pairs ({backbone_name}, {learned_name})")
        learned = load_learned_fusion(WEIGHTS_DIR / f"{learned_name}.safetensors")
        runs = beyond_runs(
            pairs, key, pretrained(backbone_name), learned, backbone_name, learned_name
        )
        score_runs(runs, {key: pairs}, BEYOND_METRICS, cache, jobs)
        table = beyond_table(runs)
        table.to_csv(out / f"beyond_{key}.csv", float_format="%.4f")
        summary["tables"][key] = {
            "data": label,
            "backbone": backbone_name,
            "learned": learned_name,
            "n_pairs": len(pairs),
            **beyond_goal(table),
        }
        text = json.dumps(summary, indent=1, default=_json_default)
        atomic_write_text(path, text + "\n")
    return summary


def _default_cache() -> Path:
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
    p.add_argument("--cache", default=None, help=f"metric cache file (default {_default_cache()})")
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
    cache = None if args.no_cache else (args.cache or _default_cache())
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
        _log(f"wrote {args.out}/beyond_*.csv")
        return 0
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "DILRAN_DATA=<folder holding harvard-mri-ct> python -m dilran_lite.experiments " + (
        " ".join(argv_list)
    )
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
    _log(f"wrote {args.out}/ in {summary['runtime_s']:.0f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

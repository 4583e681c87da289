"""The building blocks of every table: test pairs, shipped models, a :class:`Run` (one method's
fused 8-bit images), fusing with a model or a baseline, scoring with a content-keyed metric cache,
and the choice of the best variant on validation pairs."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from .._io import atomic_write_text
from ..data import DATASET_DIRS, PhantomDataset, load_pairs, load_splits
from ..fusion import PHI, fuse_features, softmax_nuclear_norms
from ..metrics import compute_metrics, psnr_single, to_uint8
from ..pretrained import WEIGHTS_DIR, available, load_weights, pretrained, pretrained_info
from ..train import read_metadata
from .reference import DEFAULT_TRAIN_SPLIT, SELECTION_METRICS

__all__ = [
    "Pairs",
    "log",
    "load_split_pairs",
    "training_names",
    "weights_record",
    "load_models",
    "Run",
    "fuse_with_model",
    "fuse_with_baseline",
    "reconstruction_gap",
    "MetricCache",
    "score_runs",
    "mean_scores",
    "rank_select",
    "select_best_variant",
]

Pairs = list[tuple[torch.Tensor, torch.Tensor, str]]
"""Source pairs as ``(mri, ct, name)``: float tensors (1, H, W) in [0, 1] and the pair's name."""


def log(msg: str) -> None:
    """One progress line on stdout, with the time."""
    print(f"[experiments {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Data and weights
# --------------------------------------------------------------------------------------------
def load_split_pairs(split: str, n: int | None = None, data: str = "auto") -> tuple[Pairs, str]:
    """The pairs of ``split`` (``"series/test"``) as a list of ``(mri, ct, name)``, and a label.

    ``data``: ``"atlas"`` (error when missing), ``"phantom"``, or ``"auto"`` (the atlas when
    found, else the phantom). ``n`` keeps the first ``n`` pairs of the split.
    """
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
    info = info or {}
    scheme = (info.get("train_config") or {}).get("split") or DEFAULT_TRAIN_SPLIT.get(
        weights, "series"
    )
    splits = load_splits("mri-ct")
    parts = splits.get(scheme, {})
    return scheme, set(parts.get("train", [])), set(parts.get("val", []))


def shipped_info(name: str) -> dict:
    """The sidecar of shipped weights ``name``; ``{}`` when ``name`` is not shipped."""
    try:
        return pretrained_info(name)
    except ValueError:
        return {}


def weights_record(name: str, path: str | os.PathLike | None = None) -> dict:
    """What a table needs to say about weights ``name``: preset, training split, epochs, notes,
    a short sha256. ``path``: a checkpoint file standing in for the shipped one."""
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


def _caller_record(name: str, model: torch.nn.Module) -> dict:
    """The record of a model passed in by the caller (not shipped weights)."""
    return {
        "name": name,
        "preset": "lite" if model.config.width < 64 else "paper",
        "notes": "model passed in by the caller, not the shipped weights",
        "trained_on": f"{DEFAULT_TRAIN_SPLIT.get(name, 'series')}/train",
        "temporary": True,
    }


def load_models(
    names: Sequence[str],
    files: dict[str, str] | None = None,
    models: dict[str, torch.nn.Module] | None = None,
) -> tuple[dict, dict, list[str]]:
    """Models by name (eval mode, CPU), their records (:func:`weights_record`), and the names
    that are not available.

    ``files`` maps a name to a checkpoint file used instead of the shipped weights; ``models``
    (name -> model) replaces loading altogether (tests pass untrained models).
    """
    if models is not None:
        records = {k: _caller_record(k, m) for k, m in models.items()}
        return models, records, [w for w in names if w not in models]
    have = set(available())
    files = files or {}
    models, records, missing = {}, {}, []
    for name in dict.fromkeys(names):
        if name in files:
            models[name] = load_weights(Path(files[name]))
            records[name] = weights_record(name, files[name])
        elif name in have:
            models[name] = pretrained(name)
            records[name] = weights_record(name)
        else:
            missing.append(name)
    return models, records, missing


# --------------------------------------------------------------------------------------------
# Fusing
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


def _phi_weights(norms: tuple[torch.Tensor, torch.Tensor], strategy: str, dtype: torch.dtype):
    """SFNN's (W1, W2) for ``strategy`` from the two sources' softmax nuclear norms."""
    p1, p2 = (PHI[strategy[5:]](n) for n in norms)
    w1 = (p1 / (p1 + p2)).to(dtype)
    return w1, 1 - w1


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
            override = _phi_weights(norms, s, f1.dtype) if s in sfnn else None
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


def _gap_runs(weights: str, strategy: str, split: str) -> dict[str, Run]:
    keys = {
        "network": f"{weights} + {strategy}",
        "autoencoded": f"W1 D(E(MRI)) + W2 D(E(CT)), weights of {weights} + {strategy}",
        "pixels": f"W1 MRI + W2 CT, weights of {weights} + {strategy}",
    }
    return {
        k: Run(lab, split, weights, strategy if k == "network" else f"{strategy} on {k}")
        for k, lab in keys.items()
    }


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
    runs = _gap_runs(weights, strategy, split)
    rows = []
    for a, b, name in pairs:
        t0 = time.perf_counter()
        feats = model.encode(torch.stack([a, b]))
        fused_f, (w1, w2) = fuse_features(feats[:1], feats[1:], strategy, return_weights=True)
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
            f"AE_PSNR_{mod}": psnr_single(to_uint8(src), to_uint8(rec[i]))
            for i, (mod, src) in enumerate((("MRI", a), ("CT", b)))
        }
        rows.append({"pair": name, "W2_CT": w2, **err})
    return runs, pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------
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
        """The cache key of a triple of 8-bit images: a 128-bit hash of shapes and bytes."""
        h = hashlib.blake2b(digest_size=16)
        for x in (a8, b8, f8):
            h.update(str(x.shape).encode())
            h.update(np.ascontiguousarray(x).tobytes())
        return h.hexdigest()

    def update(self, keys: Sequence[str], results: Sequence[dict[str, float]]) -> None:
        """Merge newly computed values (``results[i]`` for ``keys[i]``) into the cache."""
        for k, r in zip(keys, results):
            self.values[k] = {**self.values.get(k, {}), **r}

    def save(self) -> None:
        """Write the cache to its file atomically (nothing when in memory only)."""
        if self.path is None:
            return
        text = json.dumps({"fingerprint": self.fingerprint, "values": self.values})
        atomic_write_text(self.path, text)


def _score_one(args: tuple) -> dict[str, float]:
    a8, b8, f8, names = args
    return compute_metrics(a8, b8, f8, names)


def _compute(todo: dict[str, tuple], cache: MetricCache, jobs: int, n_metrics: int) -> None:
    """Score every triple of ``todo`` (key -> (a8, b8, f8, metric names)) into ``cache``,
    saving the cache every 50 images (one process) and at the end."""
    log(f"scoring {len(todo)} new fused images ({n_metrics} metrics, {jobs} job(s))")
    t0 = time.perf_counter()
    keys, args = list(todo), list(todo.values())
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_score_one, args, chunksize=4))
    else:
        results = []
        for j, v in enumerate(args):
            results.append(_score_one(v))
            if (j + 1) % 50 == 0:
                log(f"  {j + 1}/{len(args)} scored, {time.perf_counter() - t0:.0f} s")
                cache.update(keys, results)
                cache.save()
    cache.update(keys, results)
    cache.save()
    log(f"scored in {time.perf_counter() - t0:.0f} s")


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
        _compute(todo, cache, jobs, len(metrics))
    for i, run in enumerate(runs):
        rows = {name: {m: cache.values[keys[(i, name)]][m] for m in metrics} for name in run.fused}
        df = pd.DataFrame.from_dict(rows, orient="index", columns=metrics)
        df.index.name = "image"
        run.scores = df


def mean_scores(
    run: Run, metrics: Sequence[str], subset: set[str] | None = None
) -> dict[str, float]:
    """The mean of each metric over the pairs of a scored ``run`` (``subset``: those pairs only;
    infinities count as missing), and ``W2_CT``, the mean CT weight (NaN when it has none)."""
    df = run.scores if subset is None else run.scores.loc[run.scores.index.isin(subset)]
    with np.errstate(all="ignore"):
        out = df[list(metrics)].replace([np.inf, -np.inf], np.nan).mean(axis=0).to_dict()
    w2 = [v for k, v in run.w2.items() if subset is None or k in subset]
    out["W2_CT"] = float(np.nanmean(w2)) if w2 and not all(math.isnan(v) for v in w2) else math.nan
    return out


# --------------------------------------------------------------------------------------------
# Selection of this project's best variant (on validation pairs only)
# --------------------------------------------------------------------------------------------
def rank_select(val: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
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
            **mean_scores(r, metrics),
        }
        for r in runs
    ]
    val = rank_select(pd.DataFrame(rows), metrics)
    best = val.loc[val["selected"]].iloc[0]
    return (str(best["weights"]), str(best["strategy"])), val

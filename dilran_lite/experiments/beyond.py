"""Chapter 10, "Beyond DILRAN": the learned fusion layer against every baseline and every DILRAN
rule, on 8 metrics, per split and on the colour pairs (Y channel)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..baselines import BASELINES
from ..color import rgb_to_luma
from ..conventions import DEFAULT_CONVENTION
from ..data import DATASET_DIRS, load_pairs
from ..learned import load_learned_fusion
from ..metrics import to_uint8
from ..pretrained import WEIGHTS_DIR, pretrained
from .reference import STRATEGY_ORDER
from .runs import (
    MetricCache,
    Pairs,
    Run,
    fuse_with_baseline,
    fuse_with_model,
    load_split_pairs,
    log,
    mean_scores,
    score_runs,
)
from .summary import write_json
from .tables import write_csv

__all__ = [
    "BEYOND_METRICS",
    "BEYOND_WEIGHTS",
    "beyond_runs",
    "beyond_table",
    "beyond_goal",
    "beyond_standing",
    "colour_pairs",
    "run_beyond",
]

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
    progress: bool = False,
) -> list[Run]:
    """Fuse ``pairs`` with every baseline, every DILRAN rule of ``backbone`` (the shipped
    ``weights``) and ``learned`` (a :class:`dilran_lite.learned.LearnedFusion` on the same
    backbone, named ``learned_name``): one :class:`Run` each, the learned layer's last
    (left out when ``learned`` is None: what a learned layer has to beat). ``progress``: a
    ``tqdm.auto`` bar over the pairs."""
    from tqdm.auto import tqdm

    runs = [fuse_with_baseline(fn, pairs, name, split) for name, fn in BASELINES.items()]
    memo = _FeatureMemo(backbone)
    if learned is not None:
        learned.attach(backbone)
    rules: dict[str, Run] = {}
    mine = Run(f"learned fusion ({learned_name})", split, learned_name, "learned")
    for a, b, name in tqdm(pairs, desc="fusing", unit="pair", disable=not progress, leave=False):
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
    rows = [{"method": r.method, "n_pairs": len(r.fused), **mean_scores(r, metrics)} for r in runs]
    df = pd.DataFrame(rows).set_index("method")[list(metrics)]
    mine, others = df.iloc[-1], df.iloc[:-1]
    best = others.max(axis=0)
    df.loc["best other"] = best
    df.loc["learned / best"] = mine / best
    df.loc["wins"] = (mine > best).astype(float)
    df.insert(0, "n_pairs", [len(r.fused) for r in runs] + [np.nan] * 3)
    return df


def beyond_standing(table: pd.DataFrame) -> pd.DataFrame:
    """The last rows of a :func:`beyond_table` turned into one row per metric: the best of the
    other methods, the learned layer's score, their ratio, ``wins`` ("yes" or "") and which
    method holds the best other score."""
    metrics = [m for m in BEYOND_METRICS if m in table.columns]
    methods = table.drop(index=["best other", "learned / best", "wins"])
    others = methods.iloc[:-1][metrics].astype(float)
    return pd.DataFrame(
        {
            "best other": table.loc["best other", metrics].astype(float),
            "held by": others.idxmax(axis=0),
            "learned": methods.iloc[-1][metrics].astype(float),
            "learned / best": table.loc["learned / best", metrics].astype(float),
            "wins": ["yes" if w else "" for w in table.loc["wins", metrics]],
        },
        index=pd.Index(metrics, name="metric"),
    )


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


def colour_pairs(pairs: str, n: int | None) -> tuple[Pairs, str] | None:
    """MRI and the colour image's Y channel for ``series/test`` of ``pairs``; None without atlas."""
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


def _beyond_jobs(
    splits: Sequence[str], colour: Sequence[str], n_pairs: int | None, data: str
) -> list[tuple[str, str, Pairs, str]]:
    """(table key, split of the weights, pairs, data label) of every table to make."""
    todo = []
    for split in splits:
        pairs, label = load_split_pairs(f"{split}/test", n_pairs, data)
        todo.append((split, split, pairs, label))
    for name in colour if data != "phantom" else ():
        got = colour_pairs(name, n_pairs)
        if got is not None:
            todo.append((name, "series", *got))
    return todo


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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = MetricCache(cache_path)
    summary: dict = {"metrics": BEYOND_METRICS, "convention": DEFAULT_CONVENTION, "tables": {}}
    path = out / "beyond_summary.json"
    if path.is_file():  # keep the tables of earlier calls (e.g. one split per call)
        summary["tables"] = json.loads(path.read_text()).get("tables", {})
    for key, split, pairs, label in _beyond_jobs(splits, colour, n_pairs, data):
        backbone_name, learned_name = BEYOND_WEIGHTS[split]
        log(f"beyond: {key}, {len(pairs)} pairs ({backbone_name}, {learned_name})")
        learned = load_learned_fusion(WEIGHTS_DIR / f"{learned_name}.safetensors")
        runs = beyond_runs(
            pairs, key, pretrained(backbone_name), learned, backbone_name, learned_name
        )
        score_runs(runs, {key: pairs}, BEYOND_METRICS, cache, jobs)
        table = beyond_table(runs)
        write_csv(table, out / f"beyond_{key}.csv", index=True, float_format="%.4f")
        summary["tables"][key] = {
            "data": label,
            "backbone": backbone_name,
            "learned": learned_name,
            "n_pairs": len(pairs),
            **beyond_goal(table),
        }
        write_json(summary, path)
    return summary

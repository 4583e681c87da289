"""Beyond DILRAN: a learned, per-pixel fusion layer on the frozen DILRAN features.

Every SFNN rule mixes the two feature maps with one number per pair, so a bright CT bone and a
bright MRI soft tissue cannot both be kept. :class:`LearnedFusion` maps the two feature maps
(and the two source images) to a weight map ``w`` in [0, 1], one value per pixel, and fuses
either the features, ``decode(w * f1 + (1 - w) * f2)`` with the frozen reconstructor, or the
source images, ``w * a + (1 - w) * b`` plus a learned share of their fine detail
(``LearnedConfig.output``; the shipped layers mix the images). Only the small
:class:`WeightNet` is trained, with an unsupervised objective: :class:`FusionObjective`
(intensity towards the brighter source, gradients towards the stronger source, structural
similarity to both) or the metric stand-ins of :mod:`dilran_lite.surrogates`
(``LearnedTrainConfig.metric_weights``; the shipped layers use them).

:func:`train_learned_fusion` precomputes the frozen encoder's features once (on random crops of
the training pairs), trains on them, validates every epoch on the ``val`` part of the split, and
writes checkpoints with :func:`dilran_lite.train.save_checkpoint` (atomic safetensors + JSON
sidecar; ``resume`` continues from ``last``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from ._io import git_commit
from .checkpoint import (
    MAX_WIDTH,
    check_loss,
    is_int,
    load_checkpoint,
    read_metadata,
    read_run_result,
    save_epoch,
)
from .data import load_pairs
from .errors import CheckpointError
from .losses import image_gradients
from .phantom import PhantomDataset
from .surrogates import MetricObjective, ssim_map
from .utils import seed_everything
from .weights import available, weights_path

__all__ = [
    "LearnedConfig",
    "WeightNet",
    "LearnedFusion",
    "FusionObjective",
    "LearnedTrainConfig",
    "learned_quick_config",
    "encode_pairs",
    "train_learned_fusion",
    "load_learned_fusion",
    "MODEL_KIND",
    "METRIC_OBJECTIVE",
    "OUTPUTS",
    "fine_detail",
    "make_objective",
    "load_backbone",
    "fit_learned_epoch",
    "ssim_map",
    "MAX_HIDDEN",
]

OUTPUTS = ("features", "image")
"""Where the learned weight map mixes: the feature maps (then decoded) or the source images."""

METRIC_OBJECTIVE = "VIF=1,SSIM=1,Qabf=1,SCD=1@max,SD=1@max,SF=1@laplacian"
"""The metric-surrogate objective of the shipped layers and of quick mode
(:class:`dilran_lite.surrogates.MetricObjective`): VIF, SSIM and Qabf rewarded, SCD and SD up to
5% above the pixel maximum's, SF up to 5% above the Laplacian pyramid's, on the same crop."""

#: the largest hidden width a learned-fusion config may ask for (the shipped layers use 16)
MAX_HIDDEN = 1024

MODEL_KIND = "learned-fusion"
"""The ``model_kind`` of a learned-fusion checkpoint's metadata (DILRAN checkpoints have none)."""


@dataclass(frozen=True)
class LearnedConfig:
    """The weight network's shape and the frozen backbone it sits on (a shipped name)."""

    backbone: str = "dilran-paper"
    width: int = 64
    hidden: int = 16
    with_images: bool = True
    output: str = "features"
    """``"features"``: decode the mixed features; ``"image"``: mix the source images and add a
    learned share of their fine detail (the reconstructor is not used)."""

    def __post_init__(self) -> None:
        bad = []
        if self.output not in OUTPUTS:
            bad.append(f"output {self.output!r} (one of {list(OUTPUTS)})")
        if not is_int(self.width, 1, MAX_WIDTH):
            bad.append(f"width {self.width!r} (an integer 1..{MAX_WIDTH})")
        if not is_int(self.hidden, 1, MAX_HIDDEN):
            bad.append(f"hidden {self.hidden!r} (an integer 1..{MAX_HIDDEN})")
        if not isinstance(self.with_images, bool):
            bad.append(f"with_images {self.with_images!r} (true or false)")
        if not isinstance(self.backbone, str) or self.backbone not in available():
            bad.append(f"backbone {self.backbone!r:.60} (a shipped name: {', '.join(available())})")
        if bad:
            raise CheckpointError(f"learned-fusion config out of range: {'; '.join(bad)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LearnedConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CheckpointError(f"unknown learned-fusion config keys: {sorted(unknown)}")
        return cls(**d)


class WeightNet(nn.Module):
    """Features and images -> per-pixel weight of the first source.

    Input: ``f1, f2`` (N, width, H, W) and, when ``with_images``, ``a, b`` (N, 1, H, W).
    Output: ``w`` (N, 1, H, W) in [0, 1]; with ``detail=True`` also a detail gain ``g``
    (N, 1, H, W) >= 0 (softplus of a second output, about 0.02 at the start). The features
    are divided by their mean magnitude (per image), then three 3x3 convolutions (the middle
    one dilated by 2: a 9x9 receptive field) give a logit, to which ``gain * (a - b)`` is
    added (``gain`` learnable, 10 at the start): the untrained net leans towards the brighter
    source, a soft pixel maximum, and learns where to depart from it. The last convolution
    starts at zero; with ``gain = 0`` an untrained net gives w = 0.5 (the average).
    """

    def __init__(
        self,
        width: int,
        hidden: int = 16,
        with_images: bool = True,
        gain: float = 10.0,
        detail: bool = False,
    ) -> None:
        super().__init__()
        c_in = 2 * width + (2 if with_images else 0)
        self.with_images, self.detail = with_images, detail
        self.body = nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 2 if detail else 1, 3, padding=1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)
        if detail:  # the detail gain starts near zero: softplus(-4) = 0.018
            nn.init.constant_(self.body[-1].bias[1:], -4.0)
        # a learnable prior towards the brighter source: logit += gain * (a - b)
        self.gain = nn.Parameter(torch.tensor(gain if with_images else 0.0))

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
        # features scaled to a mean magnitude of 1 per image: the sigmoid starts unsaturated
        scale = torch.cat([f1, f2], dim=1).abs().mean(dim=(1, 2, 3), keepdim=True)
        f1, f2 = f1 / scale.clamp_min(1e-6), f2 / scale.clamp_min(1e-6)
        parts = [f1, f2, a, b] if self.with_images else [f1, f2]
        out = self.body(torch.cat(parts, dim=1))
        logit = out[:, :1]
        if self.with_images:
            logit = logit + self.gain * (a - b)
        if self.detail:
            return torch.sigmoid(logit), F.softplus(out[:, 1:])
        return torch.sigmoid(logit)


def fine_detail(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """``x`` minus its Gaussian blur (sigma in pixels, replicated border): (N, 1, H, W)."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    y = F.pad(x, (r, r, r, r), mode="replicate")
    y = F.conv2d(F.conv2d(y, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    return x - y


class LearnedFusion(nn.Module):
    """The learned layer, in one of two places (``config.output``):

    - ``"features"``: ``fused = decode(w * f1 + (1 - w) * f2)``, w from :class:`WeightNet`;
    - ``"image"``: ``fused = w * a + (1 - w) * b + g * d``, where ``d`` is the fine detail
      (:func:`fine_detail`) of whichever source has more of it at that pixel and ``g`` a second,
      learned map; the decoder is never used, so the fused pixels are the sources' own.

    Only the weight net is a parameter (and in the checkpoint); the DILRAN backbone that encodes
    and decodes is frozen, loaded by name on first use or given with :meth:`attach`.
    """

    def __init__(self, config: LearnedConfig | None = None) -> None:
        super().__init__()
        self.config = config or LearnedConfig()
        cfg = self.config
        self.weight_net = WeightNet(
            cfg.width, cfg.hidden, cfg.with_images, detail=cfg.output == "image"
        )
        object.__setattr__(self, "_backbone", None)  # not a submodule: frozen, not saved

    def attach(self, backbone: nn.Module) -> LearnedFusion:
        """Use ``backbone`` (a DILRAN with ``encode``/``decode``) instead of loading it by name."""
        if backbone.config.width != self.config.width:
            raise ValueError(
                f"backbone has {backbone.config.width} channels, the weight net "
                f"expects {self.config.width}"
            )
        for p in backbone.parameters():
            p.requires_grad_(False)
        object.__setattr__(self, "_backbone", backbone.eval())
        return self

    @property
    def backbone(self) -> nn.Module:
        if self._backbone is None:
            self.attach(load_backbone(self.config.backbone))
        return self._backbone

    def mix(
        self, f1: torch.Tensor, f2: torch.Tensor, a: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, width, H, W) features, (N, 1, H, W) images -> fused features, w (N, 1, H, W)."""
        w = self.weight_net(f1, f2, a, b)
        w = w[0] if isinstance(w, tuple) else w
        return w * f1 + (1 - w) * f2, w

    def fuse_features(
        self, f1: torch.Tensor, f2: torch.Tensor, a: torch.Tensor, b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused image (N, 1, H, W), unclamped, and the weight map w, from the encoded features
        and the images: mixed features decoded, or mixed images plus detail (``output``)."""
        if self.config.output == "image":
            w, g = self.weight_net(f1, f2, a, b)
            da, db = fine_detail(a), fine_detail(b)
            d = torch.where(da.abs() >= db.abs(), da, db)
            return w * a + (1 - w) * b + g * d, w
        fused_f, w = self.mix(f1, f2, a, b)
        return self.backbone.decode(fused_f), w

    def forward(self, a: torch.Tensor, b: torch.Tensor, return_weights: bool = False):
        """Fuse (N, 1, H, W) images in [0, 1] (or (1, H, W)) into one, clamped to [0, 1]."""
        squeeze = a.ndim == 3
        a, b = (x[None] if x.ndim == 3 else x for x in (a, b))
        if a.shape != b.shape:
            raise ValueError(
                f"the two images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}"
            )
        dtype = next(self.weight_net.parameters()).dtype
        a, b = a.to(dtype), b.to(dtype)
        f1, f2 = self.backbone.encode(torch.cat([a, b])).chunk(2)
        out, w = self.fuse_features(f1, f2, a, b)
        out = out.clamp(0, 1)
        if squeeze:
            out, w = out[0], w[0]
        return (out, w) if return_weights else out

    fuse = forward


class FusionObjective(nn.Module):
    """The unsupervised fusion loss of fused ``f`` and sources ``a``, ``b`` (all (N, 1, H, W)):

    ``|f - max(a, b)|_1 + alpha * |grad f - maxabs(grad a, grad b)|_1
    + beta * (1 - (SSIM(f, a) + SSIM(f, b)) / 2)``

    (means over pixels; Sobel gradients, each direction taken from the source with the larger
    magnitude there).
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0) -> None:
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def terms(self, f: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        intensity = (f - torch.maximum(a, b)).abs().mean()
        grad = f.new_zeros(())
        for gf, ga, gb in zip(image_gradients(f), image_gradients(a), image_gradients(b)):
            target = torch.where(ga.abs() >= gb.abs(), ga, gb)
            grad = grad + (gf - target).abs().mean()
        ssim = 1 - (ssim_map(f, a).mean() + ssim_map(f, b).mean()) / 2
        return {"intensity": intensity, "gradient": grad, "ssim": ssim}

    def forward(self, f: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        t = self.terms(f, a, b)
        return t["intensity"] + self.alpha * t["gradient"] + self.beta * t["ssim"]


@dataclass
class LearnedTrainConfig:
    """Everything a learned-fusion training run depends on (stored in every checkpoint).

    Training reads ``split``/train of ``pairs`` (``data``: ``"atlas"``, ``"phantom"`` or
    ``"auto"``), encodes ``crops_per_pair`` random ``crop`` x ``crop`` windows of each pair once
    with the frozen ``backbone`` (windows whose brighter source has a mean below 0.05 are drawn
    again: no empty background), and validates on ``val`` (whole images, ``val_limit`` pairs).
    ``output`` is the layer's form (:data:`OUTPUTS`); the loss is :class:`FusionObjective`
    (``alpha``, ``beta``) unless ``metric_weights`` names metric stand-ins (:func:`make_objective`).
    """

    backbone: str = "dilran-paper"
    hidden: int = 16
    with_images: bool = True
    output: str = "features"
    pairs: str = "mri-ct"
    split: str = "series"
    data: str = "auto"
    phantom_pairs: int = 24
    crop: int = 96
    crops_per_pair: int = 1
    epochs: int = 20
    steps_per_epoch: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    alpha: float = 1.0
    beta: float = 1.0
    metric_weights: str = ""
    val_limit: int | None = None
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> LearnedTrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def learned_quick_config(**overrides: Any) -> LearnedTrainConfig:
    """Seconds on a CPU: the lite backbone, 8 phantom pairs, 48-pixel crops, 3 short epochs;
    the shipped layers' form (``output="image"``, :data:`METRIC_OBJECTIVE`)."""
    base = dict(
        output="image",
        metric_weights=METRIC_OBJECTIVE,
        backbone="dilran-lite",
        data="phantom",
        phantom_pairs=8,
        crop=48,
        crops_per_pair=2,
        epochs=3,
        steps_per_epoch=10,
        val_limit=2,
    )
    base.update(overrides)
    return LearnedTrainConfig(**base)


def _load_split(cfg: LearnedTrainConfig, part: str) -> tuple[list[tuple], str]:
    """``(a, b)`` image pairs (each (1, H, W)) of one part of the split, and their source."""

    if cfg.data == "phantom":
        offset = {"train": 0, "val": 10_000, "test": 20_000}[part]
        n = cfg.phantom_pairs if part == "train" else max(1, cfg.phantom_pairs // 3)
        ds = PhantomDataset(n=n, seed=cfg.seed + offset)
    else:
        fallback = "phantom" if cfg.data == "auto" else None
        ds = load_pairs(cfg.pairs, f"{cfg.split}/{part}", fallback=fallback)
    items = [ds[i] for i in range(len(ds))]
    pairs = [(x[0].float(), x[1].float()) for x in items]
    return pairs, str(getattr(ds, "source", type(ds).__name__))


def _crop_box(a: torch.Tensor, b: torch.Tensor, crop: int, g: torch.Generator) -> tuple[int, int]:
    """A random window of the pair whose brighter source is not empty background."""
    h, w = a.shape[-2:]
    crop = min(crop, h, w)
    top = left = 0
    for _ in range(20):
        top = int(torch.randint(0, h - crop + 1, (1,), generator=g))
        left = int(torch.randint(0, w - crop + 1, (1,), generator=g))
        win = torch.maximum(a, b)[..., top : top + crop, left : left + crop]
        if win.mean() > 0.05:
            break
    return top, left


@torch.no_grad()
def encode_pairs(
    backbone: nn.Module,
    pairs: list[tuple],
    crop: int | None = None,
    per_pair: int = 1,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Encode each pair once with the frozen backbone: ``{"f1", "f2"}`` (N, width, h, w) float16
    and ``{"a", "b"}`` (N, 1, h, w) float32; ``crop`` encodes ``per_pair`` random windows of
    each pair (None: the whole images, ``per_pair`` ignored)."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, list] = {"f1": [], "f2": [], "a": [], "b": []}
    backbone.eval()
    for a, b in pairs:
        for _ in range(1 if crop is None else per_pair):
            if crop is None:
                wa, wb = a, b
            else:
                top, left = _crop_box(a, b, crop, g)
                c = min(crop, *a.shape[-2:])
                wa = a[..., top : top + c, left : left + c]
                wb = b[..., top : top + c, left : left + c]
            f1, f2 = backbone.encode(torch.stack([wa, wb])).chunk(2)
            for k, v in zip(("f1", "f2", "a", "b"), (f1.half(), f2.half(), wa[None], wb[None])):
                out[k].append(v)
    return {k: torch.cat(v) for k, v in out.items()}


def make_objective(cfg: LearnedTrainConfig) -> nn.Module:
    """The run's loss: :class:`FusionObjective` (``alpha``, ``beta``), or, when
    ``metric_weights`` is set (e.g. ``"VIF=1,SCD=1"``), the metric surrogates'
    :class:`dilran_lite.surrogates.MetricObjective`."""
    if cfg.metric_weights:
        return MetricObjective(cfg.metric_weights)
    return FusionObjective(cfg.alpha, cfg.beta)


def _val_loss(model: LearnedFusion, val: dict, objective: nn.Module) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(len(val["a"])):
            a, b = val["a"][i : i + 1], val["b"][i : i + 1]
            f, _ = model.fuse_features(
                val["f1"][i : i + 1].float(), val["f2"][i : i + 1].float(), a, b
            )
            total += float(objective(f, a, b))
    return total / len(val["a"])


def load_backbone(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """The frozen DILRAN a learned layer sits on: shipped weights by name only (a name is never
    taken as a path), in eval mode."""
    model, _ = load_checkpoint(weights_path(name), map_location=device)
    return model.to(device).eval()


def _open_learned_run(cfg: LearnedTrainConfig, out: Path, resume: bool, model, opt):
    """The history and first epoch: empty and 0, or those of ``out/last`` on resume (whose
    config must equal ``cfg`` except for ``epochs``)."""
    last = out / "last.safetensors"
    if not (resume and last.is_file()):
        return {"train_loss": [], "val_loss": [], "epoch_time_s": []}, 0
    saved = read_metadata(last)["train_config"]
    defaults = asdict(LearnedTrainConfig())  # fields older checkpoints do not record
    diff = [k for k, v in asdict(cfg).items() if k != "epochs" and saved.get(k, defaults[k]) != v]
    if diff:
        raise CheckpointError(f"cannot resume {last}: the training config differs in {diff}")
    _, meta = load_checkpoint(last, model, opt)
    return meta["history"], meta["epoch"]


def _encoded_data(cfg: LearnedTrainConfig, backbone: nn.Module, cache: dict) -> dict:
    """The encoded train crops and val pairs, from ``cache`` when its key matches ``cfg``."""
    key = (cfg.pairs, cfg.split, cfg.data, cfg.phantom_pairs, cfg.backbone, cfg.crop)
    key += (cfg.crops_per_pair, cfg.val_limit, cfg.seed)
    if cache.get("key") != key:
        t0 = time.perf_counter()
        train_pairs, source = _load_split(cfg, "train")
        val_pairs, _ = _load_split(cfg, "val")
        cache.update(
            key=key,
            source=source,
            train=encode_pairs(backbone, train_pairs, cfg.crop, cfg.crops_per_pair, cfg.seed),
            val=encode_pairs(backbone, val_pairs[: cfg.val_limit]),
            n=(len(train_pairs), len(val_pairs[: cfg.val_limit])),
            encode_s=time.perf_counter() - t0,
        )
    return cache


def _learned_meta(cfg: LearnedTrainConfig, data: dict, notes: str | None) -> dict:
    """What every checkpoint of the run records besides its epoch and history."""
    return {
        "model_kind": MODEL_KIND,
        "train_config": asdict(cfg),
        "split": f"{cfg.split} (train: {data['n'][0]} pairs, {len(data['train']['a'])} crops; "
        f"val: {data['n'][1]} whole pairs)",
        "data": data["source"],
        "encode_s": round(data["encode_s"], 1),
        "package_version": __version__,
        "git_commit": git_commit(),
        "device": "cpu",
        "torch_version": torch.__version__,
        "notes": notes,
    }


def fit_learned_epoch(
    model: LearnedFusion, opt, objective: nn.Module, tr: dict, cfg: LearnedTrainConfig, epoch: int
) -> float:
    """One epoch of ``cfg.steps_per_epoch`` Adam steps on random batches of the encoded crops
    ``tr``; returns the mean training loss. A non-finite loss stops the run (``UserError``)."""
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    model.train()
    total = 0.0
    for step in range(cfg.steps_per_epoch):
        idx = torch.randint(0, len(tr["a"]), (cfg.batch_size,), generator=g)
        a, b = tr["a"][idx], tr["b"][idx]
        f, _ = model.fuse_features(tr["f1"][idx].float(), tr["f2"][idx].float(), a, b)
        loss = objective(f, a, b)
        check_loss(loss, epoch, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item()
    return total / cfg.steps_per_epoch


def train_learned_fusion(
    cfg: LearnedTrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    notes: str | None = None,
    cache: dict | None = None,
) -> tuple[LearnedFusion, dict]:
    """Train the weight net on the frozen backbone's features; checkpoints go to ``out_dir``
    (``last.safetensors`` every epoch, ``best.safetensors`` at the lowest validation loss).
    Returns the best epoch's weights with the metadata of the last (every epoch's history),
    plus ``best_epoch`` and ``best_val_loss``.

    ``resume`` continues from ``last`` (same config except ``epochs``). ``cache`` (a dict, filled
    on first use) keeps the encoded train and val features between calls with the same data,
    backbone and crops (e.g. when trying several ``alpha``, ``beta``).
    """
    out = Path(out_dir)
    seed_everything(cfg.seed)
    backbone = load_backbone(cfg.backbone)
    width = backbone.config.width
    config = LearnedConfig(cfg.backbone, width, cfg.hidden, cfg.with_images, cfg.output)
    model = LearnedFusion(config).attach(backbone)
    opt = torch.optim.Adam(model.weight_net.parameters(), lr=cfg.lr)
    objective = make_objective(cfg)
    history, start = _open_learned_run(cfg, out, resume, model, opt)
    data = _encoded_data(cfg, backbone, {} if cache is None else cache)
    base_meta = _learned_meta(cfg, data, notes)
    best = min(history["val_loss"], default=math.inf)
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        loss = fit_learned_epoch(model, opt, objective, data["train"], cfg, epoch)
        val = _val_loss(model, data["val"], objective)
        record = {"train_loss": loss, "val_loss": val, "epoch_time_s": time.perf_counter() - t0}
        best = save_epoch(out, model, opt, base_meta, history, record, epoch + 1, best, progress)
    return read_run_result(out, model, {**base_meta, "epoch": start})


def load_learned_fusion(path: str | Path, device: str | torch.device = "cpu") -> LearnedFusion:
    """A learned-fusion checkpoint (file) as a :class:`LearnedFusion` in eval mode; its backbone
    (a shipped name in the config) is loaded on first use. Every field of the header's config is
    checked (sizes bounded, the backbone a shipped name) before the layer is built."""
    meta = read_metadata(path)
    if meta.get("model_kind") != MODEL_KIND:
        raise CheckpointError(f"{path} is not a learned-fusion checkpoint")
    model = LearnedFusion(LearnedConfig.from_dict(meta["model_config"]))
    load_checkpoint(path, model, map_location=device)
    return model.to(device).eval()

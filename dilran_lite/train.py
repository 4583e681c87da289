"""Training (Sec. 4.2) and checkpoints.

The fusion module is removed: the feature extractor and reconstructor are trained as an
autoencoder on single images of both modalities, with Adam (lr 1e-4), 100 epochs and the loss of
Eq. 9 (lambda1 = lambda2 = 0.2, VGG16 third block). Images of the split's ``train`` part are
trained on, its ``val`` part gives a validation loss per epoch.

Checkpoints are safetensors files (no pickle is ever loaded) with the metadata also written as
a JSON sidecar. Every write goes to a temporary file that replaces the target atomically, and a
checkpoint is written after every epoch, so an interruption (even ``kill -9``) loses at most the
epoch in progress; ``resume=True`` continues from the last one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import __version__
from ._io import TMP_TAG, atomic_write, git_commit
from .errors import CheckpointError, UserError
from .losses import FusionLoss
from .model import DILRAN, PRESETS, ModelConfig
from .utils import amp_dtype, autocast, default_device, seed_everything

__all__ = [
    "TrainConfig",
    "quick_config",
    "train",
    "train_step",
    "save_checkpoint",
    "load_checkpoint",
    "read_metadata",
    "CheckpointError",
    "check_model_config",
    "RUN_FILES",
]

FORMAT = "dilran-lite-checkpoint/1"
#: The files a training run writes into its folder; ``--overwrite`` replaces only these.
RUN_FILES = ("last.safetensors", "last.json", "best.safetensors", "best.json")
#: Fields that a resumed run may change (more epochs; ``data_root``: the atlas moved).
RESUME_FREE = ("epochs", "data_root")
#: Largest channel count and layer count a checkpoint or config may ask for.
MAX_WIDTH, MAX_LAYERS, MAX_DILATION = 1024, 16, 64

_CHOICES = {
    "activation": ("relu", "leaky_relu", "prelu", "gelu", "silu"),
    "norm": ("none", "batch", "instance"),
    "mask_activation": ("sigmoid", "none"),
    "skip": ("attention", "identity", "none"),
    "out_activation": (None, "sigmoid"),
}


def _is_int(v: Any, low: int, high: int | None = None) -> bool:
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= low
    return ok and (high is None or v <= high)


def check_model_config(d: Any, where: str = "model config") -> ModelConfig:
    """A :class:`ModelConfig` from the dict ``d``, every value checked for type and range first
    (so that, e.g., ``width = 200000`` is refused before any memory is allocated).

    Raises :class:`CheckpointError` naming ``where`` and the bad field.
    """
    if not isinstance(d, dict):
        raise CheckpointError(f"{where}: model_config must be a JSON object, got {d!r:.60}")
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise CheckpointError(f"{where}: unknown model_config keys {unknown}")
    full = {**ModelConfig().to_dict(), **d}
    bad: list[str] = []
    if not _is_int(full["width"], 1, MAX_WIDTH):
        bad.append(f"width {full['width']!r} (an integer 1..{MAX_WIDTH})")
    if full["in_channels"] not in (1, 3) or isinstance(full["in_channels"], bool):
        bad.append(f"in_channels {full['in_channels']!r} (1 or 3)")
    for key, high in (("dilations", MAX_DILATION), ("recon_widths", MAX_WIDTH)):
        v = full[key]
        if (
            not isinstance(v, (list, tuple))
            or not 1 <= len(v) <= MAX_LAYERS
            or not all(_is_int(x, 1, high) for x in v)
        ):
            bad.append(f"{key} {v!r:.60} (1..{MAX_LAYERS} integers 1..{high})")
    for key, allowed in _CHOICES.items():
        if full[key] not in allowed:
            bad.append(f"{key} {full[key]!r:.40} (one of {list(allowed)})")
    for key in ("share_pyramid_weights", "recon_activation"):
        if not isinstance(full[key], bool):
            bad.append(f"{key} {full[key]!r:.40} (true or false)")
    if bad:
        raise CheckpointError(f"{where}: model_config out of range: {'; '.join(bad)}")
    return ModelConfig.from_dict(d)


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in every checkpoint).

    ``split`` is ``"series"`` (whole scan series held out) or ``"paper"`` (20 random test
    pairs); training reads its ``train`` part and validates on ``val``. ``crop`` trains on
    random crops (with flips and 90-degree rotations when ``augment``); None trains on whole
    images, as the paper does. ``steps_per_epoch`` caps an epoch (quick mode). ``data`` is
    ``"atlas"`` or ``"phantom"`` (``phantom_pairs`` of ``phantom_size`` pixels; a third as many
    for validation); ``"auto"`` takes the atlas when it is found.
    """

    preset: str = "paper"
    model: dict = field(default_factory=dict)
    pairs: str = "mri-ct"
    split: str = "series"
    data: str = "auto"
    data_root: str | None = None
    phantom_pairs: int = 24
    phantom_size: int = 256
    epochs: int = 100
    lr: float = 1e-4
    batch_size: int = 4
    crop: int | None = None
    augment: bool = False
    steps_per_epoch: int | None = None
    val_crop: int | None = None
    val_limit: int | None = None
    lambda1: float = 0.2
    lambda2: float = 0.2
    gradient: str = "sobel"
    vgg_weights: str | None = None
    vgg_layer: str = "relu3_3"
    seed: int = 0
    amp: bool = True
    channels_last: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def model_config(self) -> ModelConfig:
        if self.preset not in PRESETS:
            raise UserError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        if not isinstance(self.model, dict):
            raise UserError(f"model must be a dict of ModelConfig fields, got {self.model!r:.60}")
        return check_model_config(
            {**PRESETS[self.preset].to_dict(), **self.model}, "training config"
        )

    def validate(self) -> None:
        """Raise :class:`UserError` (one line naming the field, the value and what is allowed)
        for any value a run cannot use; called on construction, before any work."""
        bad = [f"{name} {getattr(self, name)!r}: {rule}" for name, rule in self._problems()]
        if bad:
            raise UserError(f"bad training option(s): {'; '.join(bad)}")
        self.model_config()

    def _problems(self) -> list[tuple[str, str]]:
        choices = {
            "pairs": ("mri-ct", "mri-pet", "mri-spect"),
            "split": ("series", "paper"),
            "data": ("auto", "atlas", "phantom"),
            "gradient": ("sobel", "diff"),
        }
        out = [
            (k, f"choose one of {list(v)}") for k, v in choices.items() if getattr(self, k) not in v
        ]
        ints = {"epochs": 1, "batch_size": 1, "phantom_pairs": 1, "phantom_size": 16, "seed": 0}
        out += [
            (k, f"must be an integer >= {low}")
            for k, low in ints.items()
            if not _is_int(getattr(self, k), low)
        ]
        optional = {"crop": 16, "steps_per_epoch": 1, "val_crop": 16, "val_limit": 1}
        out += [
            (k, f"must be None or an integer >= {low}")
            for k, low in optional.items()
            if getattr(self, k) is not None and not _is_int(getattr(self, k), low)
        ]
        for k in ("lr", "lambda1", "lambda2"):
            v = getattr(self, k)
            positive = k == "lr"
            if (
                not isinstance(v, (int, float))
                or isinstance(v, bool)
                or not math.isfinite(v)
                or (v <= 0 if positive else v < 0)
            ):
                out.append((k, "must be a finite number " + ("> 0" if positive else ">= 0")))
        return out

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def quick_config(**overrides) -> TrainConfig:
    """A run of a few hundred steps on 64x64 crops of the lite preset: about a minute on a CPU.

    The perceptual term is off (``lambda2 = 0``) so that no VGG16 weights are needed.
    """
    base = dict(
        preset="lite",
        epochs=4,
        steps_per_epoch=50,
        batch_size=8,
        crop=64,
        augment=True,
        val_crop=128,
        val_limit=16,
        lr=1e-3,
        lambda2=0.0,
    )
    base.update(overrides)
    return TrainConfig(**base)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a :class:`torch.device` (default: CUDA when present); a device that is
    not available raises :class:`UserError` before any work."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UserError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"device {device!r} requested but no CUDA GPU is available: use --device cpu"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {device!r} requested but MPS is not available: use --device cpu")
    return dev


def save_checkpoint(
    path: str | Path,
    model: DILRAN,
    meta: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    rng: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` (and optionally the optimizer state) to ``path`` (.safetensors) atomically,
    with ``meta`` in the file's header and in a ``.json`` sidecar beside it.

    ``dtype`` (e.g. ``torch.float16`` for shipped weights: half the size) stores the model's
    floating-point tensors in that type; loading casts them back to the model's (float32).
    """
    path = Path(path)
    meta = {"format": FORMAT, "model_config": model.config.to_dict(), **(meta or {})}
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        meta["stored_dtype"] = str(dtype).removeprefix("torch.")
    if optimizer is not None:
        state = optimizer.state_dict()
        for idx, st in state["state"].items():
            for key, val in st.items():
                t = val if torch.is_tensor(val) else torch.tensor(val)
                tensors[f"optim.{idx}.{key}"] = t.detach().cpu().contiguous()
        meta["optimizer_param_groups"] = state["param_groups"]
    if rng is not None:
        tensors["rng.torch"] = rng
    text = json.dumps(meta, indent=1, default=str)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"dilran_lite": text}))
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text + "\n"))
    return path


def read_metadata(path: str | Path) -> dict:
    """The metadata stored in a checkpoint's header (the sidecar is only a readable copy)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise CheckpointError(f"checkpoint {path} {what}: give a .safetensors file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({err}); dilran-lite never loads "
            "pickled .pt files: convert them with safetensors first"
        ) from err
    if "dilran_lite" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a dilran-lite checkpoint")
    try:
        meta = json.loads(header["dilran_lite"])
    except ValueError as err:
        raise CheckpointError(f"{path}: the checkpoint header is not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the checkpoint header is not a JSON object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    if "model_config" not in meta:
        raise CheckpointError(f"{path}: the checkpoint header lacks its model_config")
    return meta


def _check_tensors(path: Path, state: dict[str, torch.Tensor], model: DILRAN) -> None:
    """Refuse, naming the tensors, model weights that are missing, unexpected, of another
    shape, not floating point where the model's are, or not finite (NaN, Inf)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} (model {tuple(own[k].shape)})"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, other shapes {shapes[:5]}"
        )
    for k in sorted(state):
        t = state[k]
        if own[k].is_floating_point() and not t.is_floating_point():
            raise CheckpointError(
                f"checkpoint {path}: tensor {k} is stored as {str(t.dtype).removeprefix('torch.')}"
                ", not floating point: the file is damaged or was not written by dilran-lite"
            )
        if t.is_floating_point() and not torch.isfinite(t).all():
            n = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"checkpoint {path}: tensor {k} holds {n} NaN or infinite value(s): the weights "
                "are damaged (a diverged run or a corrupted file); use another checkpoint"
            )


def _config_diff(a: ModelConfig, b: ModelConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: model has {da[k]!r}, checkpoint has {db[k]!r}" for k in da if da[k] != db[k]]


def load_checkpoint(
    path: str | Path,
    model: DILRAN | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[DILRAN, dict]:
    """Load a checkpoint into ``model`` (or a new model built from its config).

    Refuses, with every differing field named, a checkpoint whose model config differs from
    ``model``'s. Returns ``(model, metadata)``; restores ``optimizer`` when given.
    """
    path = Path(path)
    meta = read_metadata(path)
    if model is not None and not isinstance(model.config, ModelConfig):
        # a model with its own config class (a learned-fusion layer): read the config with it
        cfg = type(model.config).from_dict(meta["model_config"])
    else:
        cfg = check_model_config(meta["model_config"], f"checkpoint {path}")
    if model is None:
        model = DILRAN(cfg)
    elif model.config != cfg:
        diff = "; ".join(_config_diff(model.config, cfg))
        raise CheckpointError(f"checkpoint {path} was saved from another model config: {diff}")
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device=str(map_location)) as fh:
        for k in fh.keys():
            tensors[k] = fh.get_tensor(k)
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    _check_tensors(path, state, model)
    model.load_state_dict(state)
    if optimizer is not None:
        if "optimizer_param_groups" not in meta:
            raise CheckpointError(f"checkpoint {path} holds no optimizer state to resume from")
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                opt_state.setdefault(int(idx), {})[key] = v
        optimizer.load_state_dict(
            {"state": opt_state, "param_groups": meta["optimizer_param_groups"]}
        )
    if "rng.torch" in tensors:
        meta["_rng"] = tensors["rng.torch"].cpu()
    return model, meta


def _images(cfg: TrainConfig, part: str) -> tuple[torch.Tensor, str]:
    """All single images (both modalities) of one split part as one (N, 1, H, W) tensor."""
    from .data import SingleImageDataset, load_pairs
    from .phantom import PhantomDataset

    if cfg.data == "phantom":
        offset = {"train": 0, "val": 10_000, "test": 20_000}[part]
        n = cfg.phantom_pairs if part == "train" else max(1, cfg.phantom_pairs // 3)
        paired = PhantomDataset(n=n, size=cfg.phantom_size, seed=cfg.seed + offset)
    else:
        fallback = "phantom" if cfg.data == "auto" else None
        paired = load_pairs(cfg.pairs, f"{cfg.split}/{part}", cfg.data_root, fallback=fallback)
    singles = SingleImageDataset(paired)
    imgs = [singles[i] for i in range(len(singles))]
    sizes = {tuple(x.shape) for x in imgs}
    if len(sizes) > 1:
        raise ValueError(f"training images differ in size {sorted(sizes)}: set a crop")
    return torch.stack(imgs), singles.source


def _random_views(x: torch.Tensor, crop: int | None, augment: bool, g: torch.Generator):
    """Per image: a random ``crop`` window, plus flips and a 90-degree turn when ``augment``."""
    from .data import augment_pair

    if augment:
        return torch.stack([augment_pair(img, img, g, crop=crop)[0] for img in x])
    if crop is None:
        return x
    h, w = x.shape[-2:]
    tops = torch.randint(0, h - crop + 1, (len(x),), generator=g).tolist()
    lefts = torch.randint(0, w - crop + 1, (len(x),), generator=g).tolist()
    return torch.stack([img[:, t : t + crop, s : s + crop] for img, t, s in zip(x, tops, lefts)])


def _centre(x: torch.Tensor, crop: int | None) -> torch.Tensor:
    if crop is None or crop >= min(x.shape[-2:]):
        return x
    h, w = x.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    return x[..., top : top + crop, left : left + crop]


def _perceptual_note(cfg: TrainConfig) -> str:
    if cfg.lambda2 == 0:
        return "off (lambda2 = 0): ImageNet VGG16 weights not used"
    src = cfg.vgg_weights or "torchvision ImageNet VGG16 (IMAGENET1K_V1)"
    return f"VGG16 {cfg.vgg_layer} from {src}, ImageNet-normalised, lambda2 = {cfg.lambda2}"


def _resume_config(cfg: TrainConfig | None, meta: dict, last: Path, change_lr: bool) -> TrainConfig:
    """The checkpoint's training config, or ``cfg`` when it differs only where a resumed run
    may differ; a conflict raises naming ``field: checkpoint value -> given value``."""
    raw = meta.get("train_config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"cannot resume {last}: it holds no training config")
    try:
        saved = TrainConfig.from_dict(raw)
    except UserError as err:
        raise CheckpointError(
            f"cannot resume {last}: its training config is invalid: {err}"
        ) from err
    if cfg is None:
        return saved
    free = set(RESUME_FREE) | ({"lr"} if change_lr else set())
    a, b = asdict(saved), asdict(cfg)
    a["model"], b["model"] = saved.model_config().to_dict(), cfg.model_config().to_dict()
    conflicts = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in free and a[k] != b[k]]
    if conflicts:
        raise CheckpointError(
            f"cannot resume {last} with another configuration ({'; '.join(conflicts)}); a "
            f"resumed run may change only {', '.join(sorted(free))}: start a new run in another "
            "folder (init= can start it from these weights)"
        )
    return cfg


def _check_out_dir(out: Path, resume: bool | str, overwrite: bool) -> bool:
    """Whether the run in ``out`` is resumed; refuses to write over a run (or into a file)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output folder {out} is a file: choose a folder for the checkpoints")
    last = out / "last.safetensors"
    if resume and last.is_file():
        return True
    if resume is True:
        raise CheckpointError(
            f"cannot resume: {last} not found; check the folder (--out), or start a new run "
            "without --resume"
        )
    found = [n for n in RUN_FILES if (out / n).is_file()]
    if found and not overwrite:
        raise UserError(
            f"{out} already holds a training run ({', '.join(found)}): continue it with --resume "
            "(resume=True), replace it with --overwrite (overwrite=True), or choose another --out"
        )
    return False


def _clean_stale_temps(out: Path) -> None:
    """Remove temporary files of this trainer left by a process killed while writing."""
    for name in RUN_FILES:
        for stale in out.glob(f".{name}{TMP_TAG}*.tmp"):
            stale.unlink(missing_ok=True)


def train(
    cfg: TrainConfig | None,
    out_dir: str | Path,
    resume: bool | str = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    max_epochs: int | None = None,
    time_budget_s: float | None = None,
    notes: str | None = None,
    change_lr: bool = False,
    init: str | Path | None = None,
    overwrite: bool = False,
) -> tuple[DILRAN, dict]:
    """Train an autoencoder as in Sec. 4.2; checkpoints go to ``out_dir`` (``last``, ``best``).

    ``out_dir`` must not hold a run already (``last``/``best`` checkpoints) unless ``resume``
    or ``overwrite`` (which replaces that run's files, and only those) is given.
    ``resume=True`` continues from ``out_dir/last.safetensors`` and raises when it is absent;
    ``resume="auto"`` continues when it is present and else starts a new run. On resume the
    configuration comes from the checkpoint: ``cfg`` may be None, or must match it except for
    ``epochs`` and ``data_root`` (so a finished run can be extended; with ``change_lr`` also
    ``lr``: the optimiser's state is kept and it continues at ``cfg.lr``, e.g. a second phase at
    a lower rate); a conflict is named as ``field: checkpoint value -> given value``. Every
    option is checked before any work (:class:`UserError`). The history records every epoch's
    learning rate (``lr``).
    ``init`` starts a new run from other weights (a checkpoint file or a shipped name): every
    parameter is copied by name and must match in shape, while the config may differ where no
    parameter depends on it (e.g. a reconstructor without activations); ignored on resume.
    ``max_epochs`` stops this call after that many epochs, ``time_budget_s`` after the epoch
    that passes that many seconds (the run can be resumed later). ``notes`` go into the metadata.
    Returns the model (with the last weights) and the metadata, whose ``history`` holds the
    train and validation loss of every epoch.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    if resume not in (True, False, "auto"):
        raise UserError(f"resume must be True, False or 'auto', got {resume!r}")
    if max_epochs is not None and not _is_int(max_epochs, 0):
        raise UserError(f"max_epochs must be None or an integer >= 0, got {max_epochs!r}")
    if time_budget_s is not None and not (
        isinstance(time_budget_s, (int, float)) and time_budget_s > 0
    ):
        raise UserError(f"time_budget_s must be None or a number > 0, got {time_budget_s!r}")
    dev = resolve_device(device)
    resuming = _check_out_dir(out, resume, overwrite)
    last = out / "last.safetensors"
    if resuming:
        cfg = _resume_config(cfg, read_metadata(last), last, change_lr)
    elif cfg is None:
        raise UserError("a training config is needed to start a new run (cfg=None)")
    cfg.validate()  # the config may have been changed in place since it was made
    seed_everything(cfg.seed)
    model = DILRAN(cfg.model_config()).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: dict[str, list] = {
        "train_loss": [],
        "val_loss": [],
        "epoch_time_s": [],
        "steps": [],
        "lr": [],
    }
    start = 0
    _clean_stale_temps(out)
    if resuming:
        model, meta = load_checkpoint(last, model, opt, map_location=dev)
        if not isinstance(meta.get("history"), dict) or not _is_int(meta.get("epoch"), 0):
            raise CheckpointError(f"cannot resume {last}: its header lacks history or epoch")
        history, start = meta["history"], meta["epoch"]
        # checkpoints written before the rate was recorded ran at their config's rate
        saved_lr = meta["train_config"].get("lr", cfg.lr)
        history.setdefault("lr", [saved_lr] * len(history["train_loss"]))
        for group in opt.param_groups:
            group["lr"] = cfg.lr
    elif init is not None:
        init_weights(model, init)
    use_amp = amp_dtype(dev) if cfg.amp else None  # bfloat16 where native, else float16
    scaler = torch.amp.GradScaler("cuda") if use_amp == torch.float16 else None  # loss scaling
    if cfg.channels_last and dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its kernels
    loss_fn = FusionLoss(
        cfg.lambda1, cfg.lambda2, cfg.gradient, vgg_weights=cfg.vgg_weights, vgg_layer=cfg.vgg_layer
    ).to(dev)
    train_x, source = _images(cfg, "train")
    val_x, _ = _images(cfg, "val")
    if cfg.crop is not None and cfg.crop > min(train_x.shape[-2:]):
        raise UserError(
            f"crop {cfg.crop} is larger than the training images {tuple(train_x.shape[-2:])}"
        )
    if overwrite and not resuming:  # the data are read: now replace the old run's files
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    val_x = _centre(val_x[: cfg.val_limit], cfg.val_crop)
    if cfg.crop is None and not cfg.augment:  # whole images, as the paper: keep them on the device
        train_x = train_x.to(dev)
    steps = cfg.steps_per_epoch or math.ceil(len(train_x) / cfg.batch_size)
    base_meta = {
        "train_config": asdict(cfg),
        "split": f"{cfg.split} (train: {len(train_x)} images, val: {len(val_x)})",
        "data": source,
        "perceptual": _perceptual_note(cfg),
        "package_version": __version__,
        "git_commit": git_commit(),
        "device": str(dev),
        "torch_version": torch.__version__,
        "notes": notes,
        "init": None if init is None else str(init),
    }
    t_start = time.perf_counter()
    end = cfg.epochs if max_epochs is None else min(cfg.epochs, start + max_epochs)
    best = min(history["val_loss"], default=math.inf)
    for epoch in range(start, end):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        # enough shuffled passes over the images for `steps` batches
        passes = math.ceil(steps * cfg.batch_size / len(train_x))
        order = torch.cat([torch.randperm(len(train_x), generator=g) for _ in range(passes)])
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress)
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x = _random_views(train_x[idx], cfg.crop, cfg.augment, g).to(dev)
            loss = train_step(model, opt, loss_fn, x, use_amp, scaler)
            total += loss.item() * len(x)
            seen += len(x)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        val = evaluate_loss(model, val_x, loss_fn, cfg.batch_size, dev, use_amp)
        history["train_loss"].append(total / seen)
        history["val_loss"].append(val)
        history["epoch_time_s"].append(time.perf_counter() - t0)
        history["steps"].append(steps)
        history["lr"].append(opt.param_groups[0]["lr"])
        meta = {**base_meta, "epoch": epoch + 1, "history": history}
        save_checkpoint(last, model, meta, optimizer=opt)
        if val < best:
            best = val
            save_checkpoint(out / "best.safetensors", model, {**meta, "best_val_loss": val})
        if progress:
            print(f"epoch {epoch + 1}: train {total / seen:.5f}  val {val:.5f}", flush=True)
        if time_budget_s is not None and time.perf_counter() - t_start > time_budget_s:
            end = epoch + 1
            break
    meta = {**base_meta, "epoch": max(end, start), "history": history}
    return model, meta


def init_weights(model: DILRAN, source: str | Path) -> DILRAN:
    """Copy every parameter of the weights ``source`` (a checkpoint file or a shipped name) into
    ``model`` by name; raises :class:`CheckpointError` naming what does not fit."""
    from .pretrained import available, load_weights

    if not Path(source).is_file() and str(source) not in available():
        raise CheckpointError(
            f"cannot start from {source!r}: no such checkpoint file or shipped weights "
            f"({', '.join(available())})"
        )
    src = load_weights(source).state_dict()
    own = model.state_dict()
    missing = sorted(set(own) - set(src))
    unexpected = sorted(set(src) - set(own))
    shapes = [k for k in set(own) & set(src) if own[k].shape != src[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"the weights {source!r} do not fit this model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, other shapes {sorted(shapes)[:5]}"
        )
    model.load_state_dict(src)
    return model


def train_step(
    model: DILRAN,
    opt: torch.optim.Optimizer,
    loss_fn,
    x: torch.Tensor,
    amp: bool | torch.dtype | None = False,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """One optimiser step of the autoencoder on the batch ``x`` (N, 1, H, W); returns the loss.

    ``amp`` runs the forward pass under autocast (``True``: :func:`dilran_lite.utils.amp_dtype`'s
    dtype, or a dtype); the loss is computed in float32. ``scaler`` scales the loss (float16).
    """
    with autocast(x.device, amp):
        y = model(x)
    loss = loss_fn(y.float(), x)
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return loss.detach()


@torch.no_grad()
def evaluate_loss(
    model: DILRAN,
    images: torch.Tensor,
    loss_fn: FusionLoss,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    amp: bool | torch.dtype | None = False,
) -> float:
    """Mean loss of the autoencoder over ``images`` (N, 1, H, W), in eval mode."""
    model.eval()
    dev = torch.device(device)
    total = 0.0
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(dev)
        with autocast(dev, amp):
            y = model(x)
        total += loss_fn(y.float(), x).item() * len(x)
    return total / len(images)

"""Small helpers shared by every module: quick mode, device choice, seeding, image checks."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .settings import quick_mode

__all__ = [
    "quick_mode",
    "display_path",
    "default_device",
    "amp_dtype",
    "autocast",
    "seed_everything",
    "as_image_batch",
    "DEVICE_TYPES",
    "resolve_device",
]


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def amp_dtype(device: str | torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for ``device``: ``bfloat16`` where the GPU computes it natively
    (compute capability 8 or more: A100, L4, H100...), ``float16`` on older GPUs (T4, V100: use it
    with a ``torch.amp.GradScaler`` for loss scaling), ``None`` on a CPU (no autocast)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    native = torch.cuda.get_device_capability(dev)[0] >= 8 and torch.cuda.is_bf16_supported()
    return torch.bfloat16 if native else torch.float16


def autocast(device: str | torch.device, amp: bool | torch.dtype | None = True) -> torch.autocast:
    """``torch.autocast`` on ``device``: ``amp=True`` uses :func:`amp_dtype`'s choice, a dtype
    that dtype, ``False`` or ``None`` no autocast (full float32)."""
    dev = torch.device(device)
    dtype = amp_dtype(dev) if amp is True else (amp or None)
    return torch.autocast(dev.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def as_image_batch(x: torch.Tensor, name: str = "input", channels: int | None = 1) -> torch.Tensor:
    """Check that ``x`` is an image batch (N, C, H, W) of floating dtype, and return it.

    A single image (C, H, W) or (H, W) is promoted to a batch. Raises ``TypeError`` for a
    non-tensor or a non-floating dtype and ``ValueError`` for a wrong shape, channel count,
    an empty tensor or non-finite values, each message naming ``name`` and what was found.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}; "
            "convert 8-bit images with x.float() / 255"
        )
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channel(s), got {x.shape[1]} (shape {tuple(x.shape)}); "
            "fuse colour images through dilran_lite.data.rgb_to_ycbcr and the Y channel"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def display_path(path: str | os.PathLike) -> str:
    """``path`` for a message: the user's home folder written as ``~``, so that pages and logs
    name no machine's home folder."""
    path = Path(path)
    try:
        return str(Path("~") / path.relative_to(Path.home()))
    except ValueError:
        return str(path)


#: device types a user may ask for; others (``xla``, ``meta``, ``tpu``...) are refused
DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a :class:`torch.device` (None: :func:`default_device`); a device that is
    not one of :data:`DEVICE_TYPES` or not available raises a ``UserError`` before any work."""
    if device is None or str(device) == "":
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UserError(f"unknown device {device!r}: use cpu, cuda, cuda:N or mps") from err
    if dev.type not in DEVICE_TYPES:
        raise UserError(f"device {device!r} is not supported here: use cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but no CUDA GPU is available: use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {device!r} requested but MPS is not available: use cpu")
    return dev

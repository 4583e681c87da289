"""Fusing images with a trained model: one pair, or a whole folder/split, grey or colour.

A colour (PET/SPECT) second image takes the YCbCr path of Sec. 5: the MRI is fused with its Y
channel, Cb and Cr are kept, and the result is converted back to RGB.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .color import fuse_colour
from .errors import UserError
from .model import DILRAN

__all__ = [
    "fuse_pair",
    "fuse_dataset",
    "fused_filename",
    "save_image",
    "image_format",
    "check_output_file",
    "check_output_folder",
]


def fuse_pair(
    model: DILRAN,
    a: torch.Tensor,
    b: torch.Tensor,
    strategy: str = "sfnn-max",
    weights=None,
    max_memory: float | None = None,
) -> torch.Tensor:
    """Fuse image ``a`` (1, H, W) with ``b`` (1, H, W) or colour (3, H, W), floats in [0, 1].

    Returns (1, H, W), or (3, H, W) for a colour ``b``; batches (N, C, H, W) work the same way.
    Runs :meth:`DILRAN.fuse` (tiled above 256 pixels a side); ``max_memory`` (bytes) refuses a
    fusion whose estimated peak is larger, before any work.
    """
    single = a.ndim == 3
    a4, b4 = (a[None], b[None]) if single else (a, b)
    if b4.shape[1] not in (1, 3):
        raise ValueError(f"second image must have 1 or 3 channels, got shape {tuple(b.shape)}")
    dev = next(model.parameters()).device

    def fuse_y(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = model.fuse(x.to(dev), y.to(dev), strategy, weights=weights, max_memory=max_memory)
        return out.cpu()

    with torch.inference_mode():
        out = fuse_colour(a4, b4, fuse_y) if b4.shape[1] == 3 else fuse_y(a4, b4)
    return out[0] if single else out


def image_format(path: str | os.PathLike) -> str:
    """PIL's format name for the extension of ``path``; a ``UserError`` if it has none."""
    ext = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(
            f"output {path} has no image extension PIL can write; end the name with .png"
        )
    return fmt


def _check_writable(folder: Path) -> None:
    """``folder`` exists and can be written, or can be created; else a ``UserError``."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{existing} is a file, so the folder {folder} cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into {existing} (permission denied); choose another folder")


def check_output_file(out: str | os.PathLike, inputs: list) -> Path:
    """Check, before any work, that the fused image can be written to ``out``: an image
    extension, not a folder, not one of ``inputs``, in a writable folder."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"output {out} is a folder; give a file name such as {out / 'fused.png'}")
    image_format(out)
    for p in inputs:
        if out.resolve() == Path(p).resolve():
            raise UserError(
                f"output {out} is also an input: it would be overwritten; choose another name"
            )
    _check_writable(out.parent)
    return out


def check_output_folder(out: str | os.PathLike, input_folder: str | os.PathLike) -> Path:
    """Check, before any work, that fused images can go into folder ``out``: not a file, not
    the input folder nor inside it (the fused files take the inputs' names), writable."""
    out, src = Path(out), Path(input_folder).resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file; with --data give a folder")
    r = out.resolve()
    if r == src or src in r.parents:
        raise UserError(
            f"output folder {out} is inside the input folder {input_folder}: the fused images "
            "would replace the inputs; choose a folder outside it"
        )
    _check_writable(out)
    return out


def save_image(x: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write a (1, H, W) or (3, H, W) image in [0, 1] as an 8-bit image (rounded), atomically:
    to a temporary file in the same folder, then renamed over ``path``."""
    arr = (x.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    path = Path(path)
    fmt = image_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(arr).save(fh, format=fmt)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def fused_filename(name: str) -> str:
    """The file a fused pair ``name`` is written to by :func:`fuse_dataset` (``fuse --data``)."""
    return name if str(name).endswith(".png") else f"{name}.png"


def fuse_dataset(
    model: DILRAN,
    dataset,
    out_dir: str | os.PathLike,
    strategy: str = "sfnn-max",
    progress: bool = True,
    max_memory: float | None = None,
) -> list[Path]:
    """Fuse every ``(a, b, name)`` of ``dataset`` and write ``out_dir/<name>`` (PNG)."""
    from tqdm.auto import tqdm

    written = []
    for a, b, name in tqdm(dataset, desc="fusing", disable=not progress):
        fname = fused_filename(name)
        fused = fuse_pair(model, a, b, strategy, max_memory=max_memory)
        written.append(save_image(fused, Path(out_dir) / fname))
    return written

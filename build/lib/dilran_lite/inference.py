"""Fusing images with a trained model: one pair, or a whole folder/split, grey or colour.

A colour (PET/SPECT) second image takes the YCbCr path of Sec. 5: the MRI is fused with its Y
channel, Cb and Cr are kept, and the result is converted back to RGB.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .color import fuse_colour
from .model import DILRAN

__all__ = ["fuse_pair", "fuse_dataset", "save_image"]


def fuse_pair(
    model: DILRAN,
    a: torch.Tensor,
    b: torch.Tensor,
    strategy: str = "sfnn-max",
    weights=None,
) -> torch.Tensor:
    """Fuse image ``a`` (1, H, W) with ``b`` (1, H, W) or colour (3, H, W), floats in [0, 1].

    Returns (1, H, W), or (3, H, W) for a colour ``b``; batches (N, C, H, W) work the same way.
    """
    single = a.ndim == 3
    a4, b4 = (a[None], b[None]) if single else (a, b)
    if b4.shape[1] not in (1, 3):
        raise ValueError(f"second image must have 1 or 3 channels, got shape {tuple(b.shape)}")
    dev = next(model.parameters()).device

    def fuse_y(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return model.fuse(x.to(dev), y.to(dev), strategy, weights=weights).cpu()

    with torch.inference_mode():
        out = fuse_colour(a4, b4, fuse_y) if b4.shape[1] == 3 else fuse_y(a4, b4)
    return out[0] if single else out


def save_image(x: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write a (1, H, W) or (3, H, W) image in [0, 1] as an 8-bit PNG (rounded)."""
    arr = (x.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def fuse_dataset(
    model: DILRAN,
    dataset,
    out_dir: str | os.PathLike,
    strategy: str = "sfnn-max",
    progress: bool = True,
) -> list[Path]:
    """Fuse every ``(a, b, name)`` of ``dataset`` and write ``out_dir/<name>`` (PNG)."""
    from tqdm.auto import tqdm

    written = []
    for a, b, name in tqdm(dataset, desc="fusing", disable=not progress):
        fname = name if str(name).endswith(".png") else f"{name}.png"
        written.append(save_image(fuse_pair(model, a, b, strategy), Path(out_dir) / fname))
    return written

"""Tiles and memory for fusing large images: how a network runs tile by tile, and how much
memory a fusion needs (to refuse, before any work, one that would not fit).

Used by :func:`dilran_lite.inference.fuse_images`; the network itself (:mod:`dilran_lite.model`)
knows nothing of tiles.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .errors import UserError
from .model import ModelConfig

__all__ = [
    "HALO",
    "TILE",
    "default_tile",
    "fusion_memory",
    "check_memory",
    "check_limit",
    "tiled_map",
]

#: overlap of neighbouring tiles, pixels on each side: more than the receptive-field radius of
#: the encoder plus the decoder (about 25 pixels for the default dilations 1, 3, 5) and even, so
#: that the soft masks' 2x2 pooling grid of a tile lines up with the whole image's
HALO = 32

#: interior tile side for a 64-channel model (the encoder needs ~3.5 kB a pixel at 64 channels)
TILE = 256

#: bytes of the process before a fusion (PyTorch, the model), as measured on a CPU
_BASE_BYTES = 600 * 2**20

#: encoder working memory per pixel and channel (float32), measured on a CPU (paper preset)
_ENCODER_BYTES_PER_PIXEL_CHANNEL = 56


def default_tile(cfg: ModelConfig) -> int:
    """Interior tile side: :data:`TILE` for 64 channels, larger for narrower models (even)."""
    side = int(TILE * (64 / max(cfg.width, 1)) ** 0.5)
    return max(2 * HALO, side - side % 2)


def fusion_memory(cfg: ModelConfig, n: int, h: int, w: int, tile: int | None) -> int:
    """Estimated peak bytes of fusing N pairs of H x W on a CPU (``tile=None``: untiled).

    Stored features ``2 N C H W`` float32 (plus the fused features untiled), the encoder's
    working memory (the whole batch untiled, one tile tiled), the nuclear-norm tasks (two
    workers of at most 32 MiB of float64 maps, the Gram matrix and LAPACK's work space), and the
    process itself. Linear in the pixels.
    """
    c, px = cfg.width, h * w
    feats = 2 * n * c * px * 4
    if tile is None:
        work = 2 * n * px * c * _ENCODER_BYTES_PER_PIXEL_CHANNEL + feats // 2
    else:
        t = min(tile + 2 * HALO, h) * min(tile + 2 * HALO, w)
        work = n * t * c * _ENCODER_BYTES_PER_PIXEL_CHANNEL
    side = min(h, w)
    norms = 2 * (min(32 * 2**20, c * px * 8) + 4 * side * side * 8)
    return int(_BASE_BYTES + feats + work + norms)


def check_limit(max_memory: float | None) -> float | None:
    """``max_memory`` (bytes) if it is a usable limit: None (no limit) or a finite positive
    number; NaN, infinite, zero or negative is a ``UserError`` (it would switch the check off)."""
    if max_memory is None:
        return None
    value = float(max_memory)
    if not math.isfinite(value) or value <= 0:
        raise UserError(
            f"memory limit {max_memory!r} is not a finite positive number of bytes; "
            "give one such as --max-memory 4 (GB)"
        )
    return value


def check_memory(
    cfg: ModelConfig, n: int, h: int, w: int, tile: int | None, max_memory: float | None
) -> int:
    """The estimate of :func:`fusion_memory`; a ``UserError`` if it exceeds ``max_memory``."""
    limit = check_limit(max_memory)
    need = fusion_memory(cfg, n, h, w, tile)
    if limit is not None and need > limit:
        raise UserError(
            f"fusing {n} pair(s) of {h}x{w} pixels needs about {need / 2**30:.2f} GB, over the "
            f"limit of {limit / 2**30:.2f} GB; give a smaller image or raise the limit "
            "(--max-memory)"
        )
    return need


def _spans(size: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(start, stop) of each tile's interior and of the tile with its halo, along one axis."""
    out = []
    for lo in range(0, size, tile):
        hi = min(lo + tile, size)
        out.append((lo, hi, max(0, lo - HALO), min(size, hi + HALO)))
    return out


def tiled_map(
    fn: Callable,
    x: torch.Tensor | None,
    channels: int,
    tile: int,
    like: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply a local network ``fn`` to ``x`` (N, C, H, W) tile by tile with :data:`HALO`
    pixels of overlap: (N, C, H, W) -> (N, ``channels``, H, W) float32, assembled from the tiles'
    interiors. With ``x=None``, ``fn(None, box)`` gets the index box of the tile with its halo
    (and ``like`` gives N, H, W and the device)."""
    ref = x if x is not None else like
    n, _, h, w = ref.shape
    out = torch.empty((n, channels, h, w), dtype=torch.float32, device=ref.device)
    for r0, r1, rh0, rh1 in _spans(h, tile):
        for c0, c1, ch0, ch1 in _spans(w, tile):
            box = (slice(None), slice(None), slice(rh0, rh1), slice(ch0, ch1))
            y = fn(x[box]) if x is not None else fn(box)
            out[:, :, r0:r1, c0:c1] = y[:, :, r0 - rh0 : r1 - rh0, c0 - ch0 : c1 - ch0]
    return out

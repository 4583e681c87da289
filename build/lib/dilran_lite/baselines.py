"""Fusion baselines with no network: pixel average, pixel maximum and a Laplacian pyramid.

Every baseline is a function ``(a, b) -> fused`` on float tensors of shape (1, H, W) (or (H, W),
or a batch (N, 1, H, W)) with values in [0, 1], returning a tensor of the same shape, clamped to
[0, 1]. They are the rows that any learned fusion method has to beat (the authors' released DILRAN
weights beat the pixel average by a small margin only; see the book's chapter 9).

The Laplacian pyramid (Burt & Adelson 1983) splits an image into band-pass detail levels
``L_k = G_k - up(G_{k+1})`` and a low-pass base ``G_K``, where ``G_{k+1} = down(blur(G_k))`` with
the 5-tap binomial kernel [1, 4, 6, 4, 1] / 16. Reconstruction adds the levels back from the
coarsest one, ``G_k = L_k + up(G_{k+1})``, and is exact whatever ``up`` is, because the same
``up`` is used both ways. Fusion keeps, at every pixel of every detail level, the coefficient of
larger magnitude (max-absolute selection: the stronger edge wins) and averages the two bases.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "average",
    "maximum",
    "laplacian_pyramid",
    "pyramid_decompose",
    "pyramid_reconstruct",
    "max_levels",
    "BASELINES",
]

Baseline = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_KERNEL_1D = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
MIN_LEVEL_SIZE = 4
"""The coarsest level of a pyramid is at least this many pixels on its shorter side."""


def _as_batch(x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Size]:
    """(H, W), (1, H, W) or (N, 1, H, W) float in [0, 1] -> (N, 1, H, W) and the input shape."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}")
    shape = x.shape
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must be (H, W), (1, H, W) or (N, 1, H, W), got {tuple(shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(shape)}")
    return x, shape


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape != b.shape:
        raise ValueError(f"the two images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    xa, shape = _as_batch(a, "a")
    xb, _ = _as_batch(b, "b")
    return xa, xb, shape


def average(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pixel average ``(a + b) / 2``."""
    xa, xb, shape = _check_pair(a, b)
    return (0.5 * (xa + xb)).clamp(0, 1).reshape(shape)


def maximum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pixel maximum ``max(a, b)``."""
    xa, xb, shape = _check_pair(a, b)
    return torch.maximum(xa, xb).clamp(0, 1).reshape(shape)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable 5x5 binomial blur of (N, 1, H, W) with reflected borders (replicate if tiny)."""
    k = _KERNEL_1D.to(dtype=x.dtype, device=x.device)
    mode = "reflect" if min(x.shape[-2:]) > 2 else "replicate"
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode=mode), k.view(1, 1, 1, 5))
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode=mode), k.view(1, 1, 5, 1))


def _down(x: torch.Tensor) -> torch.Tensor:
    """Blur, then keep every other row and column: (H, W) -> (ceil(H/2), ceil(W/2))."""
    return _blur(x)[..., ::2, ::2]


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Insert zeros to ``size`` (odd sizes included), then blur with 4 x the kernel."""
    out = x.new_zeros(*x.shape[:-2], *size)
    out[..., ::2, ::2] = x[..., : (size[0] + 1) // 2, : (size[1] + 1) // 2]
    return 4.0 * _blur(out)


def max_levels(height: int, width: int) -> int:
    """How many detail levels fit before the shorter side drops below :data:`MIN_LEVEL_SIZE`."""
    n, side = 0, min(height, width)
    while (side + 1) // 2 >= MIN_LEVEL_SIZE:
        side = (side + 1) // 2
        n += 1
    return n


def pyramid_decompose(x: torch.Tensor, levels: int = 4) -> list[torch.Tensor]:
    """Laplacian pyramid of an image (N, 1, H, W): ``levels`` detail levels, then the base.

    Returns ``[L_0, ..., L_{levels-1}, G_levels]``, finest first; ``L_0`` has the input's size.
    ``levels`` is reduced to :func:`max_levels` for small images (0 gives ``[x]``).
    """
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    levels = min(levels, max_levels(*x.shape[-2:]))
    pyr: list[torch.Tensor] = []
    g = x
    for _ in range(levels):
        nxt = _down(g)
        pyr.append(g - _up(nxt, tuple(g.shape[-2:])))
        g = nxt
    pyr.append(g)
    return pyr


def pyramid_reconstruct(pyr: list[torch.Tensor]) -> torch.Tensor:
    """Invert :func:`pyramid_decompose`: ``G_k = L_k + up(G_{k+1})`` from the base upwards."""
    if not pyr:
        raise ValueError("empty pyramid")
    g = pyr[-1]
    for lap in reversed(pyr[:-1]):
        g = lap + _up(g, tuple(lap.shape[-2:]))
    return g


def laplacian_pyramid(a: torch.Tensor, b: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Laplacian pyramid fusion (Burt & Adelson 1983): max-absolute details, averaged base.

    At each of the ``levels`` detail levels the coefficient of larger absolute value is kept
    (ties go to ``a``); the two low-pass bases are averaged; the fused pyramid is reconstructed
    and clamped to [0, 1]. Identical inputs give the input back.
    """
    xa, xb, shape = _check_pair(a, b)
    pa = pyramid_decompose(xa, levels)
    pb = pyramid_decompose(xb, levels)
    fused = [torch.where(la.abs() >= lb.abs(), la, lb) for la, lb in zip(pa[:-1], pb[:-1])]
    fused.append(0.5 * (pa[-1] + pb[-1]))
    return pyramid_reconstruct(fused).clamp(0, 1).reshape(shape)


BASELINES: dict[str, Baseline] = {
    "average": average,
    "max": maximum,
    "laplacian": laplacian_pyramid,
}
"""The baselines by short name; each is ``(a, b) -> fused``."""

"""Fusion baselines with no network: pixel average, pixel maximum, a Laplacian pyramid and
guided-filter fusion (GFF).

Every baseline is a function ``(a, b) -> fused`` on float tensors of shape (1, H, W) (or (H, W),
or a batch (N, 1, H, W)) with values in [0, 1], returning a tensor of the same shape, clamped to
[0, 1]. They are the rows that any learned fusion method has to beat (the authors' released DILRAN
weights beat the pixel average by a small margin only; see the book's chapter 9).

The Laplacian pyramid (Burt & Adelson 1983) splits an image into band-pass detail levels
``L_k = G_k - up(G_{k+1})`` and a low-pass base ``G_K``, where ``G_{k+1} = down(blur(G_k))`` with
the 5-tap binomial kernel [1, 4, 6, 4, 1] / 16. Reconstruction adds the levels back from the
coarsest one, ``G_k = L_k + up(G_{k+1})``, and is exact whatever ``up`` is, because the same
``up`` is used both ways. Fusion keeps, at every pixel of every detail level, the coefficient of
larger magnitude (max-absolute selection: the stronger edge wins) and averages the two bases;
:func:`laplacian_pyramid_salience` uses Burt & Kolczynski's local-energy (salience) and match rule
instead.

Guided-filter fusion (Li, Kang & Hu 2013) is the classical reference that medical fusion papers
compare against: a two-scale (base/detail) decomposition whose per-pixel weights come from a
saliency comparison refined by a guided filter (He, Sun & Tang 2013), so that the weights follow
the sources' edges: see :func:`guided_filter_fusion`.
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
    "guided_filter",
    "guided_filter_fusion",
    "laplacian_pyramid_salience",
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


def salience_match_select(la: torch.Tensor, lb: torch.Tensor, alpha: float) -> torch.Tensor:
    """Burt & Kolczynski's rule on one detail level (N, 1, h, w): 3x3 local energy and match."""
    sa = _box_mean(la * la, 1)
    sb = _box_mean(lb * lb, 1)
    total = sa + sb
    match = torch.where(
        total > 0, 2.0 * _box_mean(la * lb, 1) / torch.where(total > 0, total, 1.0), 1.0
    )
    a_wins = sa >= sb
    w_min = (0.5 - 0.5 * (1.0 - match) / (1.0 - alpha)).clamp(min=0.0)
    w_min = torch.where(match > alpha, w_min, torch.zeros_like(w_min))
    w_a = torch.where(a_wins, 1.0 - w_min, w_min)
    return w_a * la + (1.0 - w_a) * lb


def laplacian_pyramid_salience(
    a: torch.Tensor, b: torch.Tensor, levels: int = 4, alpha: float = 0.85
) -> torch.Tensor:
    """Laplacian pyramid fusion with Burt & Kolczynski's (1993) salience-and-match rule.

    At each detail level, the salience of a source is its local energy ``S = mean_3x3(L^2)`` and
    the match of the two sources ``M = 2 mean_3x3(L_A L_B) / (S_A + S_B)`` (in [-1, 1]). Where the
    sources differ (``M <= alpha``) the more salient coefficient is kept; where they are alike
    they are averaged with ``w_min = 1/2 - 1/2 (1 - M) / (1 - alpha)`` on the less salient one and
    ``1 - w_min`` on the more salient one. The bases are averaged; the result is clamped to
    [0, 1]. Identical inputs give the input back (M = 1: equal weights on equal coefficients).
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    xa, xb, shape = _check_pair(a, b)
    pa = pyramid_decompose(xa, levels)
    pb = pyramid_decompose(xb, levels)
    fused = [salience_match_select(la, lb, alpha) for la, lb in zip(pa[:-1], pb[:-1])]
    fused.append(0.5 * (pa[-1] + pb[-1]))
    return pyramid_reconstruct(fused).clamp(0, 1).reshape(shape)


# --------------------------------------------------------------------------------------------
# Guided-filter fusion (Li, Kang & Hu 2013)
# --------------------------------------------------------------------------------------------
_LAPLACIAN_3X3 = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _replicate_filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate (N, 1, H, W) with a small odd 2-D kernel, replicated borders (``'same'``)."""
    kh, kw = kernel.shape
    xp = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="replicate")
    return F.conv2d(xp, kernel.to(x)[None, None])


def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    """1-D factor of MATLAB ``fspecial('gaussian', size, sigma)`` (the 2-D kernel, summing to 1,
    is its outer product with itself)."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(t**2) / (2.0 * sigma**2))
    return g / g.sum()


def _box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean of (N, 1, H, W) over the (2r+1)^2 window around each pixel, clipped to the image
    (each mean over the pixels inside only, as He et al.'s ``boxfilter(I, r) / boxfilter(1, r)``).
    """
    for dim in (-2, -1):
        n = x.shape[dim]
        c = F.pad(torch.cumsum(x, dim=dim), (1, 0) if dim == -1 else (0, 0, 1, 0))
        idx = torch.arange(n, device=x.device)
        hi = (idx + r + 1).clamp(max=n)
        lo = (idx - r).clamp(min=0)
        count = (hi - lo).to(x.dtype)
        if dim == -2:
            x = (c[..., hi, :] - c[..., lo, :]) / count[:, None]
        else:
            x = (c[..., hi] - c[..., lo]) / count
    return x


def guided_filter(p: torch.Tensor, guide: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    """He, Sun & Tang's guided filter of ``p`` with grey guidance ``guide``, (N, 1, H, W).

    In each (2r+1)^2 window the output is the linear model ``a I + b`` with ``a = cov(I, p) /
    (var(I) + eps)`` and ``b = mean(p) - a mean(I)``; ``a`` and ``b`` are averaged over the
    windows covering each pixel: ``q = mean(a) I + mean(b)``. ``eps`` is on the scale of
    ``guide`` (here intensities in [0, 1]). A constant ``p`` is returned unchanged.
    """
    mean_i = _box_mean(guide, r)
    mean_p = _box_mean(p, r)
    cov_ip = _box_mean(guide * p, r) - mean_i * mean_p
    var_i = _box_mean(guide * guide, r) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return _box_mean(a, r) * guide + _box_mean(b, r)


def guided_filter_fusion(
    a: torch.Tensor,
    b: torch.Tensor,
    r1: int = 45,
    eps1: float = 0.3,
    r2: int = 7,
    eps2: float = 1e-6,
) -> torch.Tensor:
    """Guided-filter fusion GFF (Li, Kang & Hu, IEEE TIP 22(7), 2013), two grey sources.

    1. Two-scale decomposition: base ``B_n = I_n * Z`` (31 x 31 mean filter), detail
       ``D_n = I_n - B_n``.
    2. Saliency ``S_n = |I_n * L| * g`` (3x3 Laplacian ``L``, then an 11 x 11 Gaussian with
       sigma 5; replicated borders), and binary maps ``P_n = 1`` where ``S_n`` is the larger
       (ties to ``a``).
    3. Weights refined by guided filtering with the source as guide: ``W_n^B = G_{r1,eps1}(P_n,
       I_n)`` for the bases, ``W_n^D = G_{r2,eps2}(P_n, I_n)`` for the details, each pair
       normalised to sum 1 at every pixel.
    4. ``F = sum_n W_n^B B_n + sum_n W_n^D D_n``, clamped to [0, 1].

    Defaults are the paper's (r1 = 45, eps1 = 0.3, r2 = 7, eps2 = 1e-6 on [0, 1] images).
    Fusing an image with itself returns it.
    """
    xa, xb, shape = _check_pair(a, b)
    dtype = xa.dtype
    imgs = torch.stack([xa, xb]).to(torch.float64)  # (2, N, 1, H, W)
    flat = imgs.flatten(0, 1)
    base = _box_mean_replicate(flat, 15)
    detail = flat - base
    lap = _replicate_filter(flat, _LAPLACIAN_3X3.to(torch.float64)).abs()
    g = _gaussian_1d(11, 5.0)
    sal = _replicate_filter(_replicate_filter(lap, g[None, :]), g[:, None]).unflatten(0, (2, -1))
    pick_a = (sal[0] >= sal[1]).to(torch.float64)
    masks = torch.stack([pick_a, 1.0 - pick_a]).flatten(0, 1)
    w_base = _normalise_pair(guided_filter(masks, flat, r1, eps1).unflatten(0, (2, -1)))
    w_detail = _normalise_pair(guided_filter(masks, flat, r2, eps2).unflatten(0, (2, -1)))
    fused = (w_base * base.unflatten(0, (2, -1))).sum(0)
    fused = fused + (w_detail * detail.unflatten(0, (2, -1))).sum(0)
    return fused.clamp(0, 1).to(dtype).reshape(shape)


def _box_mean_replicate(x: torch.Tensor, r: int) -> torch.Tensor:
    """(2r+1)^2 mean filter with replicated borders (MATLAB ``imfilter(.., 'replicate')``)."""
    xp = F.pad(x, (r, r, r, r), mode="replicate")
    return _box_mean(xp, r)[..., r:-r, r:-r] if r > 0 else x


def _normalise_pair(w: torch.Tensor) -> torch.Tensor:
    """Weights (2, ...) divided by their sum at each pixel (equal weights where it is ~0)."""
    total = w.sum(0, keepdim=True)
    ok = total.abs() > 1e-12
    return torch.where(ok, w / torch.where(ok, total, torch.ones_like(total)), 0.5)


BASELINES: dict[str, Baseline] = {
    "average": average,
    "max": maximum,
    "laplacian": laplacian_pyramid,
    "laplacian-salience": laplacian_pyramid_salience,
    "gff": guided_filter_fusion,
}
"""The baselines by short name; each is ``(a, b) -> fused``."""

"""Differentiable stand-ins for the fusion metrics, to train the learned fusion layer with.

The scores of :mod:`dilran_lite.metrics` are computed on 8-bit images with hard histograms and
cannot be back-propagated. Here each one is rewritten in torch on float images in [0, 1]
(N, 1, H, W), one value per image, higher is better:

- :func:`soft_sd`, :func:`soft_sf`, :func:`soft_scd`: the same formulas (SD and SF on the
  0..255 scale);
- :func:`soft_qabf`: Q^{AB/F} with the reference code's Sobel convolution (a.e. differentiable);
- :func:`soft_vif`: the pixel-domain multi-scale VIF of :func:`dilran_lite.metrics.vif_single`
  with its hard cases (``g < 0``, empty windows) replaced by clamps;
- :func:`soft_entropy`, :func:`soft_mi`: Parzen (Gaussian kernel) histograms of ``bins`` bins
  instead of 256 hard bins, in bits;
- SSIM: :func:`ssim_map` (Gaussian 11x11, as the metric).

:class:`MetricObjective` minimises minus a weighted sum of them; which weights a shipped layer
was trained with is in its checkpoint (``train_config.metric_weights``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import baselines

__all__ = [
    "SURROGATES",
    "ssim_map",
    "MetricObjective",
    "parse_weights",
    "soft_entropy",
    "soft_mi",
    "soft_scd",
    "soft_sd",
    "soft_sf",
    "soft_vif",
]


def _gaussian(window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Differentiable SSIM (Wang et al. 2004, Gaussian 11x11, sigma 1.5, data range 1) of
    (N, 1, H, W) images, per pixel (N, 1, H-10, W-10): a training objective's term, not a
    metric (:func:`dilran_lite.metrics.ssim` scores 8-bit images)."""
    g = _gaussian(window).to(x)
    k = (g[:, None] * g[None, :])[None, None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, k)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def soft_sd(f: torch.Tensor) -> torch.Tensor:
    """Standard deviation of each image on the 0..255 scale: (N,)."""
    return 255 * f.flatten(1).std(dim=1, correction=0)


def soft_sf(f: torch.Tensor) -> torch.Tensor:
    """Spatial frequency ``sqrt(RF^2 + CF^2)`` of each image on the 0..255 scale: (N,)."""
    rf = (f[..., :, 1:] - f[..., :, :-1]).pow(2).flatten(1).mean(1)
    cf = (f[..., 1:, :] - f[..., :-1, :]).pow(2).flatten(1).mean(1)
    return 255 * (rf + cf + 1e-12).sqrt()


def correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1) - x.flatten(1).mean(1, keepdim=True)
    y = y.flatten(1) - y.flatten(1).mean(1, keepdim=True)
    return (x * y).sum(1) / ((x * x).sum(1) * (y * y).sum(1) + 1e-12).sqrt()


def soft_scd(f: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sum of the correlations of differences ``r(F - B, A) + r(F - A, B)``: (N,)."""
    return correlation(f - b, a) + correlation(f - a, b)


def _window(n: int, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(n, dtype=like.dtype, device=like.device) - (n - 1) / 2
    w = torch.exp(-(x**2) / (2 * (n / 5) ** 2))
    return w / w.sum()


def _valid(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.conv2d(x, w.view(1, 1, 1, -1)), w.view(1, 1, -1, 1))


def soft_vif(x: torch.Tensor, f: torch.Tensor, sigma_nsq: float = 2.0) -> torch.Tensor:
    """VIF(X, F) per image (N,), images of at least 41x41: the 4-scale pixel-domain form on
    0..255 grey levels, with the gain clamped at 0 and the distortion variance at 1e-10."""
    if min(x.shape[-2:]) < 41:
        raise ValueError(f"VIF needs images of at least 41x41 pixels, got {tuple(x.shape[-2:])}")
    x, f = 255 * x, 255 * f
    num = den = x.new_zeros(x.shape[0])
    for scale in range(1, 5):
        w = _window(2 ** (5 - scale) + 1, x)
        if scale > 1:
            x, f = _valid(x, w)[..., ::2, ::2], _valid(f, w)[..., ::2, ::2]
        mx, mf = _valid(x, w), _valid(f, w)
        s1 = (_valid(x * x, w) - mx * mx).clamp_min(0)
        s2 = (_valid(f * f, w) - mf * mf).clamp_min(0)
        s12 = _valid(x * f, w) - mx * mf
        g = (s12 / (s1 + 1e-10)).clamp_min(0)
        sv = (s2 - g * s12).clamp_min(1e-10)
        num = num + torch.log10(1 + g * g * s1 / (sv + sigma_nsq)).flatten(1).sum(1)
        den = den + torch.log10(1 + s1 / sigma_nsq).flatten(1).sum(1)
    return num / den.clamp_min(1e-10)


def _edges(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel strength and orientation as :func:`dilran_lite.metrics.qabf` computes them
    (convolution, zero padding, 0..255 scale)."""
    h3 = x.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    h1 = x.new_tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
    # convolution = correlation with the kernel turned by 180 degrees
    sx = F.conv2d(255 * x, h3.flip(0, 1)[None, None], padding=1)
    sy = F.conv2d(255 * x, h1.flip(0, 1)[None, None], padding=1)
    g = (sx * sx + sy * sy + 1e-8).sqrt()
    small = sx.abs() < 1e-6
    ratio = sy / sx.where(~small, torch.ones_like(sx))
    alpha = torch.where(small, torch.full_like(sx, math.pi / 2), torch.atan(ratio))
    return g, alpha


def soft_qabf(f: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Q^{AB/F} per image (N,), the formula of :func:`dilran_lite.metrics.qabf` (where the
    strengths are equal the ratio is taken as 1)."""
    gf, af = _edges(f)
    num = den = f.new_zeros(f.shape[0])
    for x in (a, b):
        gx, ax = _edges(x)
        rel_g = torch.minimum(gx, gf) / torch.maximum(gx, gf)
        rel_a = 1 - (ax - af).abs() / (math.pi / 2)
        q_g = 0.9994 / (1 + torch.exp(-15 * (rel_g - 0.5)))
        q = q_g * 0.9879 / (1 + torch.exp(-22 * (rel_a - 0.8)))
        num = num + (q * gx).flatten(1).sum(1)
        den = den + gx.flatten(1).sum(1)
    return num / den.clamp_min(1e-8)


def _parzen(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Soft bin memberships (N, pixels, bins) of values in [0, 1], Gaussian of one bin width."""
    centres = (torch.arange(bins, dtype=x.dtype, device=x.device) + 0.5) / bins
    d = (x.flatten(1)[..., None] - centres) * bins
    k = torch.exp(-0.5 * d * d)
    return k / k.sum(-1, keepdim=True)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log2(p.clamp_min(1e-12))).flatten(1).sum(1)


def soft_entropy(f: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Entropy (bits) of each image's soft histogram of ``bins`` bins: (N,)."""
    return _entropy(_parzen(f, bins).mean(1))


def soft_mi(f: torch.Tensor, x: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Mutual information (bits) of F and X from a soft joint histogram: (N,)."""
    pf, px = _parzen(f, bins), _parzen(x, bins)
    joint = torch.einsum("npi,npj->nij", pf, px) / pf.shape[1]
    return _entropy(joint.sum(2)) + _entropy(joint.sum(1)) - _entropy(joint)


def _ssim(f: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:

    return (ssim_map(f, a).flatten(1).mean(1) + ssim_map(f, b).flatten(1).mean(1)) / 2


SURROGATES = {
    "EN": lambda f, a, b: soft_entropy(f),
    "SD": lambda f, a, b: soft_sd(f) / 100,
    "SF": lambda f, a, b: soft_sf(f) / 30,
    "MI": lambda f, a, b: soft_mi(f, a) + soft_mi(f, b),
    "SCD": soft_scd,
    "VIF": lambda f, a, b: soft_vif(a, f) + soft_vif(b, f),
    "Qabf": soft_qabf,
    "SSIM": _ssim,
}
"""Name -> differentiable score ``(f, a, b) -> (N,)``; SD and SF divided by 100 and 30 (their
typical values on the atlas) so that every score is of order 1."""


def _references() -> dict:

    return {
        "max": baselines.maximum,
        "laplacian": baselines.laplacian_pyramid,
        "gff": baselines.guided_filter_fusion,
    }


REFERENCES = ("max", "laplacian", "gff")
"""Rules a capped term is measured against, on the same crop (:mod:`dilran_lite.baselines`)."""


def parse_weights(spec: str) -> dict[str, tuple[float, str | None]]:
    """``"VIF=1,SCD=0.5@max"`` -> ``{"VIF": (1.0, None), "SCD": (0.5, "max")}``: a weight per
    metric and, after ``@``, the reference rule that caps it. Unknown names are an error."""
    out: dict[str, tuple[float, str | None]] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, rest = item.partition("=")
        value, _, ref = rest.partition("@")
        if name not in SURROGATES:
            raise ValueError(f"unknown metric {name!r} in {spec!r}; known: {sorted(SURROGATES)}")
        if ref and ref not in REFERENCES:
            raise ValueError(f"unknown reference {ref!r} in {spec!r}; known: {REFERENCES}")
        out[name] = (float(value), ref or None)
    if not out:
        raise ValueError("metric weights are empty: give e.g. 'VIF=1,SCD=1@max'")
    return out


class MetricObjective(nn.Module):
    """Loss ``-sum_k w_k * r_k`` over the terms of a spec (:func:`parse_weights`), for fused
    ``f`` and sources ``a``, ``b`` (N, 1, H, W) in [0, 1] (``f`` clamped to [0, 1] first, as
    the metrics see it). A plain term's ``r_k`` is the batch mean of its score
    (:data:`SURROGATES`); a capped term (``@rule``) is the batch mean of
    ``min(score(f) / score(rule(a, b)), cap)``: credit up to ``cap`` (1.05) times what the rule
    reaches on the same crop and none beyond, so that no single score can run away (SF, for one,
    grows without bound with added noise)."""

    def __init__(self, weights: dict | str, cap: float = 1.05) -> None:
        super().__init__()
        self.weights = parse_weights(weights) if isinstance(weights, str) else dict(weights)
        self.cap = cap

    def terms(self, f: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        f = f.clamp(0, 1)
        rules = _references()
        refs = {r: rules[r](a, b).clamp(0, 1) for _, r in self.weights.values() if r}
        out = {}
        for k, (_, r) in self.weights.items():
            score = SURROGATES[k](f, a, b)
            if r:
                with torch.no_grad():
                    base = SURROGATES[k](refs[r], a, b).abs().clamp_min(1e-6)
                score = (score / base).clamp(max=self.cap)
            out[k] = score.mean()
        return out

    def forward(self, f: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        t = self.terms(f, a, b)
        return -sum(w * t[k] for k, (w, _) in self.weights.items())

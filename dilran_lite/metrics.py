"""Image-fusion quality metrics, computed the way the fusion field defines them.

Every metric takes the two source images ``a`` and ``b`` and the fused image ``f`` (or only
``f`` for the no-reference statistics EN, SD, SF, AG) as NumPy arrays or torch tensors of
shape (H, W) or (1, H, W), either ``uint8`` (0..255) or floating point in [0, 1].

Conventions (the same for every metric, so that the numbers in one table are comparable):

* Every image is first quantised to 8 bits by :func:`to_uint8` (``round(x * 255)``), exactly as
  it would be saved to a PNG. Histogram metrics use 256 bins, one per grey level.
* Information is in bits (logarithms base 2): the entropy of an 8-bit image is at most 8 bits.
* Grey-level statistics (SD, SF, AG) are in grey levels of the 0..255 scale.
* PSNR and SSIM use ``data_range = 1.0`` on the 8-bit image divided by 255 (the same as
  ``data_range = 255`` on the 8-bit values).
* The pair value of a full-reference score is stated in each docstring: an *average* of the two
  source scores (PSNR, SSIM, FSIM, FMI) or a *sum* (MI, VIF, SCD), following the literature.

The DILRAN paper (Zhou, Xu, Zhang, arXiv 2212.04661, Sec. 4.3) reports PSNR, SSIM, MI, FMI-pixel,
FSIM and EN; its published numbers come from code that deviates from these definitions (see the
book). ``entropy(f, paper_compat=True)`` reproduces the paper's EN (Shannon entropy over distinct
float values) only to explain those numbers; it is never the default.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import lru_cache
from typing import Callable, Union

import numpy as np
import torch
from scipy import ndimage
from skimage.measure import shannon_entropy
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = [
    "to_uint8",
    "uint8_triple",
    "correlation",
    "validate_image",
    "psnr",
    "ssim",
    "mi",
    "mutual_information",
    "MI_UNITS",
    "fmi",
    "fsim",
    "phase_congruency",
    "entropy",
    "sd",
    "sf",
    "ag",
    "AG_DEFINITIONS",
    "scd",
    "vif",
    "vif_single",
    "qabf",
    "METRICS",
    "PAPER_METRICS",
    "FIELD_METRICS",
    "compute_metrics",
]

ImageLike = Union[np.ndarray, torch.Tensor]


# --------------------------------------------------------------------------------------------
# Input checks and the single 8-bit conversion
# --------------------------------------------------------------------------------------------
def validate_image(x: ImageLike, name: str = "image") -> np.ndarray:
    """Check one image and return it as a 2-D NumPy array (dtype kept: uint8, integer or float).

    Accepted: a NumPy array or torch tensor of shape (H, W) or (1, H, W), non-empty, either an
    integer dtype with values in 0..255 (8-bit grey levels) or a floating dtype with finite values
    in [0, 1]. Raises ``TypeError`` for other types, ``bool``/complex/object dtypes, and
    ``ValueError`` for a wrong shape, an empty image, NaN/inf, or values out of range; each message
    names ``name``.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        x = x.numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if x.dtype == np.bool_ or x.dtype.kind in "cOSUV":
        raise TypeError(f"{name} has dtype {x.dtype}; expected uint8 (0..255) or float in [0, 1]")
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (H, W) or (1, H, W), got {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty: shape {x.shape}")
    if x.dtype.kind in "iu":
        if x.dtype != np.uint8 and (x.min() < 0 or x.max() > 255):
            raise ValueError(
                f"{name} has integer dtype {x.dtype} with values in [{x.min()}, {x.max()}]; "
                "integer images must be 8-bit grey levels in 0..255"
            )
        return x
    if x.dtype.kind != "f":
        raise TypeError(f"{name} has unsupported dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{name} is floating point with values in [{lo:.4g}, {hi:.4g}]; expected [0, 1] "
            "(clamp the fused image, or pass 8-bit images as uint8)"
        )
    return x


def to_uint8(x: ImageLike, name: str = "image") -> np.ndarray:
    """Validate ``x`` and return it as a 2-D ``uint8`` array: float [0, 1] -> ``round(x * 255)``.

    This is the one conversion every metric uses, so all of them see the same 8-bit image
    (the image as it would be saved to PNG). Integer input in 0..255 is only cast.
    """
    x = validate_image(x, name)
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind in "iu":
        return x.astype(np.uint8)
    return np.rint(x.astype(np.float64) * 255.0).astype(np.uint8)


def uint8_triple(a: ImageLike, b: ImageLike, f: ImageLike) -> tuple[np.ndarray, ...]:
    """8-bit versions of the sources and the fused image, checked to have one shape."""
    a8, b8, f8 = to_uint8(a, "a"), to_uint8(b, "b"), to_uint8(f, "f")
    if not (a8.shape == b8.shape == f8.shape):
        raise ValueError(
            f"a, b and f must have the same shape, got {a8.shape}, {b8.shape}, {f8.shape}"
        )
    return a8, b8, f8


def _pair(x: ImageLike, y: ImageLike) -> tuple[np.ndarray, np.ndarray]:
    x8, y8 = to_uint8(x, "x"), to_uint8(y, "y")
    if x8.shape != y8.shape:
        raise ValueError(f"x and y must have the same shape, got {x8.shape} and {y8.shape}")
    return x8, y8


def _require_min_size(img: np.ndarray, size: int, metric: str) -> None:
    if min(img.shape) < size:
        raise ValueError(f"{metric} needs images of at least {size}x{size}, got {img.shape}")


# --------------------------------------------------------------------------------------------
# PSNR and SSIM (scikit-image)
# --------------------------------------------------------------------------------------------
def _psnr_one(x8: np.ndarray, f8: np.ndarray) -> float:
    if np.array_equal(x8, f8):
        return math.inf
    return float(peak_signal_noise_ratio(x8 / 255.0, f8 / 255.0, data_range=1.0))


psnr_single = _psnr_one  # PSNR(X, F) in dB of two 8-bit images (inf when equal)


def psnr(a: ImageLike, b: ImageLike, f: ImageLike) -> float:
    """Peak signal-to-noise ratio of the fused image, in dB: mean of PSNR(A, F) and PSNR(B, F).

    ``PSNR(X, F) = 10 log10(R^2 / MSE(X, F))`` with ``R = 1`` on images scaled to [0, 1]
    (``data_range=1.0``; identical to ``R = 255`` on 8-bit grey levels), computed by
    ``skimage.metrics.peak_signal_noise_ratio`` on the 8-bit images. Identical images give
    ``inf`` (no warning). Pair value: the average of the two source PSNRs (the DILRAN paper's
    convention, Sec. 4.3). Source: standard definition, e.g. Huynh-Thu & Ghanbari, Electron.
    Lett. 44(13), 2008.
    """
    a8, b8, f8 = uint8_triple(a, b, f)
    return 0.5 * (_psnr_one(a8, f8) + _psnr_one(b8, f8))


def _ssim_one(x8: np.ndarray, f8: np.ndarray) -> float:
    _require_min_size(x8, 11, "SSIM")
    return float(
        structural_similarity(
            x8 / 255.0,
            f8 / 255.0,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def ssim(a: ImageLike, b: ImageLike, f: ImageLike) -> float:
    """Structural similarity of the fused image (dimensionless, <= 1): mean of SSIM(A,F), SSIM(B,F).

    ``SSIM(x, y) = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 +
    sigma_y^2 + C2))`` averaged over local windows, with C1 = (0.01 L)^2, C2 = (0.03 L)^2 and
    ``L = data_range = 1.0`` on the 8-bit image divided by 255. Windows: 11x11 Gaussian,
    sigma 1.5, population covariance (``gaussian_weights=True, use_sample_covariance=False``),
    the setting of Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 13(4), 2004, computed by
    ``skimage.metrics.structural_similarity``. Pair value: the average of the two.
    """
    a8, b8, f8 = uint8_triple(a, b, f)
    return 0.5 * (_ssim_one(a8, f8) + _ssim_one(b8, f8))


# --------------------------------------------------------------------------------------------
# Entropy and mutual information (256 bins, bits)
# --------------------------------------------------------------------------------------------
def _entropy_counts(counts: np.ndarray) -> float:
    p = counts[counts > 0].astype(np.float64)
    p /= p.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def entropy(f: ImageLike, paper_compat: bool = False) -> float:
    """Shannon entropy EN of the fused image, in bits (0 <= EN <= 8 for an 8-bit image).

    ``EN = -sum_{l=0}^{255} p_l log2 p_l`` where ``p_l`` is the fraction of pixels with grey
    level ``l`` in the 8-bit image (256 bins). Source: Roberts, van Aardt & Ahmed, J. Appl.
    Remote Sens. 2(1), 2008. No source images are involved.

    ``paper_compat=True`` reproduces how the DILRAN paper's published code computed EN:
    ``skimage.measure.shannon_entropy`` on the *float* image, i.e. the entropy of the distinct
    float values, which is not bounded by 8 bits (the paper reports 9.8). Use it only to explain
    the published numbers; a float image is used as given, a uint8 image is divided by 255.
    """
    if paper_compat:
        x = validate_image(f, "f")
        if x.dtype.kind in "iu":
            x = x.astype(np.float64) / 255.0
        return float(shannon_entropy(x, base=2))
    f8 = to_uint8(f, "f")
    return _entropy_counts(np.bincount(f8.ravel(), minlength=256))


def _mi_u8(x8: np.ndarray, y8: np.ndarray) -> float:
    joint = np.bincount(x8.ravel().astype(np.intp) * 256 + y8.ravel(), minlength=65536).reshape(
        256, 256
    )
    hx = _entropy_counts(joint.sum(axis=1))
    hy = _entropy_counts(joint.sum(axis=0))
    hxy = _entropy_counts(joint.ravel())
    return max(hx + hy - hxy, 0.0)


def mi(x: ImageLike, y: ImageLike) -> float:
    """Mutual information of two images, in bits: ``MI(X, Y) = H(X) + H(Y) - H(X, Y)``.

    Entropies from the 256-bin marginal and 256x256-bin joint histograms of the 8-bit images,
    logs base 2. ``MI(X, X) = EN(X)``; symmetric in X and Y. Source: Qu, Zhang & Yan, "Information
    measure for performance of image fusion", Electron. Lett. 38(7), 2002. (Tiny negative values
    from rounding are clipped to 0.)
    """
    x8, y8 = _pair(x, y)
    return _mi_u8(x8, y8)


MI_UNITS = {"bits": 1.0, "nats": math.log(2.0)}
"""Units of :func:`mutual_information`: the factor from bits (log2) to each unit."""


def mutual_information(a: ImageLike, b: ImageLike, f: ImageLike, unit: str = "bits") -> float:
    """Fusion mutual information in bits: ``MI = MI(F, A) + MI(F, B)`` (a sum, Qu et al. 2002).

    Each term as in :func:`mi` (8-bit images, 256 bins, log2). This is the field's definition;
    the DILRAN paper's published code averaged the two terms with natural logs (the book's
    appendix, "The released DILRAN code, measured"). ``unit="nats"`` gives the same sum with
    natural logs (bits x ln 2), as CDDFuse's and VIFB's evaluators report it.
    """
    if unit not in MI_UNITS:
        raise ValueError(f"unit must be one of {list(MI_UNITS)}, got {unit!r}")
    a8, b8, f8 = uint8_triple(a, b, f)
    return (_mi_u8(f8, a8) + _mi_u8(f8, b8)) * MI_UNITS[unit]


# --------------------------------------------------------------------------------------------
# No-reference statistics of the fused image
# --------------------------------------------------------------------------------------------
def sd(f: ImageLike) -> float:
    """Standard deviation of the fused image, in grey levels (0..255 scale).

    ``SD = sqrt( 1/(MN) sum_{i,j} (F(i,j) - mu)^2 )`` (population form) on the 8-bit image.
    Source: e.g. Ma, Ma & Li, "Infrared and visible image fusion methods and applications: a
    survey", Inf. Fusion 45, 2019. No source images are involved.
    """
    return float(to_uint8(f, "f").astype(np.float64).std())


def sf(f: ImageLike, divisor: str = "differences") -> float:
    """Spatial frequency of the fused image, in grey levels: ``SF = sqrt(RF^2 + CF^2)``.

    ``RF^2 = mean_{i,j} (F(i,j) - F(i,j-1))^2`` (horizontal neighbours) and
    ``CF^2 = mean_{i,j} (F(i,j) - F(i-1,j))^2`` (vertical neighbours), each the mean over the
    available differences (M(N-1) and (M-1)N), on the 8-bit image. Source: Eskicioglu & Fisher,
    IEEE Trans. Commun. 43(12), 1995. A constant image has SF 0. ``divisor="MN"`` divides both
    sums of squares by M*N instead (the VIFB toolbox's ``metricsSpatial_frequency.m``).
    """
    if divisor not in ("differences", "MN"):
        raise ValueError(f"divisor must be 'differences' or 'MN', got {divisor!r}")
    x = to_uint8(f, "f").astype(np.float64)
    _require_min_size(x, 2, "SF")
    if divisor == "MN":
        rf2 = np.sum(np.diff(x, axis=1) ** 2) / x.size
        cf2 = np.sum(np.diff(x, axis=0) ** 2) / x.size
    else:
        rf2 = np.mean(np.diff(x, axis=1) ** 2)
        cf2 = np.mean(np.diff(x, axis=0) ** 2)
    return float(np.sqrt(rf2 + cf2))


AG_DEFINITIONS = ("central", "forward")
"""The two average-gradient definitions :func:`ag` offers; the tables use ``"central"``."""


def ag(f: ImageLike, definition: str = "central", divisor: str = "(M-1)(N-1)") -> float:
    """Average gradient of the fused image, in grey levels per pixel (8-bit image).

    Both definitions average ``sqrt((dx^2 + dy^2) / 2)``; they differ in the differences and
    the pixels they average over:

    * ``"central"`` (default, used by the tables): ``dx, dy`` from ``numpy.gradient`` (central
      differences inside, one-sided differences on the border, as MATLAB's ``gradient``), summed
      over all M x N pixels and divided by ``divisor``: ``"(M-1)(N-1)"`` (default), as the VIFB
      benchmark's MATLAB code (``metricsAvg_gradient.m``) computes it, or ``"MN"`` (the plain
      mean), as CDDFuse's ``Evaluator.AG`` does: that is smaller by (M-1)(N-1)/(MN), a factor
      0.99220 at 256x256.
    * ``"forward"``: forward differences ``dx = F(i, j+1) - F(i, j)``,
      ``dy = F(i+1, j) - F(i, j)`` at the (M-1)(N-1) pixels that have both, averaged: the
      formula as printed in Cui, Feng, Xu, Li & Chen, Opt. Commun. 341, 2015 (``divisor`` is
      not used).

    A constant image has AG 0 under both.
    """
    if definition not in AG_DEFINITIONS:
        raise ValueError(f"definition must be one of {AG_DEFINITIONS}, got {definition!r}")
    if divisor not in ("(M-1)(N-1)", "MN"):
        raise ValueError(f"divisor must be '(M-1)(N-1)' or 'MN', got {divisor!r}")
    x = to_uint8(f, "f").astype(np.float64)
    _require_min_size(x, 2, "AG")
    if definition == "central":
        dy, dx = np.gradient(x)
        s = np.sqrt((dx**2 + dy**2) / 2.0)
        count = x.size if divisor == "MN" else (x.shape[0] - 1) * (x.shape[1] - 1)
        return float(s.sum() / count)
    dx = x[:-1, 1:] - x[:-1, :-1]
    dy = x[1:, :-1] - x[:-1, :-1]
    return float(np.mean(np.sqrt((dx**2 + dy**2) / 2.0)))


# --------------------------------------------------------------------------------------------
# SCD (Aslantas & Bendes 2015)
# --------------------------------------------------------------------------------------------
def correlation(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if den == 0.0:
        return math.nan
    return float((x * y).sum()) / den


def scd(a: ImageLike, b: ImageLike, f: ImageLike) -> float:
    """Sum of the correlations of differences (dimensionless, in [-2, 2]).

    ``SCD = r(F - B, A) + r(F - A, B)`` with ``r`` the Pearson correlation over all pixels of
    the 8-bit images: ``F - B`` estimates what F took from A, and vice versa. Source: Aslantas &
    Bendes, "A new image quality metric for image fusion: the sum of the correlations of
    differences", AEU Int. J. Electron. Commun. 69(12), 2015. Pair value: a sum by definition.
    Returns NaN when a correlation is undefined (a constant image or difference).
    """
    a8, b8, f8 = (x.astype(np.float64) for x in uint8_triple(a, b, f))
    return correlation(f8 - b8, a8) + correlation(f8 - a8, b8)


# --------------------------------------------------------------------------------------------
# Qabf (Xydeas & Petrovic 2000)
# --------------------------------------------------------------------------------------------
_SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_Y = _SOBEL_X.T.copy()
# The reference Qabf code's kernels, applied by convolution (MATLAB ``conv2(x, h, 'same')``):
# h3 for the x response, h1 for the y response.
_QABF_H3 = _SOBEL_X
_QABF_H1 = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
_Q_G = (0.9994, -15.0, 0.5)  # Gamma_g, kappa_g, sigma_g
_Q_A = (0.9879, -22.0, 0.8)  # Gamma_a, kappa_a, sigma_a


def _edge_strength_orientation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel strength and orientation as the reference code computes them: convolution (the
    kernel flipped, so ``s_x`` is minus the correlation) with zero padding, ``conv2(.., 'same')``.
    """
    sx = ndimage.convolve(x, _QABF_H3, mode="constant", cval=0.0)
    sy = ndimage.convolve(x, _QABF_H1, mode="constant", cval=0.0)
    g = np.sqrt(sx**2 + sy**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(sx == 0.0, np.pi / 2.0, np.arctan(sy / np.where(sx == 0.0, 1.0, sx)))
    return g, alpha


def _edge_preservation(
    g_x: np.ndarray, a_x: np.ndarray, g_f: np.ndarray, a_f: np.ndarray
) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_g = np.where(
            g_x > g_f, g_f / g_x, np.where(g_x == g_f, g_f, g_x / np.where(g_f > 0, g_f, 1.0))
        )
    rel_a = 1.0 - np.abs(a_x - a_f) / (np.pi / 2.0)
    gam_g, k_g, s_g = _Q_G
    gam_a, k_a, s_a = _Q_A
    q_g = gam_g / (1.0 + np.exp(k_g * (rel_g - s_g)))
    q_a = gam_a / (1.0 + np.exp(k_a * (rel_a - s_a)))
    return q_g * q_a


def qabf(a: ImageLike, b: ImageLike, f: ImageLike) -> float:
    """Gradient-based fusion performance Q^{AB/F} (dimensionless, 0 <= Qabf < 0.9753).

    Sobel responses by *convolution* with zero padding, as the reference MATLAB code
    (``conv2(x, h, 'same')``): ``s_x = h3 * x`` with ``h3 = [-1 0 1; -2 0 2; -1 0 1]`` and
    ``s_y = h1 * x`` with ``h1 = [1 2 1; 0 0 0; -1 -2 -1]`` (convolution flips the kernels, so
    ``s_x`` is minus the correlation with the Sobel x-kernel and ``s_y`` the correlation with
    the Sobel y-kernel), on 8-bit grey levels 0..255. Edge strength ``g = sqrt(s_x^2 + s_y^2)``,
    orientation ``alpha = arctan(s_y / s_x)`` (pi/2 where ``s_x = 0``): the sign convention
    matters where one image's ``s_x`` is 0 and the other's is not. For a source X: relative
    strength ``G = min(g_X, g_F) / max(g_X, g_F)``, except where ``g_X = g_F``, where the
    reference code takes ``G = g_F`` (0 where both are 0; at least 1 elsewhere on 8-bit images,
    where the sigmoid below is then within 0.06 % of its value at 1); relative orientation
    ``A = 1 - |alpha_X - alpha_F| / (pi/2)``, and edge preservation ``Q_XF =
    Gamma_g/(1+e^{kappa_g (G-sigma_g)}) * Gamma_a/(1+e^{kappa_a (A-sigma_a)})`` with
    Gamma_g=0.9994, kappa_g=-15, sigma_g=0.5, Gamma_a=0.9879, kappa_a=-22, sigma_a=0.8. Pair
    value: ``Qabf = sum(Q_AF w_A + Q_BF w_B) / sum(w_A + w_B)`` with weights ``w_X = g_X^L``,
    L = 1. Source: Xydeas & Petrovic, "Objective image fusion performance measure", Electron.
    Lett. 36(4), 2000; conventions of the reference code (``Qabf.m``/``analysis_Qabf.m``, as
    used by the VIFB benchmark). Returns NaN when both sources have no edges (constant images).
    """
    a8, b8, f8 = (x.astype(np.float64) for x in uint8_triple(a, b, f))
    g_a, al_a = _edge_strength_orientation(a8)
    g_b, al_b = _edge_strength_orientation(b8)
    g_f, al_f = _edge_strength_orientation(f8)
    q_af = _edge_preservation(g_a, al_a, g_f, al_f)
    q_bf = _edge_preservation(g_b, al_b, g_f, al_f)
    den = float((g_a + g_b).sum())
    if den == 0.0:
        return math.nan
    return float((q_af * g_a + q_bf * g_b).sum()) / den


# --------------------------------------------------------------------------------------------
# VIF (Sheikh & Bovik 2006, pixel domain, multi-scale), summed over the two sources
# --------------------------------------------------------------------------------------------
def _gaussian_window(n: int) -> np.ndarray:
    """1-D factor of MATLAB's ``fspecial('gaussian', n, n/5)`` (the 2-D window is its outer
    product, normalised to sum 1)."""
    x = np.arange(n) - (n - 1) / 2.0
    w = np.exp(-(x**2) / (2.0 * (n / 5.0) ** 2))
    return w / w.sum()


def _filter_valid(x: np.ndarray, win: np.ndarray) -> np.ndarray:
    """'valid' filtering with the separable Gaussian window (1-D factor ``win``)."""
    r = win.shape[0] // 2
    out = ndimage.correlate1d(x, win, axis=0, mode="constant")
    out = ndimage.correlate1d(out, win, axis=1, mode="constant")
    return out[r : x.shape[0] - r, r : x.shape[1] - r]


def _vif_u8(ref: np.ndarray, dist: np.ndarray, sigma_nsq: float = 2.0) -> float:
    ref = ref.astype(np.float64)
    dist = dist.astype(np.float64)
    num = 0.0
    den = 0.0
    eps = 1e-10
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = _gaussian_window(n)
        if scale > 1:
            ref = _filter_valid(ref, win)[::2, ::2]
            dist = _filter_valid(dist, win)[::2, ::2]
        mu1 = _filter_valid(ref, win)
        mu2 = _filter_valid(dist, win)
        s1 = _filter_valid(ref * ref, win) - mu1 * mu1
        s2 = _filter_valid(dist * dist, win) - mu2 * mu2
        s12 = _filter_valid(ref * dist, win) - mu1 * mu2
        s1 = np.maximum(s1, 0.0)
        s2 = np.maximum(s2, 0.0)
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        low1 = s1 < eps
        g[low1] = 0.0
        sv[low1] = s2[low1]
        s1[low1] = 0.0
        low2 = s2 < eps
        g[low2] = 0.0
        sv[low2] = 0.0
        neg = g < 0
        sv[neg] = s2[neg]
        g[neg] = 0.0
        sv = np.maximum(sv, eps)
        num += float(np.log10(1.0 + g * g * s1 / (sv + sigma_nsq)).sum())
        den += float(np.log10(1.0 + s1 / sigma_nsq).sum())
    if den == 0.0:
        return math.nan
    return num / den


def vif_single(x: ImageLike, f: ImageLike) -> float:
    """Visual information fidelity VIF(X, F) of one reference X (dimensionless, 1 for F = X).

    Pixel-domain multi-scale VIF (Sheikh & Bovik, "Image information and visual quality", IEEE
    TIP 15(2), 2006; the ``vifp_mscale`` form): at 4 scales, Gaussian windows of size
    ``2^(5-s)+1`` (sigma = size/5, 'valid' filtering, dyadic downsampling between scales) give
    local variances ``s1, s2`` and covariance ``s12``; the gain ``g = s12/s1`` and distortion
    variance ``sv = s2 - g s12``; with HVS noise ``sigma_n^2 = 2`` (on 0..255 grey levels),
    ``VIF = sum log10(1 + g^2 s1/(sv + sigma_n^2)) / sum log10(1 + s1/sigma_n^2)``.
    Needs images of at least 41x41. Returns NaN for a constant reference.
    """
    x8, f8 = _pair(x, f)
    _require_min_size(x8, 41, "VIF")
    return _vif_u8(x8, f8)


def vif(a: ImageLike, b: ImageLike, f: ImageLike) -> float:
    """Fusion VIF: ``VIF(A, F) + VIF(B, F)`` (a sum), each as in :func:`vif_single`.

    This is the form most fusion papers report (Sheikh & Bovik pixel-domain multi-scale VIF of
    each source against the fused image, summed); it is *not* Han et al.'s VIFF (Inf. Fusion
    14(2), 2013), which pools the two sources inside one fusion-specific model.
    ``vif(A, B, A) = 1 + VIF(B, A)``.
    """
    a8, b8, f8 = uint8_triple(a, b, f)
    _require_min_size(a8, 41, "VIF")
    return _vif_u8(a8, f8) + _vif_u8(b8, f8)


# --------------------------------------------------------------------------------------------
# FMI (Haghighat, Aghagolzadeh & Seyedarabi 2011; fast windowed form, Haghighat & Razian 2014)
# --------------------------------------------------------------------------------------------
def _fmi_feature(x8: np.ndarray, feature: str) -> np.ndarray:
    x = x8.astype(np.float64)
    if feature == "pixel":
        return x
    if feature == "gradient":
        # MATLAB's one-output ``gradient(x)``: the x-derivative only (along rows), central
        # differences inside and one-sided ones on the first and last columns
        return np.gradient(x, axis=1)
    if feature == "edge":
        sx = ndimage.correlate(x, _SOBEL_X / 8.0, mode="nearest")
        sy = ndimage.correlate(x, _SOBEL_Y / 8.0, mode="nearest")
        mag2 = sx**2 + sy**2
        return (mag2 > 4.0 * mag2.mean()).astype(np.float64)
    raise ValueError(f"feature must be 'pixel', 'gradient' or 'edge', got {feature!r}")


def _windows(x: np.ndarray, w: int) -> np.ndarray:
    """(number of windows, w*w): every w x w window ('valid'), pixels in column-major order."""
    win = np.lib.stride_tricks.sliding_window_view(x, (w, w))
    return np.swapaxes(win, -1, -2).reshape(-1, w * w)


def _minmax_windows(win: np.ndarray) -> np.ndarray:
    """Windows (N, n) min-max normalised to [0, 1] each (a flat window: all ones)."""
    lo = win.min(axis=1, keepdims=True)
    rng = win.max(axis=1, keepdims=True) - lo
    return np.where(rng > 0, (win - lo) / np.where(rng > 0, rng, 1.0), 1.0)


def _window_pdfs(win: np.ndarray) -> np.ndarray:
    """Windows (N, n) -> pdfs over the n positions: min-max normalised (flat: ones), sum 1."""
    norm = _minmax_windows(win)
    return norm / norm.sum(axis=1, keepdims=True)


def _pdf_correlation(px: np.ndarray, pf: np.ndarray, sequential: bool) -> np.ndarray:
    """Pearson correlation of each pair of pdf vectors (N, n) -> (N,), 0 where undefined.

    ``sequential=True`` sums left to right as fmi.m's MATLAB/Octave ``sum`` and ``mean`` do, so
    that its round-off is reproduced: for two uniform pdfs (two flat windows) of 9 positions,
    ``mean(p) - p`` is 2.8e-17 rather than 0 and the correlation comes out as exactly 1."""
    if not sequential:
        dx = px - px.mean(axis=1, keepdims=True)
        df = pf - pf.mean(axis=1, keepdims=True)
        sxy = (dx * df).sum(axis=1)
        sxx_syy = (dx * dx).sum(axis=1) * (df * df).sum(axis=1)
        return np.where(sxx_syy > 0, sxy / np.sqrt(np.where(sxx_syy > 0, sxx_syy, 1.0)), 0.0)
    n = px.shape[1]
    dx = px - (np.cumsum(px, axis=1)[:, -1:] / n)
    df = pf - (np.cumsum(pf, axis=1)[:, -1:] / n)
    sxy = np.cumsum(dx * df, axis=1)[:, -1]
    sxx_syy = np.cumsum(dx * dx, axis=1)[:, -1] * np.cumsum(df * df, axis=1)[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sxy != 0, sxy / np.sqrt(sxx_syy), 0.0)


def _plogp_abs(p: np.ndarray, axis) -> np.ndarray:
    """sum of -p log2|p| (0 log 0 = 0)."""
    ap = np.abs(p)
    safe = np.where(ap > 0, ap, 1.0)
    return -(p * np.log2(safe)).sum(axis=axis)


def _fmi_windows(px: np.ndarray, pf: np.ndarray, sequential: bool = False) -> np.ndarray:
    """Normalised feature MI ``2 I(X;F) / (H(X) + H(F))`` of each window pair (N, n) -> (N,);
    ``sequential``: the pdf correlation summed as fmi.m sums (:func:`_pdf_correlation`)."""
    n = px.shape[1]
    cx = np.cumsum(px, axis=1)
    cf = np.cumsum(pf, axis=1)
    c = _pdf_correlation(px, pf, sequential)
    pos = np.arange(1, n + 1, dtype=np.float64)
    std_x = np.sqrt(np.abs(px @ pos**2 - (px @ pos) ** 2))
    std_f = np.sqrt(np.abs(pf @ pos**2 - (pf @ pos) ** 2))
    hx = _plogp_abs(px, axis=1)
    hf = _plogp_abs(pf, axis=1)
    fi = cf[:, :, None]
    xj = cx[:, None, :]
    indep = fi * xj
    upper = np.minimum(fi, xj)  # Frechet-Hoeffding upper bound M(u, v)
    lower = np.maximum(fi + xj - 1.0, 0.0)  # lower bound W(u, v)
    bound = np.where((c >= 0)[:, None, None], upper, lower)
    cov_bound = (bound - indep).sum(axis=(1, 2))
    num = c * std_x * std_f
    ok = (num != 0) & (cov_bound != 0)
    theta = np.where(ok, num / np.where(cov_bound != 0, cov_bound, 1.0), 0.0)[:, None, None]
    joint_cdf = theta * bound + (1.0 - theta) * indep
    padded = np.zeros((joint_cdf.shape[0], n + 1, n + 1))
    padded[:, 1:, 1:] = joint_cdf
    joint_pdf = padded[:, 1:, 1:] - padded[:, :-1, 1:] - padded[:, 1:, :-1] + padded[:, :-1, :-1]
    hxf = _plogp_abs(joint_pdf, axis=(1, 2))
    total = hx + hf
    mi = total - hxf
    # the reference returns 0 where the mutual information is 0, e.g. two equal one-hot pdfs
    # (entropies 0) or two flat patches of different values (independent uniform pdfs)
    ok = (total > 0) & (mi != 0)
    return np.where(ok, 2.0 * mi / np.where(ok, total, 1.0), 0.0)


def fmi(
    a: ImageLike,
    b: ImageLike,
    f: ImageLike,
    feature: str = "pixel",
    window: int = 3,
    fmi_m: bool = False,
) -> float:
    """Feature mutual information FMI (dimensionless, 1 for F = A = B), windowed ("fast") form.

    Follows the reference MATLAB code ``fmi.m`` (Haghighat). Features: ``"pixel"`` the 8-bit
    grey levels (the reference's ``'none'``), ``"gradient"`` MATLAB's one-output
    ``gradient(x)``, i.e. the signed horizontal derivative ``dF/dx`` (central differences
    inside, one-sided on the first and last columns; not the gradient magnitude), ``"edge"`` a
    binary Sobel edge map (squared Sobel magnitude, replicated border, above 4x its image mean:
    MATLAB ``edge``'s default threshold, without its thinning). In every ``window x window``
    window (default 3, 'valid' positions only, pixels in column-major order): if the X and F
    windows are equal, ``FMI_XF = 1``. Otherwise each patch is min-max normalised (a flat patch
    becomes all ones) and divided by its sum, giving a pdf ``p`` over the window positions
    1..n. The joint pdf of (X, F) is built from the marginal cdfs with Nelsen's method:
    ``H = theta M + (1 - theta) F_X F_F`` with M the upper Frechet bound ``min(u, v)`` if the
    correlation ``c`` of the two pdf vectors is >= 0, else the lower bound ``max(u + v - 1, 0)``,
    and ``theta = c sd_X sd_F / sum_{i,j} (M - F_X F_F)`` (Hoeffding); joint entropy
    ``-sum h log2|h|`` over the differenced joint pdf. Per window ``FMI_XF = 2 I(X;F) / (H(X) +
    H(F))``, and 0 where ``I(X;F) = 0``: two different windows whose pdfs are the same one-hot
    vector (one non-zero pixel at the same place, e.g. in the background) have both entropies 0
    and score 0, and so do two flat windows of different values.
    Pair value: ``FMI = mean over windows of (FMI_AF + FMI_BF) / 2`` (an average).
    Sources: Haghighat, Aghagolzadeh & Seyedarabi, Comput. Electr. Eng. 37(5), 2011;
    Haghighat & Razian, "Fast-FMI", IEEE AICT 2014.

    ``fmi_m=True`` reproduces ``fmi.m`` with its two quirks (the convention ``fmi-m`` of
    :mod:`dilran_lite.conventions`): (1) two flat windows of different values score 1, not 0
    (its left-to-right sums leave a round-off of 2.8e-17 in ``pdf - mean(pdf)`` that makes the
    correlation of two uniform pdfs exactly 1); (2) it normalises the fused window in place on
    the first source's side, so the second source's "equal windows" test compares B's raw window
    with F's *normalised* one: where F copies a window of B but not of A, FMI_BF is computed
    rather than 1 (0 for a lone non-zero pixel, whose pdf is one-hot). The order of ``a`` and
    ``b`` then matters (fmi.m's ``ima``, ``imb``).
    """
    if not isinstance(window, (int, np.integer)) or window < 2:
        raise ValueError(f"window must be an integer >= 2, got {window!r}")
    if feature not in ("pixel", "gradient", "edge"):
        raise ValueError(f"feature must be 'pixel', 'gradient' or 'edge', got {feature!r}")
    a8, b8, f8 = uint8_triple(a, b, f)
    _require_min_size(a8, max(window, 3), "FMI")
    wa = _windows(_fmi_feature(a8, feature), window)
    wb = _windows(_fmi_feature(b8, feature), window)
    wf = _windows(_fmi_feature(f8, feature), window)
    wf_b = wf
    if fmi_m:  # fmi.m's F window after the A side: normalised unless A's window equalled it
        wf_b = np.where(np.all(wa == wf, axis=1)[:, None], wf, _minmax_windows(wf))
    total_a = _fmi_sum(wa, wf, sequential=fmi_m)
    return 0.5 * (total_a + _fmi_sum(wb, wf_b, sequential=fmi_m)) / wf.shape[0]


def _fmi_sum(wx: np.ndarray, wf: np.ndarray, chunk: int = 1024, sequential: bool = False) -> float:
    """Sum over windows of FMI_XF from the raw feature windows (N, n): windows equal in X and F
    score 1 (the reference's ``if aSub == fSub``), the others are computed in small chunks (the
    (chunk, n, n) temporaries then stay in the CPU cache)."""
    same = np.all(wx == wf, axis=1)
    px, pf = _window_pdfs(wx[~same]), _window_pdfs(wf[~same])
    total = float(same.sum())
    for s in range(0, px.shape[0], chunk):
        part = _fmi_windows(px[s : s + chunk], pf[s : s + chunk], sequential)
        total += float(part.sum())
    return total


# --------------------------------------------------------------------------------------------
# FSIM (Zhang, Zhang, Mou & Zhang 2011): phase congruency (Kovesi) + Scharr gradient magnitude
# --------------------------------------------------------------------------------------------
_PC_SCALES, _PC_ORIENTS = 4, 4
_PC_MIN_WAVELENGTH, _PC_MULT, _PC_SIGMA_ONF, _PC_DTHETA_ON_SIGMA = 6.0, 2.0, 0.55, 1.2
_PC_K, _PC_EPS = 2.0, 1e-4
_SCHARR_X = np.array([[3.0, 0.0, -3.0], [10.0, 0.0, -10.0], [3.0, 0.0, -3.0]]) / 16.0
_SCHARR_Y = _SCHARR_X.T.copy()


def _freq_grid(n: int) -> np.ndarray:
    if n % 2:
        return np.arange(-(n - 1) / 2, (n - 1) / 2 + 1) / (n - 1)
    return np.arange(-n / 2, n / 2) / n


@lru_cache(maxsize=8)
def _pc_filters(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-Gabor filters (orient, scale, rows, cols) and the noise-energy constants per orient."""
    x, y = np.meshgrid(_freq_grid(cols), _freq_grid(rows))
    radius = np.fft.ifftshift(np.sqrt(x**2 + y**2))
    theta = np.fft.ifftshift(np.arctan2(-y, x))
    radius[0, 0] = 1.0
    sin_t, cos_t = np.sin(theta), np.cos(theta)
    lowpass = np.fft.ifftshift(1.0 / (1.0 + (np.sqrt(x**2 + y**2) / 0.45) ** 30))
    log_gabor = []
    for s in range(_PC_SCALES):
        fo = 1.0 / (_PC_MIN_WAVELENGTH * _PC_MULT**s)
        lg = np.exp(-(np.log(radius / fo) ** 2) / (2.0 * math.log(_PC_SIGMA_ONF) ** 2)) * lowpass
        lg[0, 0] = 0.0
        log_gabor.append(lg)
    theta_sigma = math.pi / _PC_ORIENTS / _PC_DTHETA_ON_SIGMA
    filters = np.empty((_PC_ORIENTS, _PC_SCALES, rows, cols))
    noise_const = np.empty(_PC_ORIENTS)
    for o in range(_PC_ORIENTS):
        angle = o * math.pi / _PC_ORIENTS
        ds = sin_t * math.cos(angle) - cos_t * math.sin(angle)
        dc = cos_t * math.cos(angle) + sin_t * math.sin(angle)
        spread = np.exp(-(np.arctan2(ds, dc) ** 2) / (2.0 * theta_sigma**2))
        for s in range(_PC_SCALES):
            filters[o, s] = log_gabor[s] * spread
        spatial = np.real(np.fft.ifft2(filters[o])) * math.sqrt(rows * cols)
        sum_an2 = float((spatial**2).sum())
        sum_aiaj = 0.0
        for si in range(_PC_SCALES - 1):
            for sj in range(si + 1, _PC_SCALES):
                sum_aiaj += float((spatial[si] * spatial[sj]).sum())
        em_n = float((filters[o, 0] ** 2).sum())
        # noise energy^2 per unit of noise power, divided by EM_n (the smallest-scale filter energy)
        noise_const[o] = (2.0 * sum_an2 + 4.0 * sum_aiaj) / em_n
    return filters, noise_const


def phase_congruency(x: ImageLike) -> np.ndarray:
    """Phase congruency map (dimensionless, in [0, 1]) of one image, on 8-bit grey levels.

    Kovesi's phase congruency as used by FSIM (``phasecong2``): log-Gabor filters with 4 scales
    (minimum wavelength 6, multiplier 2, sigma_f 0.55) and 4 orientations (angular spread
    pi/4/1.2); energy ``E = sum_s (e_s cos + o_s sin - |e_s sin - o_s cos|)`` along the mean
    phase, less a noise threshold ``T = (mu_R + k sigma_R) / 1.7`` (Rayleigh noise model from the
    median smallest-scale amplitude, k = 2), summed over orientations and divided by the summed
    amplitudes: ``PC = sum_o max(E_o - T_o, 0) / sum_o sum_s A_so``. Source: Kovesi, "Image
    features from phase congruency", Videre 1(3), 1999; Zhang et al., IEEE TIP 20(8), 2011.
    """
    img = to_uint8(x, "x").astype(np.float64)
    return _phase_congruency(img)


def _phase_congruency(img: np.ndarray) -> np.ndarray:
    rows, cols = img.shape
    filters, noise_const = _pc_filters(rows, cols)
    eo = np.fft.ifft2(np.fft.fft2(img)[None, None] * filters)  # (orient, scale, rows, cols)
    amp = np.abs(eo)
    even, odd = eo.real, eo.imag
    sum_e = even.sum(axis=1)
    sum_o = odd.sum(axis=1)
    x_energy = np.sqrt(sum_e**2 + sum_o**2) + _PC_EPS
    mean_e = (sum_e / x_energy)[:, None]
    mean_o = (sum_o / x_energy)[:, None]
    energy = (even * mean_e + odd * mean_o - np.abs(even * mean_o - odd * mean_e)).sum(axis=1)
    energy_all = np.zeros((rows, cols))
    for o in range(_PC_ORIENTS):
        median_e2n = float(np.median(amp[o, 0] ** 2))
        mean_e2n = -median_e2n / math.log(0.5)
        tau = math.sqrt(mean_e2n * noise_const[o] / 2.0)
        t = tau * math.sqrt(math.pi / 2.0) + _PC_K * math.sqrt((2.0 - math.pi / 2.0) * tau**2)
        energy_all += np.maximum(energy[o] - t / 1.7, 0.0)
    an_all = amp.sum(axis=(0, 1))
    return np.divide(energy_all, an_all, out=np.zeros_like(energy_all), where=an_all > 0)


def _gradient_magnitude(img: np.ndarray) -> np.ndarray:
    gx = ndimage.correlate(img, _SCHARR_X, mode="constant")
    gy = ndimage.correlate(img, _SCHARR_Y, mode="constant")
    return np.sqrt(gx**2 + gy**2)


def _fsim_maps(
    x: np.ndarray, f: np.ndarray, f_maps: tuple[np.ndarray, np.ndarray] | None = None
) -> float:
    t1, t2 = 0.85, 160.0
    pc_x, g_x = _phase_congruency(x), _gradient_magnitude(x)
    pc_f, g_f = f_maps if f_maps is not None else (_phase_congruency(f), _gradient_magnitude(f))
    s_pc = (2.0 * pc_x * pc_f + t1) / (pc_x**2 + pc_f**2 + t1)
    s_g = (2.0 * g_x * g_f + t2) / (g_x**2 + g_f**2 + t2)
    pc_m = np.maximum(pc_x, pc_f)
    den = float(pc_m.sum())
    if den == 0.0:
        return math.nan
    return float((s_pc * s_g * pc_m).sum()) / den


def fsim(a: ImageLike, b: ImageLike, f: ImageLike) -> float:
    """Feature similarity of the fused image (dimensionless, <= 1): mean of FSIM(A,F), FSIM(B,F).

    ``FSIM(X, F) = sum S_PC S_G PC_m / sum PC_m`` with ``S_PC = (2 PC_X PC_F + T1) / (PC_X^2 +
    PC_F^2 + T1)``, ``S_G = (2 G_X G_F + T2) / (G_X^2 + G_F^2 + T2)``, ``PC_m = max(PC_X, PC_F)``,
    T1 = 0.85, T2 = 160; PC from :func:`phase_congruency`, G the Scharr gradient magnitude
    (kernel [3 0 -3; 10 0 -10; 3 0 -3]/16, zero border) on 8-bit grey levels 0..255. No
    downsampling is applied (the reference code downsamples by ``round(min(H, W) / 256)``, i.e.
    not at all for the 256x256 atlas). Source: Zhang, Zhang, Mou & Zhang, "FSIM: a feature
    similarity index for image quality assessment", IEEE TIP 20(8), 2011. Pair value: the
    average of the two. Returns NaN when neither image has any phase congruency.
    """
    a8, b8, f8 = (x.astype(np.float64) for x in uint8_triple(a, b, f))
    _require_min_size(a8, 8, "FSIM")
    f_maps = (_phase_congruency(f8), _gradient_magnitude(f8))
    return 0.5 * (_fsim_maps(a8, f8, f_maps) + _fsim_maps(b8, f8, f_maps))


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
MetricFn = Callable[[ImageLike, ImageLike, ImageLike], float]

METRICS: OrderedDict[str, MetricFn] = OrderedDict(
    [
        ("PSNR", psnr),
        ("SSIM", ssim),
        ("MI", mutual_information),
        ("FMI_pixel", lambda a, b, f: fmi(a, b, f, feature="pixel")),
        ("FMI_gradient", lambda a, b, f: fmi(a, b, f, feature="gradient")),
        ("FMI_edge", lambda a, b, f: fmi(a, b, f, feature="edge")),
        ("FSIM", fsim),
        ("EN", lambda a, b, f: entropy(f)),
        ("SD", lambda a, b, f: sd(f)),
        ("SF", lambda a, b, f: sf(f)),
        ("AG", lambda a, b, f: ag(f)),
        ("SCD", scd),
        ("VIF", vif),
        ("Qabf", qabf),
    ]
)
"""Every metric by table name, each with the uniform signature ``(a, b, f) -> float``."""

PAPER_METRICS = ["PSNR", "SSIM", "MI", "FMI_pixel", "FSIM", "EN"]
"""The six metrics of the DILRAN paper (Sec. 4.3), under the field's definitions."""

FIELD_METRICS = ["SD", "SF", "AG", "SCD", "VIF", "Qabf", "MI"]
"""The set most fusion papers report today."""


def compute_metrics(
    a: ImageLike, b: ImageLike, f: ImageLike, names: list[str] | None = None
) -> dict[str, float]:
    """Compute the named metrics (default: all of :data:`METRICS`, in order) for one triple.

    The images are validated and quantised to 8 bits once. Raises ``KeyError`` for an unknown
    metric name, listing the known ones.
    """
    names = list(METRICS) if names is None else list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; known: {list(METRICS)}")
    a8, b8, f8 = uint8_triple(a, b, f)
    return {n: float(METRICS[n](a8, b8, f8)) for n in names}

"""Named evaluator conventions: the same fused image scored as published papers score it.

Fusion papers print numbers from different evaluators, and the evaluators disagree by more than
the methods do: CDDFuse's ``utils/Evaluator.py`` (reused by EMMA, FILM, FusionMamba...) sums
MI, VIF and SSIM over the two sources, gives MI in nats, takes max(F) as the PSNR peak and calls
scikit-image's SSIM with a data range of 2; the VIFB toolbox's MATLAB metrics divide SF by M*N
and its "PSNR" is not the textbook PSNR. Each :class:`Convention` here reproduces one evaluator
from its definitions, with its own metric names, so that a score can be put beside a paper's:

* ``textbook`` (the default): :data:`dilran_lite.metrics.METRICS`, the package's definitions.
* ``cddfuse``: CDDFuse's evaluator as its ``test_MIF.py`` calls it (A = CT, B = MRI), with the
  scikit-image 0.19 behaviour its requirements pin (SSIM with ``data_range = 2``).
* ``cddfuse-dr255``: the same, with SSIM on ``data_range = 255`` (the other choice a
  re-implementation makes; newer scikit-image refuses the call without a data range).
* ``vifb``: the VIFB toolbox's 13 MATLAB metrics, called ``metricsX(imgVI, imgIR, fused)``
  with VI = MRI, IR = CT.
* ``fmi-m``: ``fmi.m``'s FMI with its quirks (:func:`dilran_lite.metrics.fmi`, ``fmi_m=True``),
  beside the package's clean FMI: features ``'none'`` (FMI_pixel) and ``'gradient'``; its
  ``'edge'`` feature (MATLAB's ``edge``, with thinning) is not reproduced.

Every metric takes the 8-bit images ``(mri, ct, fused)`` (uint8 arrays (H, W), or anything
:func:`dilran_lite.metrics.to_uint8` accepts). :func:`score` computes a convention's metrics
for one triple; :func:`describe` tabulates what a convention computes (units, pair rule).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity

from .metrics import (
    METRICS,
    ag,
    correlation,
    entropy,
    fmi,
    mutual_information,
    qabf,
    scd,
    sd,
    sf,
    ssim,
    to_uint8,
    uint8_triple,
    vif,
)

__all__ = [
    "Convention",
    "MetricSpec",
    "CONVENTIONS",
    "DEFAULT_CONVENTION",
    "get_convention",
    "score",
    "describe",
    "stretch",
]

Fn = Callable[[np.ndarray, np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a convention: ``fn(mri8, ct8, f8) -> float``, its unit and pair rule."""

    fn: Fn
    unit: str
    pair: str


@dataclass(frozen=True)
class Convention:
    """An evaluator: its metrics (by its own names, in its column order) and how it reads."""

    name: str
    source: str
    reading: str
    stretch: str
    metrics: OrderedDict[str, MetricSpec]

    @property
    def names(self) -> list[str]:
        """The metric names, in column order."""
        return list(self.metrics)


# --------------------------------------------------------------------------------------------
# CDDFuse (utils/Evaluator.py): A = CT, B = MRI
# --------------------------------------------------------------------------------------------
def _f64(*xs: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(x.astype(np.float64) for x in xs)


def cdd_mse(mri: np.ndarray, ct: np.ndarray, f: np.ndarray) -> float:
    """CDDFuse ``MSE``: mean of MSE(CT, F) and MSE(MRI, F), in squared grey levels (0..255)."""
    m, c, x = _f64(*uint8_triple(mri, ct, f))
    return float((np.mean((c - x) ** 2) + np.mean((m - x) ** 2)) / 2.0)


def cdd_psnr(mri: np.ndarray, ct: np.ndarray, f: np.ndarray) -> float:
    """CDDFuse ``PSNR`` in dB: ``10 log10(max(F)^2 / MSE)`` with :func:`cdd_mse`: the peak is
    the fused image's own maximum, not 255 (a darker fused image gets a lower PSNR)."""
    peak = float(to_uint8(f, "f").max())
    return 10.0 * math.log10(peak**2 / cdd_mse(mri, ct, f))


def cdd_cc(mri: np.ndarray, ct: np.ndarray, f: np.ndarray) -> float:
    """CDDFuse ``CC``: mean of the Pearson correlations r(CT, F) and r(MRI, F)."""
    m, c, x = _f64(*uint8_triple(mri, ct, f))
    return (correlation(c, x) + correlation(m, x)) / 2.0


def cdd_ssim(mri: np.ndarray, ct: np.ndarray, f: np.ndarray, data_range: float = 2.0) -> float:
    """CDDFuse ``SSIM``: ``structural_similarity(F, CT) + structural_similarity(F, MRI)`` with
    scikit-image's defaults (7x7 uniform window, sample covariance, K1 0.01, K2 0.03), a *sum*
    (-2..2). scikit-image 0.19 (CDDFuse's pin) gave the float32 images it is called with
    ``data_range = 2`` (the float dtype range -1..1), so C1 = 4e-4 and C2 = 3.6e-3 on grey
    levels 0..255: near-zero stabilisers. ``data_range=255`` is the ``cddfuse-dr255`` variant."""
    m, c, x = (v.astype(np.float32) for v in uint8_triple(mri, ct, f))  # float32, as CDDFuse reads
    one = [structural_similarity(x, s, data_range=data_range) for s in (c, m)]
    return float(one[0] + one[1])


def _cddfuse(data_range: float) -> OrderedDict:
    def two(fn: Callable, **kw) -> Fn:  # the package's (a, b, f) metric with A = CT, B = MRI
        return lambda mri, ct, f: fn(ct, mri, f, **kw)

    ssim_fn: Fn = lambda mri, ct, f: cdd_ssim(mri, ct, f, data_range)  # noqa: E731
    return OrderedDict(
        [
            ("EN", MetricSpec(lambda m, c, f: entropy(f), "bits", "fused only")),
            ("SD", MetricSpec(lambda m, c, f: sd(f), "grey levels", "fused only")),
            ("SF", MetricSpec(lambda m, c, f: sf(f), "grey levels", "fused only")),
            ("AG", MetricSpec(lambda m, c, f: ag(f, divisor="MN"), "grey levels", "fused only")),
            ("MI", MetricSpec(two(mutual_information, unit="nats"), "nats", "sum")),
            ("MSE", MetricSpec(cdd_mse, "grey levels^2", "mean")),
            ("CC", MetricSpec(cdd_cc, "1", "mean")),
            ("PSNR", MetricSpec(cdd_psnr, "dB (peak max F)", "of the mean MSE")),
            ("SCD", MetricSpec(two(scd), "1", "sum")),
            ("VIFF", MetricSpec(two(vif), "1", "sum")),
            ("Qabf", MetricSpec(two(qabf), "1", "joint (gradient-weighted)")),
            ("SSIM", MetricSpec(ssim_fn, f"1 (data range {data_range:g})", "sum")),
        ]
    )


# --------------------------------------------------------------------------------------------
# VIFB (metrics/metrics*.m): metricsX(imgVI, imgIR, fused), VI = MRI, IR = CT
# --------------------------------------------------------------------------------------------
def _mn_error(x: np.ndarray, f: np.ndarray) -> float:
    """VIFB's ``mse`` helper: ``sqrt(sum((X - F)^2)) / (M N)`` = RMSE / sqrt(M N)."""
    return float(np.sqrt(np.sum((x - f) ** 2)) / x.size)


def vifb_rmse(mri: np.ndarray, ct: np.ndarray, f: np.ndarray) -> float:
    """VIFB ``Rmse``: mean over the sources of :func:`_mn_error` (the textbook RMSE / 256 at
    256x256), in grey levels."""
    m, c, x = _f64(*uint8_triple(mri, ct, f))
    return (_mn_error(m, x) + _mn_error(c, x)) / 2.0


def vifb_psnr(mri: np.ndarray, ct: np.ndarray, f: np.ndarray) -> float:
    """VIFB ``Psnr``: ``20 log10(255 / sqrt(mean of the two helper values))``, in "dB": about
    3.8 times the textbook PSNR, because the helper is RMSE / sqrt(MN), not the MSE."""
    return 20.0 * math.log10(255.0 / math.sqrt(vifb_rmse(mri, ct, f)))


def _grey_histogram(x8: np.ndarray) -> np.ndarray:
    return np.bincount(x8.ravel(), minlength=256) / x8.size


def vifb_cross_entropy(mri: np.ndarray, ct: np.ndarray, f: np.ndarray) -> float:
    """VIFB ``Cross_entropy`` in bits: mean over the sources of ``sum p_X log2(p_X / p_F)``
    over the grey levels where both histograms are non-zero."""
    m8, c8, f8 = uint8_triple(mri, ct, f)
    pf = _grey_histogram(f8)
    out = 0.0
    for x8 in (m8, c8):
        px = _grey_histogram(x8)
        ok = (px > 0) & (pf > 0)
        out += float(np.sum(px[ok] * np.log2(px[ok] / pf[ok])))
    return out / 2.0


def _rescale_255(x8: np.ndarray) -> np.ndarray:
    """Min-max stretch to 0..255, rounded half away from zero (MATLAB ``int16``); flat: 0."""
    x = x8.astype(np.float64)
    lo, hi = x.min(), x.max()
    if hi == lo:
        return np.zeros(x.shape, np.uint8)
    return np.floor((x - lo) / (hi - lo) * 255.0 + 0.5).astype(np.uint8)


def vifb_mutinf(mri: np.ndarray, ct: np.ndarray, f: np.ndarray) -> float:
    """VIFB ``Mutinf``: MI(VI, F) + MI(IR, F) in **nats** on images each min-max stretched to
    0..255 first (256x256 joint histogram); equal to CDDFuse's MI for images spanning 0..255."""
    m8, c8, f8 = (_rescale_255(x) for x in uint8_triple(mri, ct, f))
    return mutual_information(m8, c8, f8, unit="nats")


def vifb_edge_intensity(mri: np.ndarray, ct: np.ndarray, f: np.ndarray) -> float:
    """VIFB ``Edge_intensity``: mean Sobel gradient magnitude of F (replicated border), in grey
    levels."""
    x = to_uint8(f, "f").astype(np.float64)
    w = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
    gx = ndimage.correlate(x, w, mode="nearest")
    gy = ndimage.correlate(x, w.T, mode="nearest")
    return float(np.mean(np.sqrt(gx * gx + gy * gy)))


def _normalize1(x8: np.ndarray) -> np.ndarray:
    """VIFB's ``normalize1``: min-max to 0..255, rounded (an all-zero image is kept)."""
    x = x8.astype(np.float64)
    lo, hi = x.min(), x.max()
    if hi == 0 and lo == 0:
        return x
    return np.floor((x - lo) / (hi - lo) * 255.0 + 0.5)


def _freqspace(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``freqspace([rows cols], 'meshgrid')``: u along the columns, v along the rows."""
    u = (np.arange(cols) - cols // 2) * 2.0 / cols
    v = (np.arange(rows) - rows // 2) * 2.0 / rows
    return np.meshgrid(u, v)


def _csf_filter(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``ifft2(ifftshift(fftshift(fft2(x)) .* h))`` (complex), ``h`` centred as freqspace."""
    return np.fft.ifft2(np.fft.ifftshift(np.fft.fftshift(np.fft.fft2(x)) * h))


def _filter2_complex(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(g, x, 'same')`` (correlation, zero border) on a complex image."""
    re = ndimage.correlate(x.real, g, mode="constant")
    im = ndimage.correlate(x.imag, g, mode="constant")
    return re + 1j * im


def _qcb_contrast(x: np.ndarray) -> np.ndarray:
    """Chen-Blum's masked local contrast ``C^3 / (C^2 + 1e-4)`` of one CSF-filtered image."""
    grid = np.arange(-15, 16, dtype=np.float64)
    xx, yy = np.meshgrid(grid, grid)
    g1, g2 = (np.exp(-(xx**2 + yy**2) / (2 * s * s)) / (2 * np.pi * s * s) for s in (2.0, 4.0))
    c = np.abs(_filter2_complex(g1, x) / _filter2_complex(g2, x) - 1.0)
    return c**3 / (c**2 + 1e-4)


def vifb_qcb(mri: np.ndarray, ct: np.ndarray, f: np.ndarray) -> float:
    """VIFB ``Qcb`` (Chen & Blum, Image Vis. Comput. 27, 2009; Liu's code): images min-max
    normalised to 0..255, filtered in frequency by the DoG contrast-sensitivity function
    ``exp(-(r/15.387)^2) - 0.7622 exp(-(r/1.3456)^2)`` (r on freqspace scaled by size/30),
    local contrasts from 31x31 Gaussians (sd 2 and 4), per-pixel preservation ratios weighted
    by the sources' squared contrasts; the mean over pixels (dimensionless, 0..1)."""
    ims = [_normalize1(x) for x in uint8_triple(mri, ct, f)]
    rows, cols = ims[0].shape
    u, v = _freqspace(rows, cols)
    r = np.sqrt((cols / 30.0 * u) ** 2 + (rows / 30.0 * v) ** 2)
    h = np.exp(-((r / 15.3870) ** 2)) - 0.7622 * np.exp(-((r / 1.3456) ** 2))
    c1, c2, cf = (_qcb_contrast(_csf_filter(x, h)) for x in ims)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = []
        for cx in (c1, c2):
            mask = (cx < cf).astype(np.float64)
            q.append((cx / cf) * mask + (cf / cx) * (1.0 - mask))
        w1 = c1 * c1 / (c1 * c1 + c2 * c2)
        w2 = c2 * c2 / (c1 * c1 + c2 * c2)
    return float(np.mean(w1 * q[0] + w2 * q[1]))


def _blocks(x: np.ndarray, size: int) -> np.ndarray:
    """(H/size, W/size, size*size) blocks of ``x`` (zero-padded to a multiple, as blkproc)."""
    rows, cols = -(-x.shape[0] // size) * size, -(-x.shape[1] // size) * size
    padded = np.zeros((rows, cols), dtype=x.dtype)
    padded[: x.shape[0], : x.shape[1]] = x
    b = padded.reshape(rows // size, size, cols // size, size).swapaxes(1, 2)
    return b.reshape(rows // size, cols // size, size * size)


def vifb_qcv(mri: np.ndarray, ct: np.ndarray, f: np.ndarray) -> float:
    """VIFB ``Qcv`` (Chen & Varshney, Inf. Fusion 8, 2007; Liu's code): images min-max
    normalised to 0..255; per 16x16 block the saliency ``sum g^5`` of each source's Sobel
    magnitude and the mean squared Mannos-Sakrison-filtered difference (source - fused, r on
    freqspace scaled by size/8); ``sum(l1 D1 + l2 D2) / sum(l1 + l2)``: lower is better (grey
    levels^2). MATLAB squares the complex filtered difference; the real part is returned."""
    m, c, x = (_normalize1(v) for v in uint8_triple(mri, ct, f))
    k1 = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    rows, cols = m.shape
    u, v = _freqspace(rows, cols)
    r = np.sqrt((cols / 8.0 * u) ** 2 + (rows / 8.0 * v) ** 2)
    h = 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))
    num, den = 0.0 + 0.0j, 0.0
    for src in (m, c):
        g = np.hypot(
            ndimage.correlate(src, k1, mode="constant"),
            ndimage.correlate(src, k1.T, mode="constant"),
        )
        saliency = (_blocks(g, 16) ** 5).sum(axis=2)
        d = (_blocks(_csf_filter(src - x, h), 16) ** 2).mean(axis=2)
        num += (saliency * d).sum()
        den += saliency.sum()
    return float((num / den).real)


def _vifb() -> OrderedDict:
    def two(fn: Callable) -> Fn:  # the package's (a, b, f) metric with a = VI = MRI
        return lambda mri, ct, f: fn(mri, ct, f)

    return OrderedDict(
        [
            ("Cross_entropy", MetricSpec(vifb_cross_entropy, "bits", "mean")),
            ("Entropy", MetricSpec(lambda m, c, f: entropy(f), "bits", "fused only")),
            ("Mutinf", MetricSpec(vifb_mutinf, "nats", "sum")),
            ("Psnr", MetricSpec(vifb_psnr, "dB (VIFB's helper, ~3.8x textbook)", "mean")),
            ("Avg_gradient", MetricSpec(lambda m, c, f: ag(f), "grey levels", "fused only")),
            ("Qabf", MetricSpec(two(qabf), "1", "joint (gradient-weighted)")),
            ("Variance", MetricSpec(lambda m, c, f: sd(f), "grey levels (an SD)", "fused only")),
            (
                "Spatial_frequency",
                MetricSpec(lambda m, c, f: sf(f, divisor="MN"), "grey levels", "fused only"),
            ),
            ("Rmse", MetricSpec(vifb_rmse, "grey levels / sqrt(MN)", "mean")),
            ("Ssim", MetricSpec(lambda m, c, f: 2.0 * ssim(m, c, f), "1", "sum")),
            ("Qcb", MetricSpec(vifb_qcb, "1", "saliency-weighted")),
            ("Qcv", MetricSpec(vifb_qcv, "grey levels^2 (lower is better)", "saliency-weighted")),
            ("Edge_intensity", MetricSpec(vifb_edge_intensity, "grey levels", "fused only")),
        ]
    )


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------
_TEXTBOOK_UNITS = {
    "PSNR": ("dB (peak 255)", "mean"),
    "SSIM": ("1 (Wang, 11x11 Gaussian, data range 255)", "mean"),
    "MI": ("bits", "sum"),
    "FMI_pixel": ("1", "mean"),
    "FMI_gradient": ("1", "mean"),
    "FMI_edge": ("1", "mean"),
    "FSIM": ("1", "mean"),
    "EN": ("bits", "fused only"),
    "SD": ("grey levels", "fused only"),
    "SF": ("grey levels", "fused only"),
    "AG": ("grey levels, / (M-1)(N-1)", "fused only"),
    "SCD": ("1", "sum"),
    "VIF": ("1", "sum"),
    "Qabf": ("1", "joint (gradient-weighted)"),
}


def _textbook() -> OrderedDict:
    out = OrderedDict()
    for name, fn in METRICS.items():
        unit, pair = _TEXTBOOK_UNITS.get(name, ("1", ""))
        out[name] = MetricSpec(fn, unit, pair)
    return out


def _fmi_m() -> OrderedDict:
    def one(feature: str) -> Fn:
        return lambda mri, ct, f: fmi(mri, ct, f, feature=feature, fmi_m=True)

    return OrderedDict(
        [
            ("FMI_pixel", MetricSpec(one("pixel"), "1", "mean")),
            ("FMI_gradient", MetricSpec(one("gradient"), "1", "mean")),
        ]
    )


_8BIT = "8-bit grey levels as stored in the PNG (colour: BT.601 luma)"
_CDD_READ = (
    "cv2.imread -> BGR2GRAY -> round, as float32 integer grey levels (identical to the 8-bit "
    "values for a grey PNG); ir = CT, vi = MRI; Evaluator.X(fused, CT, MRI)"
)
_CDD_STRETCH = (
    "CDDFuse's test script min-max stretches the network output to 0..255 before saving; "
    "applied to a method's output by evaluate(), not to a folder of saved images"
)
CONVENTIONS: dict[str, Convention] = {
    "textbook": Convention(
        "textbook", "dilran_lite.metrics (the package's definitions)", _8BIT, "none", _textbook()
    ),
    "cddfuse": Convention(
        "cddfuse",
        "CDDFuse utils/Evaluator.py as test_MIF.py calls it (scikit-image 0.19)",
        _CDD_READ,
        _CDD_STRETCH,
        _cddfuse(2.0),
    ),
    "cddfuse-dr255": Convention(
        "cddfuse-dr255",
        "cddfuse with SSIM on data_range=255",
        _CDD_READ,
        _CDD_STRETCH,
        _cddfuse(255.0),
    ),
    "vifb": Convention(
        "vifb",
        "VIFB toolbox metrics/metrics*.m, metricsX(imgVI = MRI, imgIR = CT, fused)",
        "imread: raw uint8, each metric converts to double itself",
        "none",
        _vifb(),
    ),
    "fmi-m": Convention(
        "fmi-m",
        "fmi.m (Haghighat, Fast-FMI), window 3, fmi(MRI, CT, F, feature, 3)",
        "imread: raw uint8 (fmi.m converts to double)",
        "none",
        _fmi_m(),
    ),
}
"""Every convention by name; ``textbook`` is :data:`DEFAULT_CONVENTION`."""

DEFAULT_CONVENTION = "textbook"


def get_convention(name: str | Convention | None) -> Convention:
    """The convention ``name`` (None: the default); ``ValueError`` naming the known ones."""
    if isinstance(name, Convention):
        return name
    key = DEFAULT_CONVENTION if name is None else str(name)
    if key not in CONVENTIONS:
        raise ValueError(f"unknown convention {key!r}; choose one of {', '.join(CONVENTIONS)}")
    return CONVENTIONS[key]


def score(convention, mri, ct, fused, names: list[str] | None = None) -> dict[str, float]:
    """A convention's metrics (``names``: a subset, default all) of one triple, by its names.

    ``mri``, ``ct``, ``fused``: images (H, W) as :func:`dilran_lite.metrics.to_uint8` accepts;
    the first source is the MRI (the package's ``a``), the second the CT/PET/SPECT (``b``)."""
    conv = get_convention(convention)
    names = conv.names if names is None else list(names)
    unknown = [n for n in names if n not in conv.metrics]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown} for convention {conv.name}: {conv.names}")
    m8, c8, f8 = uint8_triple(mri, ct, fused)
    return {n: float(conv.metrics[n].fn(m8, c8, f8)) for n in names}


def describe(convention) -> list[dict[str, str]]:
    """One row per metric of a convention: name, unit, pair rule (sum/mean over the sources)."""
    conv = get_convention(convention)
    return [{"metric": n, "unit": s.unit, "pair": s.pair} for n, s in conv.metrics.items()]


def stretch(fused: np.ndarray) -> np.ndarray:
    """CDDFuse's min-max stretch of a fused float image to [0, 1] (a flat image: unchanged)."""
    lo, hi = float(fused.min()), float(fused.max())
    return fused if hi == lo else (fused - lo) / (hi - lo)

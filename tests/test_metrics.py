"""Tests of dilran_lite.metrics: closed-form cases, agreement with independent implementations
(scikit-image, piq, and slow literal transcriptions of the source papers written here), and
input checking."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import io
from skimage.measure import shannon_entropy
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dilran_lite import metrics as M

Q_MAX = (0.9994 / (1 + math.exp(-15 * 0.5))) * (0.9879 / (1 + math.exp(-22 * 0.2)))


# ------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def triples(atlas_root: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, str]]:
    """Two real series-test pairs with the pixel-average and the pixel-max fused image (uint8)."""
    names = json.loads((atlas_root / "splits.json").read_text())["series"]["test"]
    out = []
    for name in (names[5], names[20]):
        a = io.imread(atlas_root / "CT" / name)
        b = io.imread(atlas_root / "MRI" / name)
        assert a.dtype == np.uint8 and a.shape == b.shape == (256, 256)
        avg = ((a.astype(np.int32) + b) // 2).astype(np.uint8)
        out.append((a, b, avg, f"{name}/avg"))
        out.append((a, b, np.maximum(a, b), f"{name}/max"))
    return out


@pytest.fixture(scope="module")
def textured() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = ndimage.gaussian_filter(rng.random((64, 64)), 2.0)
    x = (x - x.min()) / (x.max() - x.min())
    return np.rint(x * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------
# closed-form cases
# ------------------------------------------------------------------------------------------
def test_identical_images_ssim_one_psnr_inf_without_warnings(textured):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.psnr(textured, textured, textured) == math.inf
        assert M.ssim(textured, textured, textured) == pytest.approx(1.0, abs=1e-12)
        # one source identical to F: the average of inf and a finite value is inf
        other = np.flipud(textured).copy()
        assert M.psnr(textured, other, textured) == math.inf


def test_psnr_closed_form():
    a = np.zeros((32, 32), np.uint8)
    f = np.full((32, 32), 51, np.uint8)  # 0.2 on [0, 1]: MSE = 0.04
    expected = 10 * math.log10(1 / 0.04)
    assert M.psnr(a, a, f) == pytest.approx(expected, abs=1e-9)


def test_constant_image_statistics_are_zero():
    c = np.full((40, 50), 117, np.uint8)
    assert M.entropy(c) == 0.0
    assert M.sd(c) == 0.0
    assert M.sf(c) == 0.0
    assert M.ag(c) == 0.0


def test_uniform_histogram_has_entropy_eight_bits():
    x = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert M.entropy(x) == pytest.approx(8.0, abs=1e-12)
    assert M.entropy(np.tile(x, (4, 3))) == pytest.approx(8.0, abs=1e-12)


def test_entropy_bounded_by_eight_bits_but_paper_compat_is_not():
    x = np.random.default_rng(1).random((128, 128))
    assert M.entropy(x) <= 8.0
    # distinct float values: log2(128*128) = 14 bits, the paper's bug
    assert M.entropy(x, paper_compat=True) == pytest.approx(14.0, abs=1e-9)
    u8 = M.to_uint8(x)
    assert M.entropy(u8, paper_compat=True) == pytest.approx(M.entropy(u8), abs=1e-12)


def test_sd_sf_ag_closed_form():
    half = np.zeros((10, 10), np.uint8)
    half[:, 5:] = 255
    assert M.sd(half) == pytest.approx(127.5)
    stripes = np.zeros((8, 8), np.uint8)
    stripes[:, 1::2] = 255  # every horizontal neighbour differs by 255, vertical ones by 0
    assert M.sf(stripes) == pytest.approx(255.0)
    assert M.ag(stripes, "forward") == pytest.approx(255.0 / math.sqrt(2.0))


def test_ag_two_definitions_by_hand():
    # 8x8 columns alternating 0 / 255. Forward differences: |dx| = 255 at all 7x7 pixels, so
    # AG = 255/sqrt(2). Central differences (MATLAB/NumPy gradient): inner columns have equal
    # neighbours (dx = 0), the two border columns one-sided |dx| = 255: 16 pixels of
    # 255/sqrt(2), summed and divided by (8-1)(8-1).
    stripes = np.zeros((8, 8), np.uint8)
    stripes[:, 1::2] = 255
    assert M.ag(stripes, "forward") == pytest.approx(255.0 / math.sqrt(2.0))
    assert M.ag(stripes, "central") == pytest.approx(16 * 255.0 / math.sqrt(2.0) / 49.0)
    assert M.ag(stripes) == M.ag(stripes, "central")  # the default, used by the tables
    # a ramp 3j on 5x4: every difference is 3 under both; forward averages 4x3 values,
    # central sums 5x4 values and divides by 4x3
    ramp = np.tile(np.arange(4, dtype=np.uint8) * 3, (5, 1))
    assert M.ag(ramp, "forward") == pytest.approx(3.0 / math.sqrt(2.0))
    assert M.ag(ramp, "central") == pytest.approx(20 * 3.0 / math.sqrt(2.0) / 12.0)
    with pytest.raises(ValueError, match="definition"):
        M.ag(ramp, "sobel")


def test_mi_of_image_with_itself_is_its_entropy(triples):
    a, b, f, _ = triples[0]
    for x in (a, b, f):
        assert M.mi(x, x) == pytest.approx(M.entropy(x), abs=1e-9)


def test_mi_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (1024, 1024), dtype=np.uint8)
    y = rng.integers(0, 256, (1024, 1024), dtype=np.uint8)
    # plug-in bias is about 255^2 / (2 N ln 2) = 0.045 bits for N = 2^20
    assert M.mi(x, y) < 0.06
    assert M.mi(x, x) > 7.99


def test_fusion_mi_is_sum_of_the_two_terms(triples):
    a, b, f, _ = triples[0]
    assert M.mutual_information(a, b, f) == pytest.approx(M.mi(f, a) + M.mi(f, b), abs=1e-12)
    assert M.mi(a, f) == pytest.approx(M.mi(f, a), abs=1e-12)


def test_qabf_closed_forms(triples):
    a, b, f, _ = triples[0]
    # F = A = B: G = g_F >= 1 wherever there is an edge (the reference's equal-strength
    # case), A = 1: every pixel scores between Q_MAX (G = 1) and Gamma_g * Q_a(1)
    assert Q_MAX <= M.qabf(a, a, a) <= 0.9994 * Q_MAX / (0.9994 / (1 + math.exp(-7.5)))
    q = M.qabf(a, b, a)
    g_a = np.hypot(ndimage.sobel(a.astype(float), 1), ndimage.sobel(a.astype(float), 0))
    g_b = np.hypot(ndimage.sobel(b.astype(float), 1), ndimage.sobel(b.astype(float), 0))
    lower = Q_MAX * g_a.sum() / (g_a.sum() + g_b.sum())
    assert lower <= q <= Q_MAX
    for _, _, fused, _ in triples:
        assert 0.0 <= M.qabf(a, b, fused) <= 0.9754


def test_scd_closed_form():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 128, (32, 32), dtype=np.uint8)
    b = rng.integers(0, 128, (32, 32), dtype=np.uint8)
    # F = A + B: F - B = A and F - A = B, so both correlations are 1
    assert M.scd(a, b, a + b) == pytest.approx(2.0, abs=1e-12)


def test_identity_values_fsim_fmi_vif(triples):
    a, b, _, _ = triples[0]
    assert M.fsim(a, a, a) == pytest.approx(1.0, abs=1e-12)
    for feature in ("pixel", "gradient", "edge"):
        assert M.fmi(a, a, a, feature=feature) == pytest.approx(1.0, abs=1e-12)
    assert M.vif_single(a, a) == pytest.approx(1.0, abs=1e-6)
    assert M.vif(a, b, a) == pytest.approx(1.0 + M.vif_single(b, a), abs=1e-6)


SYMMETRIC = ["PSNR", "SSIM", "MI", "FMI_pixel", "FMI_gradient", "FSIM", "SCD", "VIF", "Qabf"]


@pytest.mark.parametrize("name", SYMMETRIC)
def test_symmetric_in_the_two_sources(triples, name):
    a, b, f, _ = triples[1]
    fn = M.METRICS[name]
    assert fn(a, b, f) == pytest.approx(fn(b, a, f), rel=1e-10, abs=1e-12)


def test_metric_ranges_on_real_triples(triples):
    for a, b, f, label in triples:
        v = M.compute_metrics(a, b, f)
        assert list(v) == list(M.METRICS), label
        assert 0 < v["EN"] <= 8 and 0 < v["MI"] <= 16
        for k in ("SSIM", "FSIM", "FMI_pixel", "FMI_gradient", "FMI_edge"):
            assert 0 < v[k] <= 1, (label, k, v[k])
        assert -2 <= v["SCD"] <= 2 and 0 < v["VIF"] <= 2.5


# ------------------------------------------------------------------------------------------
# agreement with independent implementations
# ------------------------------------------------------------------------------------------
def test_psnr_ssim_agree_with_skimage_and_the_formula(triples):
    for a, b, f, _ in triples:
        a1, b1, f1 = (x / 255.0 for x in (a, b, f))
        ref_psnr = 0.5 * sum(peak_signal_noise_ratio(x, f1, data_range=1.0) for x in (a1, b1))
        mse = [np.mean((x - f1) ** 2) for x in (a1, b1)]
        assert M.psnr(a, b, f) == pytest.approx(ref_psnr, abs=1e-9)
        assert M.psnr(a, b, f) == pytest.approx(np.mean([-10 * np.log10(m) for m in mse]))
        ref_ssim = 0.5 * sum(
            structural_similarity(
                x,
                f1,
                data_range=1.0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            for x in (a1, b1)
        )
        assert M.ssim(a, b, f) == pytest.approx(ref_ssim, abs=1e-12)
        # Wang et al. 2004 by hand: 11x11 Gaussian (sigma 1.5), mean over the valid interior
        lit = 0.5 * sum(_ssim_by_hand(x, f1) for x in (a1, b1))
        assert M.ssim(a, b, f) == pytest.approx(lit, abs=1e-6)


def _ssim_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    g = lambda z: ndimage.gaussian_filter(z, 1.5, truncate=3.5)  # noqa: E731
    c1, c2 = 0.01**2, 0.03**2
    mx, my = g(x), g(y)
    vx, vy, cxy = g(x * x) - mx * mx, g(y * y) - my * my, g(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s[5:-5, 5:-5].mean())


def test_mi_and_entropy_agree_with_independent_estimates(triples):
    for a, b, f, _ in triples:
        assert M.entropy(f) == pytest.approx(shannon_entropy(f, base=2), abs=1e-12)
        for src in (a, b):
            joint, _, _ = np.histogram2d(
                f.ravel(), src.ravel(), bins=256, range=[[0, 256], [0, 256]]
            )
            p = joint / joint.sum()
            px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
            nz = p > 0
            mi_nats = float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())
            assert M.mi(f, src) == pytest.approx(mi_nats / math.log(2), abs=1e-9)


def test_scd_agrees_with_numpy_corrcoef(triples):
    for a, b, f, _ in triples:
        a_, b_, f_ = (x.astype(float) for x in (a, b, f))
        ref = np.corrcoef((f_ - b_).ravel(), a_.ravel())[0, 1]
        ref += np.corrcoef((f_ - a_).ravel(), b_.ravel())[0, 1]
        assert M.scd(a, b, f) == pytest.approx(ref, abs=1e-10)


def test_fsim_agrees_with_piq(triples):
    piq = pytest.importorskip("piq")

    def t(x):
        return torch.from_numpy(x.astype(np.float64) / 255.0)[None, None]

    for a, b, f, label in triples:
        ref = 0.5 * sum(
            float(piq.fsim(t(x), t(f), data_range=1.0, chromatic=False)) for x in (a, b)
        )
        assert M.fsim(a, b, f) == pytest.approx(ref, abs=1e-4), label


def _crop(x: np.ndarray, r0: int, c0: int, n: int) -> np.ndarray:
    return x[r0 : r0 + n, c0 : c0 + n]


def _qabf_literal(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Xydeas & Petrovic (2000) as the reference MATLAB code computes it, pixel by pixel:
    ``conv2(x, h, 'same')`` (zero padding, out(i, j) = sum_kl x(i-k, j-l) h(k, l)) with
    h3 = [-1 0 1; -2 0 2; -1 0 1] (x) and h1 = [1 2 1; 0 0 0; -1 -2 -1] (y), G = g_F where
    g_X = g_F."""
    h3 = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    h1 = [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]

    def conv2_same(x, h):
        hgt, wid = x.shape
        out = np.zeros((hgt, wid))
        for i in range(hgt):
            for j in range(wid):
                acc = 0.0
                for k in (-1, 0, 1):
                    for m in (-1, 0, 1):
                        ii, jj = i - k, j - m
                        if 0 <= ii < hgt and 0 <= jj < wid:
                            acc += float(x[ii, jj]) * h[k + 1][m + 1]
                out[i, j] = acc
        return out

    def sobel(x):
        return conv2_same(x, h3), conv2_same(x, h1)

    def strength_angle(x):
        sx, sy = sobel(x)
        g = np.sqrt(sx**2 + sy**2)
        alpha = np.empty_like(g)
        for idx, v in np.ndenumerate(sx):
            alpha[idx] = math.pi / 2 if v == 0 else math.atan(sy[idx] / v)
        return g, alpha

    ga, aa = strength_angle(a)
    gb, ab = strength_angle(b)
    gf, af = strength_angle(f)
    num = den = 0.0
    for idx in np.ndindex(a.shape):
        for gx, ax in ((ga, aa), (gb, ab)):
            if gx[idx] > gf[idx]:
                g_rel = gf[idx] / gx[idx]
            elif gx[idx] == gf[idx]:
                g_rel = gf[idx]
            else:
                g_rel = gx[idx] / gf[idx]
            a_rel = 1 - abs(ax[idx] - af[idx]) / (math.pi / 2)
            qg = 0.9994 / (1 + math.exp(-15 * (g_rel - 0.5)))
            qa = 0.9879 / (1 + math.exp(-22 * (a_rel - 0.8)))
            num += qg * qa * gx[idx]
            den += gx[idx]
    return num / den


def test_qabf_agrees_with_literal_transcription(triples):
    for a, b, f, label in triples[:2]:
        crop = [_crop(x, 100, 90, 40) for x in (a, b, f)]
        assert M.qabf(*crop) == pytest.approx(_qabf_literal(*crop), abs=1e-10), label


def test_qabf_sobel_by_convolution_by_hand():
    # a ramp rising to the right and downwards: x(i, j) = 10 j + 3 i. conv2 with h3 flips the
    # kernel: at the centre s_x = (col 0 - col 2) weighted 1, 2, 1 = 4 * (0 - 20) = -80;
    # conv2 with h1 = bottom row - top row weighted 1, 2, 1 = 4 * (6 - 0) = +24
    x = np.array([[10.0 * j + 3.0 * i for j in range(3)] for i in range(3)])
    g, alpha = M._edge_strength_orientation(x)
    assert g[1, 1] == pytest.approx(math.hypot(80.0, 24.0))
    assert alpha[1, 1] == pytest.approx(math.atan(24.0 / -80.0))  # correlation: atan(24/80)
    # zero padding: the top-left corner sees only x(0..1, 0..1) = [[0, 10], [3, 13]]
    assert g[0, 0] == pytest.approx(math.hypot(-(2 * 10 + 13), -(2 * 3 + 13)))


def test_qabf_orientation_where_one_x_response_is_zero():
    # A: horizontal stripes (s_x = 0 everywhere, alpha = pi/2); F: a diagonal ramp whose
    # x-response is non-zero. Convolution and correlation give alpha_F of opposite signs, so
    # the orientation term differs; the value must match the reference transcription.
    i, j = np.mgrid[0:12, 0:12]
    a = ((i // 3) % 2 * 200).astype(np.uint8)
    f = np.clip(a.astype(int) + 6 * j + 4 * i, 0, 255).astype(np.uint8)
    ref = _qabf_literal(a, a, f)
    assert M.qabf(a, a, f) == pytest.approx(ref, abs=1e-12)
    # the correlation convention (x-response of the other sign) gives another value
    g_f, al_f = M._edge_strength_orientation(f.astype(float))
    g_a, al_a = M._edge_strength_orientation(a.astype(float))
    al_f_corr = np.where(al_f == math.pi / 2, al_f, -al_f)  # s_x of the other sign
    q_corr = (M._edge_preservation(g_a, al_a, g_f, al_f_corr) * g_a).sum() / g_a.sum()
    assert abs(q_corr - ref) > 1e-3, (q_corr, ref)


def _vifp_literal(ref: np.ndarray, dist: np.ndarray) -> float:
    """Sheikh & Bovik pixel-domain multi-scale VIF, window statistics position by position."""
    ref, dist = ref.astype(float), dist.astype(float)
    sigma_nsq, eps = 2.0, 1e-10
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        x = np.arange(n) - (n - 1) / 2
        win = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (n / 5) ** 2))
        win /= win.sum()

        def valid(img, win=win, n=n):
            h, w = img.shape[0] - n + 1, img.shape[1] - n + 1
            out = np.empty((h, w))
            for i in range(h):
                for j in range(w):
                    out[i, j] = (img[i : i + n, j : j + n] * win).sum()
            return out

        if scale > 1:
            ref, dist = valid(ref)[::2, ::2], valid(dist)[::2, ::2]
        mu1, mu2 = valid(ref), valid(dist)
        s1 = valid(ref * ref) - mu1**2
        s2 = valid(dist * dist) - mu2**2
        s12 = valid(ref * dist) - mu1 * mu2
        for idx in np.ndindex(s1.shape):
            v1, v2, v12 = max(s1[idx], 0.0), max(s2[idx], 0.0), s12[idx]
            g = v12 / (v1 + eps)
            sv = v2 - g * v12
            if v1 < eps:
                g, sv, v1 = 0.0, v2, 0.0
            if v2 < eps:
                g, sv = 0.0, 0.0
            if g < 0:
                sv, g = v2, 0.0
            sv = max(sv, eps)
            num += math.log10(1 + g * g * v1 / (sv + sigma_nsq))
            den += math.log10(1 + v1 / sigma_nsq)
    return num / den


def test_vif_agrees_with_literal_transcription(triples):
    a, b, f, _ = triples[0]
    crop = [_crop(x, 80, 80, 64) for x in (a, b, f)]
    ref = _vifp_literal(crop[0], crop[2]) + _vifp_literal(crop[1], crop[2])
    assert M.vif(*crop) == pytest.approx(ref, abs=1e-8)


def _fmi_window_literal(x: np.ndarray, f: np.ndarray) -> float:
    """Haghighat et al. (2011) on one window: pdfs, Nelsen joint pdf, normalised MI."""

    def pdf(w):
        v = w.flatten(order="F").astype(float)  # column-major, as MATLAB's w(:)
        if v.max() == v.min():
            v = np.ones_like(v)
        else:
            v = (v - v.min()) / (v.max() - v.min())
        return v / v.sum()

    if np.array_equal(x, f):  # the reference's ``if aSub == fSub``: equal windows score 1
        return 1.0
    p, q = pdf(x), pdf(f)
    n = len(p)
    k = np.arange(1, n + 1)
    sd_p = math.sqrt(abs((k**2 * p).sum() - (k * p).sum() ** 2))
    sd_q = math.sqrt(abs((k**2 * q).sum() - (k * q).sum() ** 2))
    c = np.corrcoef(p, q)[0, 1] if p.std() > 0 and q.std() > 0 else 0.0
    cp, cq = np.cumsum(p), np.cumsum(q)

    def bound(u, v):
        return min(u, v) if c >= 0 else max(u + v - 1, 0.0)

    cov_bound = sum(bound(cq[i], cp[j]) - cq[i] * cp[j] for i in range(n) for j in range(n))
    theta = c * sd_p * sd_q / cov_bound if c * sd_p * sd_q != 0 and cov_bound != 0 else 0.0

    def joint_cdf(i, j):  # i over F, j over X, 1-based; 0 outside
        if i == 0 or j == 0:
            return 0.0
        u, v = cq[i - 1], cp[j - 1]
        return theta * bound(u, v) + (1 - theta) * u * v

    h_joint = 0.0
    for i in range(1, n + 1):
        for j in range(1, n + 1):
            h = joint_cdf(i, j) - joint_cdf(i - 1, j) - joint_cdf(i, j - 1)
            h += joint_cdf(i - 1, j - 1)
            if h != 0:
                h_joint -= h * math.log2(abs(h))
    hp = -sum(v * math.log2(v) for v in p if v > 0)
    hq = -sum(v * math.log2(v) for v in q if v > 0)
    mi = hp + hq - h_joint
    if abs(mi) < 1e-15:  # the reference's ``if mi == 0``, up to rounding
        return 0.0
    return 2 * mi / (hp + hq)


def _fmi_literal(a, b, f, w=3):
    vals = []
    for i in range(a.shape[0] - w + 1):
        for j in range(a.shape[1] - w + 1):
            s = (slice(i, i + w), slice(j, j + w))
            vals.append(0.5 * (_fmi_window_literal(a[s], f[s]) + _fmi_window_literal(b[s], f[s])))
    return float(np.mean(vals))


@pytest.mark.parametrize("r0, c0", [(20, 110), (60, 20)])
def test_fmi_pixel_agrees_with_literal_transcription(triples, r0, c0):
    # (20, 110): textured tissue only; (60, 20): across the skull edge, with flat background
    # windows (identical in A and F for 40 % of the windows, in B and F for 70 %)
    for a, b, f, label in triples[:2]:
        crop = [_crop(x, r0, c0, 14) for x in (a, b, f)]
        ref = _fmi_literal(*crop)
        assert 0.2 < ref < 0.95, label  # a case where the value is not trivially 0 or 1
        assert M.fmi(*crop, feature="pixel") == pytest.approx(ref, abs=1e-9), label


def test_fmi_gradient_agrees_with_literal_transcription(triples):
    a, b, f, _ = triples[0]
    crop = [_crop(x, 60, 60, 12) for x in (a, b, f)]
    # the package computes the feature on the whole crop; compare on the crop's own gradient
    feats = []
    for x in crop:  # MATLAB's one-output gradient(x): the x-derivative only, written out
        x = x.astype(float)
        gx = np.empty_like(x)
        gx[:, 1:-1] = (x[:, 2:] - x[:, :-2]) / 2.0
        gx[:, 0] = x[:, 1] - x[:, 0]
        gx[:, -1] = x[:, -1] - x[:, -2]
        feats.append(gx)
    assert M.fmi(*crop, feature="gradient") == pytest.approx(_fmi_literal(*feats), abs=1e-9)


def test_fmi_one_hot_and_flat_windows_score_zero_by_hand():
    # one 3x3 window: A and B have one bright pixel at the centre, F a brighter one. The raw
    # windows differ, the normalised pdfs are the same one-hot vector: both entropies are 0,
    # I = 0, and the reference code returns 0 (not 1)
    a = np.zeros((3, 3), np.uint8)
    a[1, 1] = 5
    f = a.copy()
    f[1, 1] = 9
    assert M.fmi(a, a, f) == 0.0
    assert M.fmi(a, a, a) == 1.0  # equal windows
    # flat windows of different values: uniform independent pdfs, I = 0, FMI 0
    assert M.fmi(
        np.full((3, 3), 3, np.uint8), np.full((3, 3), 3, np.uint8), np.full((3, 3), 7, np.uint8)
    ) == pytest.approx(0.0, abs=1e-12)


def test_fmi_gradient_feature_is_the_signed_x_derivative_by_hand():
    # A = B: horizontal stripes, F = A transposed. The x-derivative of A is 0 everywhere and
    # that of F is 50 everywhere: two flat windows of different values, FMI 0. (With the
    # gradient magnitude both features would be 50 everywhere and FMI would be 1.)
    a = np.array([[0, 0, 0], [50, 50, 50], [100, 100, 100]], np.uint8)
    assert M.fmi(a, a, a.T.copy(), feature="gradient") == pytest.approx(0.0, abs=1e-12)
    # a ramp and twice the ramp: the x-derivatives 10, 20, 30 and 20, 40, 60 per row are
    # different windows with equal non-degenerate pdfs; with c = 1 Nelsen's theta is 1, the
    # joint pdf is the diagonal, I = H and FMI = 1
    r = np.tile(np.array([0, 10, 40], np.uint8), (3, 1))
    assert M.fmi(r, r, 2 * r, feature="gradient") == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------------------------------
# input handling
# ------------------------------------------------------------------------------------------
def test_float_torch_and_uint8_inputs_agree(triples):
    a, b, f, _ = triples[0]
    ref = M.compute_metrics(a, b, f, names=["PSNR", "MI", "Qabf", "EN"])
    as_t = [torch.from_numpy(x.astype(np.float32) / 255)[None] for x in (a, b, f)]
    assert M.compute_metrics(*as_t, names=list(ref)) == pytest.approx(ref, abs=1e-9)
    as_f = [x / 255.0 for x in (a, b, f)]
    assert M.compute_metrics(*as_f, names=list(ref)) == pytest.approx(ref, abs=1e-12)
    assert np.array_equal(M.to_uint8(as_f[0]), a)


GOOD = np.full((16, 16), 0.5)
BAD_INPUTS = [
    (np.where(np.eye(16, dtype=bool), np.nan, GOOD), ValueError, "NaN"),
    (np.where(np.eye(16, dtype=bool), np.inf, GOOD), ValueError, "infinite"),
    (np.full((16, 16), 300, np.int64), ValueError, "0..255"),
    (np.ones((16, 16), bool), TypeError, "bool"),
    (GOOD.astype(np.complex128), TypeError, "complex"),
    (np.zeros((0, 16)), ValueError, "empty"),
    (GOOD * 3, ValueError, r"\[0, 1\]"),
    (-GOOD, ValueError, r"\[0, 1\]"),
    (np.zeros((2, 16, 16)), ValueError, "shape"),
    (np.zeros(16), ValueError, "shape"),
    (GOOD.tolist(), TypeError, "numpy array or torch tensor"),
]


@pytest.mark.parametrize("bad, exc, match", BAD_INPUTS)
@pytest.mark.parametrize("name", list(M.METRICS))
def test_bad_fused_image_raises(name, bad, exc, match):
    with pytest.raises(exc, match=match):
        M.METRICS[name](GOOD, GOOD, bad)


@pytest.mark.parametrize("bad, exc, match", BAD_INPUTS[:4])
def test_bad_source_raises(bad, exc, match):
    with pytest.raises(exc, match=match):
        M.compute_metrics(bad, GOOD, GOOD)
    with pytest.raises(exc, match=match):
        M.mi(GOOD, bad)


def test_shape_mismatch_and_bad_options_raise():
    with pytest.raises(ValueError, match="same shape"):
        M.psnr(GOOD, GOOD, np.zeros((16, 17)))
    with pytest.raises(ValueError, match="same shape"):
        M.mi(GOOD, np.zeros((8, 8)))
    with pytest.raises(ValueError, match="feature"):
        M.fmi(GOOD, GOOD, GOOD, feature="dct")
    with pytest.raises(ValueError, match="window"):
        M.fmi(GOOD, GOOD, GOOD, window=1)
    with pytest.raises(KeyError, match="unknown metric"):
        M.compute_metrics(GOOD, GOOD, GOOD, names=["PSNR", "nope"])
    with pytest.raises(ValueError, match="at least"):
        M.vif(GOOD, GOOD, GOOD)  # 16x16 is too small for 4 scales


def test_registry_names():
    assert M.PAPER_METRICS == ["PSNR", "SSIM", "MI", "FMI_pixel", "FSIM", "EN"]
    assert M.FIELD_METRICS == ["SD", "SF", "AG", "SCD", "VIF", "Qabf", "MI"]
    assert set(M.PAPER_METRICS + M.FIELD_METRICS) <= set(M.METRICS)


def test_ag_sf_and_mi_convention_parameters():
    rng = np.random.default_rng(7)
    f = rng.integers(0, 256, (20, 30)).astype(np.uint8)
    x = f.astype(np.float64)
    assert M.ag(f, divisor="MN") == pytest.approx(M.ag(f) * 19 * 29 / (20 * 30))
    rf2 = np.sum(np.diff(x, axis=1) ** 2)
    cf2 = np.sum(np.diff(x, axis=0) ** 2)
    assert M.sf(f, divisor="MN") == pytest.approx(np.sqrt((rf2 + cf2) / f.size))
    assert M.sf(f) == pytest.approx(np.sqrt(rf2 / (20 * 29) + cf2 / (19 * 30)))
    a, b = rng.integers(0, 256, (2, 20, 30)).astype(np.uint8)
    bits = M.mutual_information(a, b, f)
    assert M.mutual_information(a, b, f, unit="nats") == pytest.approx(bits * np.log(2))
    for bad in (lambda: M.ag(f, divisor="N"), lambda: M.sf(f, divisor="x")):
        with pytest.raises(ValueError, match="divisor"):
            bad()
    with pytest.raises(ValueError, match="unit"):
        M.mutual_information(a, b, f, unit="dits")

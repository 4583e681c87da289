"""Tests of dilran_lite.baselines: pixel average/max, Laplacian pyramid and guided-filter fusion."""

from __future__ import annotations

import pytest
import torch

from dilran_lite.baselines import (
    BASELINES,
    average,
    guided_filter,
    guided_filter_fusion,
    laplacian_pyramid,
    max_levels,
    maximum,
    pyramid_decompose,
    pyramid_reconstruct,
)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_identical_inputs_give_the_input_back(name: str) -> None:
    x = _rand(1, 64, 48)
    out = BASELINES[name](x, x.clone())
    assert out.shape == x.shape
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("shape", [(1, 37, 53), (1, 65, 65), (50, 31), (2, 1, 33, 40)])
def test_odd_sizes_and_shapes(name: str, shape: tuple[int, ...]) -> None:
    a, b = _rand(*shape, seed=1), _rand(*shape, seed=2)
    out = BASELINES[name](a, b)
    assert out.shape == a.shape
    assert out.dtype == a.dtype
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


def test_average_and_max_values() -> None:
    a, b = _rand(1, 8, 8, seed=3), _rand(1, 8, 8, seed=4)
    torch.testing.assert_close(average(a, b), (a + b) / 2)
    torch.testing.assert_close(maximum(a, b), torch.maximum(a, b))


@pytest.mark.parametrize("size", [(64, 64), (63, 47), (17, 9), (8, 8)])
@pytest.mark.parametrize("levels", [0, 1, 3, 6])
def test_pyramid_reconstruction_is_exact(size: tuple[int, int], levels: int) -> None:
    x = _rand(1, 1, *size, seed=5).double()
    pyr = pyramid_decompose(x, levels)
    assert len(pyr) == min(levels, max_levels(*size)) + 1
    assert pyr[0].shape == x.shape
    torch.testing.assert_close(pyramid_reconstruct(pyr), x, atol=1e-12, rtol=0)


def test_pyramid_levels_are_band_pass() -> None:
    x = torch.full((1, 1, 32, 32), 0.3)
    pyr = pyramid_decompose(x, 3)
    for lap in pyr[:-1]:  # a constant image has no detail at any scale
        assert lap.abs().max() < 1e-6
    torch.testing.assert_close(pyr[-1], torch.full_like(pyr[-1], 0.3))


def test_edge_present_in_one_input_survives() -> None:
    """A sharp vertical edge in ``a`` only, on a flat grey ``b``: the Laplacian fusion keeps
    the edge's local contrast (the detail levels come from ``a``), the average halves it."""
    a = torch.full((1, 64, 64), 0.5)
    a[..., 32:] = 1.0
    b = torch.full((1, 64, 64), 0.5)
    fused = laplacian_pyramid(a, b)
    avg = average(a, b)
    step_fused = (fused[0, :, 32] - fused[0, :, 31]).mean()
    step_avg = (avg[0, :, 32] - avg[0, :, 31]).mean()
    assert step_avg == pytest.approx(0.25, abs=1e-6)
    assert step_fused > 0.45  # nearly all of the 0.5 step of a survives at the edge
    # the edge stays where it was: the strongest horizontal gradient is between columns 31, 32
    grad = (fused[0, 32, 1:] - fused[0, 32, :-1]).abs()
    assert int(grad.argmax()) == 31


def test_detail_selection_takes_the_stronger_source() -> None:
    """Fine texture only in b, coarse brightness only in a: both appear in the fusion."""
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    texture = 0.5 + 0.2 * ((xx + yy) % 2 * 2 - 1).float()  # checkerboard, the finest detail
    a = torch.full((1, 64, 64), 0.5)
    b = texture[None]
    fused = laplacian_pyramid(a, b)
    assert fused[0, 16:48, 16:48].std() > 0.15  # the texture of b survives (average: 0.1)


def test_errors() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        laplacian_pyramid(torch.zeros(1, 8, 8), torch.zeros(1, 8, 9))
    with pytest.raises(TypeError, match="float"):
        average(torch.zeros(1, 8, 8, dtype=torch.uint8), torch.zeros(1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="must be"):
        maximum(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="levels"):
        pyramid_decompose(torch.zeros(1, 1, 8, 8), -1)


# ------------------------------------------------------------------------------------------
# guided filter and guided-filter fusion (GFF)
# ------------------------------------------------------------------------------------------
def _guided_filter_literal(p, guide, r: int, eps: float):
    """He, Sun & Tang (2013) written out window by window (windows clipped to the image)."""
    p, guide = p[0, 0].double(), guide[0, 0].double()
    h, w = p.shape

    def window(i, j):
        return slice(max(0, i - r), i + r + 1), slice(max(0, j - r), j + r + 1)

    a = torch.zeros(h, w, dtype=torch.float64)
    b = torch.zeros(h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            gi, pi = guide[window(i, j)], p[window(i, j)]
            mi, mp = gi.mean(), pi.mean()
            cov = (gi * pi).mean() - mi * mp
            var = (gi * gi).mean() - mi * mi
            a[i, j] = cov / (var + eps)
            b[i, j] = mp - a[i, j] * mi
    q = torch.zeros(h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            q[i, j] = a[window(i, j)].mean() * guide[i, j] + b[window(i, j)].mean()
    return q


@pytest.mark.parametrize("r, eps", [(1, 0.01), (2, 1e-6), (9, 0.3)])
def test_guided_filter_agrees_with_window_by_window_transcription(r: int, eps: float) -> None:
    p = _rand(1, 1, 7, 9, seed=3).double()
    guide = _rand(1, 1, 7, 9, seed=4).double()
    torch.testing.assert_close(
        guided_filter(p, guide, r, eps)[0, 0], _guided_filter_literal(p, guide, r, eps)
    )


def test_guided_filter_known_values() -> None:
    guide = _rand(1, 1, 12, 10, seed=5).double()
    # a constant input is unchanged (cov = 0, a = 0, b = the constant)
    ones = torch.ones_like(guide)
    torch.testing.assert_close(guided_filter(ones, guide, 3, 0.1), ones)
    # filtering the guide itself with eps = 0: a = var / var = 1, b = 0, the guide comes back
    torch.testing.assert_close(guided_filter(guide, guide, 2, 0.0), guide)


def test_gff_takes_everything_from_the_only_salient_source() -> None:
    # a flat image has no Laplacian response: the binary map picks b at every pixel where b
    # is salient (everywhere for noise), the guided filter of a constant 1 map is 1, and
    # F = B_b + D_b = b
    b = _rand(1, 1, 40, 36, seed=6)
    a = torch.full_like(b, 0.3)
    torch.testing.assert_close(guided_filter_fusion(a, b), b, atol=1e-6, rtol=0)
    torch.testing.assert_close(guided_filter_fusion(b, a), b, atol=1e-6, rtol=0)
    # two flat images: equal saliency (0), ties go to a
    c = torch.full_like(b, 0.8)
    torch.testing.assert_close(guided_filter_fusion(a, c), a)


def test_gff_is_symmetric_and_batched() -> None:
    a, b = _rand(3, 1, 48, 40, seed=7), _rand(3, 1, 48, 40, seed=8)
    f = guided_filter_fusion(a, b)
    torch.testing.assert_close(f, guided_filter_fusion(b, a), atol=1e-6, rtol=0)
    for i in range(3):
        torch.testing.assert_close(f[i], guided_filter_fusion(a[i], b[i]), atol=1e-6, rtol=0)


def test_gff_keeps_an_edge_present_in_one_source() -> None:
    # a: a vertical step edge; b: flat grey. The detail layer comes from a near the edge, so the
    # fused image keeps a step of (nearly) the full height there
    a = torch.zeros(1, 1, 64, 64)
    a[..., 32:] = 1.0
    b = torch.full_like(a, 0.5)
    f = guided_filter_fusion(a, b)[0, 0]
    step = (f[:, 33] - f[:, 30]).mean()
    assert step > 0.8


# ------------------------------------------------------------------------------------------
# Laplacian pyramid with Burt & Kolczynski's salience-and-match rule
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "va, vb, expected",
    [
        # S_A = 4, S_B = 1, M = 2*2/5 = 0.8 <= 0.85: the more salient coefficient, 2
        (2.0, 1.0, 2.0),
        # equal coefficients: M = 1, w_min = 1/2, the mean
        (1.0, 1.0, 1.0),
        # opposite signs: M = -1, equal salience, ties to a
        (1.0, -1.0, 1.0),
        # S_A = 1, S_B = 0.81, M = 1.8/1.81 > 0.85: w_min = 1/2 - 1/2 (1 - M)/0.15 on b
        (1.0, 0.9, None),
    ],
)
def test_salience_match_rule_by_hand(va: float, vb: float, expected: float | None) -> None:
    from dilran_lite.baselines import salience_match_select

    la = torch.full((1, 1, 3, 3), va, dtype=torch.float64)
    lb = torch.full((1, 1, 3, 3), vb, dtype=torch.float64)
    if expected is None:
        m = 1.8 / 1.81
        w_min = 0.5 - 0.5 * (1 - m) / (1 - 0.85)
        expected = (1 - w_min) * va + w_min * vb
    out = salience_match_select(la, lb, 0.85)
    torch.testing.assert_close(out, torch.full_like(la, expected))


def test_salience_pyramid_keeps_the_only_detail_and_checks_alpha() -> None:
    from dilran_lite.baselines import laplacian_pyramid_salience

    # b flat: all of b's detail coefficients are 0, so M = 0 wherever a has detail and a's
    # coefficients are kept: the result equals the max-abs pyramid's
    a = _rand(1, 1, 32, 32, seed=9)
    b = torch.full_like(a, 0.4)
    torch.testing.assert_close(laplacian_pyramid_salience(a, b), laplacian_pyramid(a, b))
    with pytest.raises(ValueError, match="alpha"):
        laplacian_pyramid_salience(a, b, alpha=1.0)

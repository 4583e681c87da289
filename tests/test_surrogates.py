"""Differentiable metric stand-ins (dilran_lite.surrogates) against the metrics they copy."""

import numpy as np
import pytest
import torch

from dilran_lite import metrics
from dilran_lite.learned import LearnedConfig, LearnedFusion, fine_detail
from dilran_lite.model import build_model
from dilran_lite.phantom import PhantomDataset
from dilran_lite.surrogates import (
    MetricObjective,
    parse_weights,
    soft_entropy,
    soft_mi,
    soft_qabf,
    soft_scd,
    soft_sd,
    soft_sf,
    soft_vif,
)


def uint8_triple(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A phantom pair and a blend of it, all on the 8-bit grid: (1, 1, 64, 64) each."""
    a, b, _ = PhantomDataset(n=1, seed=seed, size=64)[0]
    a, b = a[None].float(), b[None].float()
    f = 0.7 * torch.maximum(a, b) + 0.3 * b
    return tuple(torch.round(x * 255) / 255 for x in (a, b, f))


def _u8(x: torch.Tensor) -> np.ndarray:
    return metrics.to_uint8(x[0])


@pytest.mark.parametrize("seed", [0, 3])
def test_surrogates_equal_the_metrics_on_8_bit_images(seed):
    a, b, f = uint8_triple(seed)
    a8, b8, f8 = _u8(a), _u8(b), _u8(f)
    assert float(soft_sd(f)) == pytest.approx(metrics.sd(f8), rel=1e-4)
    assert float(soft_sf(f)) == pytest.approx(metrics.sf(f8), rel=1e-4)
    assert float(soft_scd(f, a, b)) == pytest.approx(metrics.scd(a8, b8, f8), abs=1e-4)
    assert float(soft_vif(a, f)) == pytest.approx(metrics.vif_single(a8, f8), abs=1e-4)
    assert float(soft_qabf(f, a, b)) == pytest.approx(metrics.qabf(a8, b8, f8), abs=2e-3)


def test_soft_histograms_follow_the_hard_ones():
    a, b, f = uint8_triple()
    flat = torch.full_like(f, 0.5)
    # one value: the entropy of the Gaussian kernel itself, 0.5 log2(2 pi e) bits per bin width
    assert float(soft_entropy(flat)) == pytest.approx(0.5 * np.log2(2 * np.pi * np.e), rel=1e-3)
    assert float(soft_entropy(f)) > float(soft_entropy(flat))
    shuffled = a.flatten()[torch.randperm(a.numel(), generator=torch.Generator().manual_seed(0))]
    independent = float(soft_mi(a, shuffled.view_as(a)))
    assert float(soft_mi(a, a)) > float(soft_mi(a, b)) > independent
    assert abs(independent) < 0.05


def test_parse_weights_reads_caps_and_refuses_unknown_names():
    assert parse_weights("VIF=1, SCD=0.5@max") == {"VIF": (1.0, None), "SCD": (0.5, "max")}
    with pytest.raises(ValueError, match="unknown metric"):
        parse_weights("PSNR=1")
    with pytest.raises(ValueError, match="unknown reference"):
        parse_weights("SD=1@median")
    with pytest.raises(ValueError, match="empty"):
        parse_weights(" ")


def test_a_capped_term_gives_no_credit_beyond_the_cap():
    a, b, _ = uint8_triple()
    obj = MetricObjective("SD=1@max")
    m = torch.maximum(a, b)
    assert float(obj(m, a, b)) == pytest.approx(-1.0, abs=1e-5)  # the rule itself scores 1
    f = (m * 1.5 - 0.2).requires_grad_(True)  # far more contrast than the maximum
    loss = obj(f, a, b)
    loss.backward()
    assert loss.item() == pytest.approx(-1.05) and float(f.grad.abs().max()) == 0.0


def test_metric_objective_gradients_are_finite():
    a, b, f = uint8_triple()
    f = f.clone().requires_grad_(True)
    spec = "EN=1,SD=1@max,SF=1@laplacian,MI=1,SCD=1,VIF=1,Qabf=1,SSIM=1"
    loss = MetricObjective(spec)(f, a, b)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


def test_image_output_mixes_the_sources_and_adds_a_share_of_their_detail():
    torch.manual_seed(0)
    layer = LearnedFusion(LearnedConfig("dilran-lite", 16, output="image"))
    layer.attach(build_model("lite").eval())
    a, b, _ = uint8_triple()
    with torch.no_grad():
        out, w = layer(a, b, return_weights=True)
    da, db = fine_detail(a), fine_detail(b)
    d = torch.where(da.abs() >= db.abs(), da, db)
    g = torch.nn.functional.softplus(torch.tensor(-4.0))  # the untrained detail gain
    expected = torch.sigmoid(10 * (a - b))
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(out, (w * a + (1 - w) * b + g * d).clamp(0, 1))
    with pytest.raises(ValueError, match=r"output .pixels. \(one of"):
        LearnedConfig(output="pixels")


def test_vif_refuses_images_below_its_smallest_scale():
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match="41x41"):
        soft_vif(x, x)


def test_fine_detail_of_a_constant_is_zero():
    x = torch.full((1, 1, 20, 20), 0.3)
    assert float(fine_detail(x).abs().max()) < 1e-6

"""The network: shapes, gradients, checks on bad input, the documented choices as parameters."""

import pytest
import torch

from dilran_lite.model import (
    DILRAN,
    PRESETS,
    ModelConfig,
    PyramidAttention,
    ResidualAttentionBlock,
    build_model,
    count_macs,
    count_parameters,
)


@pytest.fixture(scope="module")
def lite():
    torch.manual_seed(0)
    return build_model("lite").eval()


@pytest.mark.parametrize("shape", [(1, 1, 256, 256), (3, 1, 64, 64), (2, 1, 37, 53), (1, 1, 8, 9)])
def test_shapes(lite, shape):
    x = torch.rand(shape)
    with torch.no_grad():
        f = lite.encode(x)
        assert f.shape == (shape[0], lite.config.width, *shape[2:])
        assert lite.decode(f).shape == shape
        assert lite(x).shape == shape
        fused = lite.fuse(x, torch.rand(shape))
    assert fused.shape == shape
    assert fused.min() >= 0 and fused.max() <= 1


def test_paper_preset_shapes_and_size():
    torch.manual_seed(0)
    m = build_model("paper").eval()
    assert m.config == ModelConfig()
    assert m.config.width == 64 and m.config.recon_widths == (64, 32)
    with torch.no_grad():
        assert m.encode(torch.rand(1, 1, 32, 32)).shape == (1, 64, 32, 32)
    # the reconstructor is three 3x3 convolutions 64 -> 64 -> 32 -> 1 (Fig. 5)
    convs = [c for c in m.decoder.modules() if isinstance(c, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (64, 64, (3, 3)),
        (64, 32, (3, 3)),
        (32, 1, (3, 3)),
    ]
    assert count_parameters(m) > 10 * count_parameters(build_model("lite"))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    m = build_model("lite")
    x = torch.rand(2, 1, 32, 32)
    m(x).pow(2).mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_residual_attention_is_eq1():
    torch.manual_seed(0)
    block = ResidualAttentionBlock(4, 6, ModelConfig())
    x = torch.randn(2, 4, 16, 16)
    expected = (1 + block.mask(x)) * block.trunk(x)
    assert torch.allclose(block(x), expected)
    m = block.mask(x)
    assert m.shape == (2, 6, 16, 16) and m.min() >= 0 and m.max() <= 1


def test_pyramid_attention_composes_cb3_cb2_cb1():
    torch.manual_seed(0)
    pa = PyramidAttention(12, 4, ModelConfig())
    n_convs = [
        sum(isinstance(c, torch.nn.Conv2d) for c in p.modules()) for p in (pa.p1, pa.p2, pa.p3)
    ]
    assert n_convs == [1, 2, 3]
    x = torch.randn(1, 12, 16, 16)
    expected = (1 + torch.sigmoid(pa.p1(pa.p2(pa.p3(x))))) * pa.conv(x)
    assert torch.allclose(pa(x), expected)


def test_shared_pyramid_weights_is_an_option():
    shared = build_model("lite", share_pyramid_weights=True)
    assert count_parameters(shared) < count_parameters(build_model("lite"))
    with torch.no_grad():
        assert shared(torch.rand(1, 1, 16, 16)).shape == (1, 1, 16, 16)


def test_affine_reconstructor_makes_sfnn_a_weighted_average():
    """With no activation in the reconstructor (as in the published code), decoding the fused
    features equals the weighted average of the two decoded inputs (NOTES.md)."""
    torch.manual_seed(0)
    m = build_model("lite", recon_activation=False).eval()
    a, b = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        fused, (w1, w2) = m.fuse(a, b, "sfnn-max", return_weights=True, clamp=False)
        expected = w1 * m(a) + w2 * m(b)
    assert torch.allclose(fused, expected, atol=1e-5)


def test_options_and_config_round_trip():
    for kw in [
        {"norm": "batch"},
        {"norm": "instance"},
        {"activation": "prelu"},
        {"mask_activation": "none"},
        {"skip": "identity"},
        {"skip": "none"},
        {"out_activation": "sigmoid"},
    ]:
        m = build_model("lite", **kw).eval()
        with torch.no_grad():
            assert m(torch.rand(1, 1, 16, 16)).shape == (1, 1, 16, 16)
        assert ModelConfig.from_dict(m.config.to_dict()) == m.config
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"width": 8, "depth": 3})


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"activation": "tanhh"}, "unknown activation"),
        ({"norm": "layer"}, "unknown norm"),
        ({"skip": "dense"}, "unknown skip"),
    ],
)
def test_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        DILRAN(PRESETS["lite"], **kw)
    with pytest.raises(ValueError, match="unknown preset"):
        build_model("huge")


def test_bad_inputs_are_named(lite):
    with pytest.raises(TypeError, match="floating-point"):
        lite.encode(torch.zeros(1, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="1 channel"):
        lite.encode(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="at least 8x8"):
        lite.encode(torch.rand(1, 1, 4, 16))
    with pytest.raises(ValueError, match="NaN"):
        lite.encode(torch.full((1, 1, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="differ in shape"):
        lite.fuse(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 17))
    with pytest.raises(ValueError, match="features must have shape"):
        lite.decode(torch.rand(1, 3, 16, 16))
    with pytest.raises(TypeError, match="torch.Tensor"):
        lite.encode([[0.0]])


def test_single_image_and_float64_inputs_are_accepted(lite):
    with torch.no_grad():
        assert lite(torch.rand(16, 16)).shape == (1, 1, 16, 16)
        assert lite(torch.rand(1, 16, 16, dtype=torch.float64)).dtype == torch.float32


def test_count_macs_matches_hand_count():
    """The lite reconstructor alone: 3x3 convs 16->16, 16->16, 16->1 at 32x32."""
    m = build_model("lite")
    total = count_macs(m, size=32)
    enc_only = total - 32 * 32 * 9 * (16 * 16 + 16 * 16 + 16 * 1)
    assert count_macs(m, size=32, pair=True) == total + enc_only
    # MACs grow with the number of pixels
    assert count_macs(m, size=64) == pytest.approx(4 * total, rel=0.02)


def test_pyramid_mask_spans_zero_to_one():
    """The mask's last convolution is linear, so the sigmoid can go below 1/2."""
    torch.manual_seed(0)
    for shared in (False, True):
        pa = PyramidAttention(12, 4, ModelConfig(share_pyramid_weights=shared))
        z = pa.p1(pa.p2(pa.p3(torch.randn(2, 12, 16, 16))))
        assert z.min() < 0, shared
        assert not isinstance(list(pa.p1.modules())[-1], torch.nn.ReLU)

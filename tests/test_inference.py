"""The one fusion interface (make_fuser / fuse_pair), tiles and the memory policy."""

import math

import pytest
import torch

from dilran_lite.baselines import BASELINES
from dilran_lite.errors import UserError
from dilran_lite.inference import fuse_images, fuse_pair, make_fuser
from dilran_lite.model import build_model
from dilran_lite.tiling import HALO, check_limit, default_tile, fusion_memory


@pytest.mark.parametrize("strategy", ["sfnn-max", "fer", "fl1n", "max", "sfnn-spatial"])
def test_tiled_fusion_matches_untiled(strategy):
    """Tiles overlapping by HALO pixels give the untiled result (even sizes: 1e-5)."""
    torch.manual_seed(0)
    m = build_model("paper").eval()
    a, b = torch.rand(1, 1, 160, 136), torch.rand(1, 1, 160, 136)
    with torch.no_grad():
        ref, (r1, _) = m.fuse(a, b, strategy, return_weights=True, clamp=False)
        out, (w1, _) = fuse_images(m, a, b, strategy, return_weights=True, clamp=False, tile=32)
    assert (out - ref).abs().max().item() <= 1e-5
    if strategy == "sfnn-max":
        assert torch.allclose(w1, r1, rtol=1e-6)


def test_tiled_fusion_odd_size_within_stated_tolerance():
    """Odd sides change the soft masks' upsampling scale: tiled within 2e-3 of untiled."""
    torch.manual_seed(0)
    m = build_model("lite").eval()
    a, b = torch.rand(1, 1, 161, 137), torch.rand(1, 1, 161, 137)
    with torch.no_grad():
        ref, out = m.fuse(a, b, clamp=False), fuse_images(m, a, b, clamp=False, tile=32)
    assert (out - ref).abs().max().item() <= 2e-3


def test_memory_estimate_is_linear_in_pixels_and_refuses_over_limit():
    cfg = build_model("paper").config
    tile = default_tile(cfg)
    base = fusion_memory(cfg, 1, 0, 0, tile)
    m1 = fusion_memory(cfg, 1, 1024, 1024, tile) - base
    m2 = fusion_memory(cfg, 1, 2048, 2048, tile) - base
    assert m2 <= 4.2 * m1  # no faster than the pixels (plus the fixed tile)
    assert fusion_memory(cfg, 1, 2048, 2048, tile) < 4 * 2**30
    assert fusion_memory(cfg, 1, 512, 512, tile) < 1.5 * 2**30
    assert tile + 2 * HALO < 512
    lite = build_model("lite").eval()
    with pytest.raises(UserError, match="needs about"):
        fuse_images(lite, torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64), max_memory=1e6)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0.0, -1.0])
def test_non_finite_or_non_positive_memory_limit_refused(bad):
    """NaN and inf would switch the memory check off: refused, as are 0 and negatives."""
    with pytest.raises(UserError, match="finite positive"):
        check_limit(bad)
    with pytest.raises(UserError, match="finite positive"):
        make_fuser(build_model("lite").eval(), max_memory=bad)
    assert check_limit(None) is None and check_limit(2**30) == 2**30


def test_every_kind_of_method_fuses_the_same_way():
    """A DILRAN with a strategy, a module that fuses by module(a, b), a baseline name and a
    function all give (N, 1, H, W) from (N, 1, H, W) pairs through one call."""
    torch.manual_seed(0)
    a, b = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    model = build_model("lite").eval()

    class Halves(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(0.5))

        def forward(self, x, y):
            return self.w * x + (1 - self.w) * y

    with torch.no_grad():
        dilran = make_fuser(model, "fer")(a, b)
        assert torch.equal(dilran, model.fuse(a, b, "fer"))
        assert torch.allclose(make_fuser(Halves())(a, b), (a + b) / 2)
        assert torch.equal(make_fuser("max")(a, b), BASELINES["max"](a, b))
        assert torch.equal(make_fuser(lambda x, y: x)(a, b), a)
    # the same through fuse_pair, single images and colour
    out = fuse_pair("average", a[0], b[0])
    assert out.shape == (1, 32, 32)
    colour = fuse_pair("average", a[0], torch.rand(3, 32, 32))
    assert colour.shape == (3, 32, 32)


def test_options_a_method_does_not_have_are_refused():
    with pytest.raises(UserError, match="no fusion strategy"):
        make_fuser("max", strategy="fer")
    with pytest.raises(UserError, match="unknown baseline"):
        make_fuser("median")
    with pytest.raises(UserError, match="unknown strategy"):
        make_fuser(build_model("lite"), strategy="sfnn-median")

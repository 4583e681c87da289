"""RGB <-> YCbCr (BT.601 full range) and colour fusion through the Y channel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dilran_lite.color import fuse_colour, rgb_to_luma, rgb_to_ycbcr, ycbcr_to_rgb


def _random_rgb8(seed: int, shape=(3, 32, 40)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g).float() / 255.0


def test_round_trip_is_lossless_to_1_over_255():
    # every 8-bit colour on a coarse grid plus random pixels, single image and batch
    v = torch.arange(0, 256, 5, dtype=torch.float32) / 255.0
    r, g, b = torch.meshgrid(v, v, v, indexing="ij")
    grid = torch.stack([r, g, b]).reshape(3, 52, -1)
    for x in (grid, _random_rgb8(0), _random_rgb8(1, (4, 3, 16, 16))):
        back = ycbcr_to_rgb(rgb_to_ycbcr(x))
        assert back.shape == x.shape
        assert torch.equal(torch.round(back * 255), torch.round(x * 255))
        assert (back - x).abs().max() < 0.5 / 255


def test_matches_bt601_reference_values_and_pillow():
    # pure colours: BT.601 full-range (Y, Cb, Cr) * 255, chroma offset 127.5 (0.5 in [0, 1])
    x = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]]).T[:, None, :]
    ycc = rgb_to_ycbcr(x)[:, 0, :].T * 255
    expected = torch.tensor(
        [
            [76.245, 127.5 - 43.0277, 255.0],
            [149.685, 127.5 - 84.4723, 127.5 - 106.7654],
            [29.07, 255.0, 127.5 - 20.7346],
            [255.0, 127.5, 127.5],
        ]
    )
    assert torch.allclose(ycc, expected, atol=0.05)
    # Pillow's "YCbCr" mode is the same (JPEG) convention, rounded to 8 bits
    rgb = _random_rgb8(2)
    pil = Image.fromarray((rgb * 255).round().byte().permute(1, 2, 0).numpy(), "RGB")
    ref = torch.from_numpy(np.array(pil.convert("YCbCr"))).permute(2, 0, 1).float()
    assert (rgb_to_ycbcr(rgb) * 255 - ref).abs().max() <= 1.0


def test_grey_has_neutral_chroma_and_luma_equals_grey():
    grey = torch.rand(1, 8, 8).repeat(3, 1, 1)
    ycc = rgb_to_ycbcr(grey)
    assert torch.allclose(ycc[1:], torch.full_like(ycc[1:], 0.5), atol=1e-6)
    assert torch.allclose(rgb_to_luma(grey), grey[:1], atol=1e-6)


def test_fuse_colour_keeps_chroma_and_uses_fused_y():
    rgb = _random_rgb8(3, (3, 16, 16)) * 0.5 + 0.25  # stay in gamut after changing Y a bit
    mri = torch.rand(1, 16, 16)
    seen = {}

    def take_y(m, y):
        seen["shapes"] = (tuple(m.shape), tuple(y.shape))
        return y

    out = fuse_colour(mri, rgb, take_y)  # identity on Y: returns the colour image
    assert seen["shapes"] == ((1, 16, 16), (1, 16, 16))
    assert torch.allclose(out, rgb, atol=1e-5)
    out = fuse_colour(mri, rgb, lambda m, y: 0.5 * (m + y))
    ycc_out, ycc_in = rgb_to_ycbcr(out), rgb_to_ycbcr(rgb)
    inside = (out > 0.001).all(0) & (out < 0.999).all(0)  # pixels not clipped by the gamut
    assert torch.allclose(ycc_out[1:, inside], ycc_in[1:, inside], atol=1e-5)
    assert inside.float().mean() > 0.5
    assert torch.allclose(ycc_out[0, inside], 0.5 * (mri[0] + ycc_in[0])[inside], atol=1e-5)
    # batched
    outb = fuse_colour(mri[None].repeat(2, 1, 1, 1), rgb[None].repeat(2, 1, 1, 1), lambda m, y: y)
    assert outb.shape == (2, 3, 16, 16)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="shape"):
        rgb_to_ycbcr(torch.rand(1, 8, 8))
    with pytest.raises(TypeError, match="float"):
        rgb_to_ycbcr(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="fuse_y must return"):
        fuse_colour(torch.rand(1, 8, 8), torch.rand(3, 8, 8), lambda m, y: y[0])
    with pytest.raises(ValueError, match="differ"):
        fuse_colour(torch.rand(1, 8, 9), torch.rand(3, 8, 8), lambda m, y: y)

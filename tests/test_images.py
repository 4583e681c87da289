"""Image files a scanner or a converter really writes: 16-bit files that use 12 bits, files of
several frames, and headers that claim an enormous size (decompression bombs)."""

from __future__ import annotations

import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dilran_lite import cli
from dilran_lite.data import (
    ImageFileError,
    PairedDataset,
    bits_used,
    image_size,
    is_dataset_folder,
    load_image,
)
from dilran_lite.errors import UserError


def _ramp16(peak: int, shape=(32, 32)) -> np.ndarray:
    """uint16 values 0..peak (both ends present)."""
    n = shape[0] * shape[1]
    return np.linspace(0, peak, n).round().astype(np.uint16).reshape(shape)


def _no_warning(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args)


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height 8-bit grey pixels, with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


# --- 16-bit files that use fewer bits ---------------------------------------------------------


def test_bits_used_rounds_up_to_an_even_depth():
    assert [bits_used(v) for v in (0, 1, 255)] == [8, 8, 8]
    assert [bits_used(v) for v in (256, 1023, 1024, 4095)] == [10, 10, 12, 12]
    assert [bits_used(v) for v in (4096, 16383, 16384, 65535)] == [14, 14, 16, 16]
    with pytest.raises(ValueError):
        bits_used(65536)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_12_bit_data_in_a_16_bit_file_is_scaled_by_4095_and_warned(tmp_path, suffix):
    v = _ramp16(4095)
    path = tmp_path / f"ct12{suffix}"
    Image.fromarray(v).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I;16")
    with pytest.warns(UserWarning, match=rf"ct12\{suffix}: .*brightest value is 4095 .*12 bits"):
        x = load_image(path)
    assert torch.allclose(x[0], torch.from_numpy(v / 4095.0).float())
    assert float(x.max()) == 1.0  # not 4095 / 65535 = 0.062: the old near-black image


def test_slices_of_one_series_share_one_scale(tmp_path):
    """Brightest values 3000 and 4095 are both 12-bit data: one divisor, no jump between slices."""
    for peak in (3000, 4095):
        Image.fromarray(_ramp16(peak)).save(tmp_path / f"s{peak}.png")
        with pytest.warns(UserWarning, match="12 bits"):
            x = load_image(tmp_path / f"s{peak}.png")
        assert float(x.max()) == pytest.approx(peak / 4095)


def test_10_bit_data_and_full_16_bit_data(tmp_path):
    Image.fromarray(_ramp16(1000)).save(tmp_path / "ten.png")
    with pytest.warns(UserWarning, match="10 bits"):
        assert float(load_image(tmp_path / "ten.png").max()) == pytest.approx(1000 / 1023)
    full = _ramp16(65535)
    Image.fromarray(full).save(tmp_path / "full.png")
    x = _no_warning(load_image, tmp_path / "full.png")  # uses all 16 bits: no warning
    assert torch.allclose(x[0], torch.from_numpy(full / 65535.0).float())
    black = np.zeros((16, 16), np.uint16)
    Image.fromarray(black).save(tmp_path / "black.png")
    assert float(_no_warning(load_image, tmp_path / "black.png").max()) == 0.0


def test_bits_sets_the_depth_of_a_16_bit_file(tmp_path):
    v = _ramp16(4095)
    Image.fromarray(v).save(tmp_path / "ct12.png")
    x16 = _no_warning(load_image, tmp_path / "ct12.png", "L", 16)  # as 16-bit: no warning
    assert torch.allclose(x16[0], torch.from_numpy(v / 65535.0).float())
    x14 = _no_warning(load_image, tmp_path / "ct12.png", "L", 14)
    assert float(x14.max()) == pytest.approx(4095 / 16383)
    with pytest.raises(ImageFileError, match="value 4095 does not fit in bits=10"):
        load_image(tmp_path / "ct12.png", bits=10)
    for bad in (7, 17, 12.0):
        with pytest.raises(ValueError, match="bits must be None or an integer 8..16"):
            load_image(tmp_path / "ct12.png", bits=bad)


def test_8_bit_files_are_not_rescaled(tmp_path):
    dim = np.linspace(0, 40, 256).astype(np.uint8).reshape(16, 16)  # a dim 8-bit image
    Image.fromarray(dim).save(tmp_path / "dim.png")
    x = _no_warning(load_image, tmp_path / "dim.png")
    assert torch.allclose(x[0], torch.from_numpy(dim / 255.0).float())


# --- files of several frames ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["stack.tif", "anim.gif", "anim.png"])
def test_multi_frame_files_are_refused_with_the_frame_count(tmp_path, name):
    frames = [Image.fromarray(np.full((16, 16), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
    with pytest.raises(ImageFileError, match=rf"{name} holds 3 frames .*save the slice"):
        load_image(tmp_path / name)


def test_a_single_page_tiff_is_read(tmp_path):
    g = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(g).save(tmp_path / "one.tif")
    assert torch.allclose(load_image(tmp_path / "one.tif")[0], torch.from_numpy(g / 255.0).float())


# --- decompression bombs ----------------------------------------------------------------------


def test_a_50000_x_50000_header_is_refused_without_allocating(tmp_path):
    bomb = _png_header(tmp_path / "bomb.png", 50_000, 50_000)
    tracemalloc.start()
    try:
        with pytest.raises(ImageFileError, match=r"bomb\.png is refused: .*2500000000 pixels"):
            load_image(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    with pytest.raises(ImageFileError, match="2500000000 pixels"):
        image_size(bomb)


def test_pillows_warning_range_is_refused_too(tmp_path, monkeypatch):
    """Between Pillow's limit and twice it, Pillow only warns and then decodes: refused here."""
    real = tmp_path / "real.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(real)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4096 pixels: over it, under 2x
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning escapes either
        with pytest.raises(ImageFileError, match=r"real\.png is refused: .*4096 pixels"):
            load_image(real)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    assert load_image(real).shape == (1, 64, 64)


def test_a_bomb_in_a_dataset_and_on_the_command_line(tmp_path, capsys, monkeypatch):
    root = tmp_path / "harvard-mri-ct"
    for m in ("MRI", "CT"):
        (root / m).mkdir(parents=True)
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / m / "1001.png")
    _png_header(root / "CT" / "1001.png", 50_000, 50_000)
    assert is_dataset_folder(root, "mri-ct") and not is_dataset_folder(tmp_path, "mri-ct")
    with pytest.raises(UserError, match="1001.png is refused"):
        PairedDataset(root)
    monkeypatch.setattr(cli, "_load", lambda args: pytest.fail("weights loaded"))
    argv = ["fuse", str(root / "MRI" / "1001.png"), str(root / "CT" / "1001.png")]
    assert cli.main([*argv, "-o", str(tmp_path / "f.png"), "--weights", "dilran-lite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dilran-lite: error: "), err
    assert "CT/1001.png is refused" in err

"""``dilran-lite fuse`` on bad input: one line, exit status 2, checked before the weights load,
and nothing of the user's overwritten; colour modes read correctly or refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dilran_lite import cli
from dilran_lite.data import (
    ImageFileError,
    MissingImageError,
    SplitFileError,
    load_image,
    load_splits,
)
from dilran_lite.errors import UserError
from dilran_lite.inference import save_image
from dilran_lite.phantom import phantom_pair


@pytest.fixture()
def no_weights(monkeypatch):
    """Fail the test if the CLI loads weights (every check must come first)."""

    def refuse(args):
        raise AssertionError("weights loaded before the inputs were checked")

    monkeypatch.setattr(cli, "_load", refuse)


@pytest.fixture()
def pair(tmp_path):
    mri, ct = phantom_pair(seed=1, size=64)
    return save_image(mri, tmp_path / "mri.png"), save_image(ct, tmp_path / "ct.png")


def _fails(capsys, argv: list[str], match: str) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("dilran-lite: error: ") and match in err, err
    return err


def _fuse(a, b, out) -> list[str]:
    return ["fuse", str(a), str(b), "-o", str(out), "--weights", "dilran-lite"]


def test_too_small_image(tmp_path, pair, capsys, no_weights):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "tiny.png")
    _fails(capsys, _fuse(tmp_path / "tiny.png", pair[1], tmp_path / "o.png"), "at least 8x8")


def test_colour_mri(tmp_path, pair, capsys, no_weights):
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    _fails(capsys, _fuse(tmp_path / "colour.png", pair[1], tmp_path / "o.png"), "colour image")


@pytest.mark.parametrize("content", [b"", b"not an image at all\n", "truncated"])
def test_unreadable_files(tmp_path, pair, capsys, no_weights, content):
    bad = tmp_path / "bad.png"
    if content == "truncated":
        content = pair[0].read_bytes()[:100]
    bad.write_bytes(content)
    _fails(capsys, _fuse(bad, pair[1], tmp_path / "o.png"), "cannot read image")


def test_missing_path_and_folder_as_image(tmp_path, pair, capsys, no_weights):
    _fails(capsys, _fuse(tmp_path / "nope.png", pair[1], tmp_path / "o.png"), "not found")
    _fails(capsys, _fuse(tmp_path, pair[1], tmp_path / "o.png"), "is a folder")


def test_output_paths_checked_first(tmp_path, pair, capsys, no_weights):
    _fails(capsys, _fuse(*pair, tmp_path / "out" / "noext"), "no image extension")
    (tmp_path / "existing").mkdir()
    _fails(capsys, _fuse(*pair, tmp_path / "existing"), "is a folder")
    (tmp_path / "afile").write_text("x")
    _fails(capsys, _fuse(*pair, tmp_path / "afile" / "sub" / "o.png"), "is a file")


def test_refuses_to_overwrite_an_input(pair, capsys, no_weights):
    before = pair[0].read_bytes()
    _fails(capsys, _fuse(*pair, pair[0]), "also an input")
    assert pair[0].read_bytes() == before


def test_refuses_to_write_into_the_input_folder(tmp_path, capsys, no_weights):
    ds = tmp_path / "harvard-mri-ct"
    for name in ("a.png", "b.png"):
        mri, ct = phantom_pair(seed=len(name), size=32)
        save_image(mri, ds / "MRI" / name)
        save_image(ct, ds / "CT" / name)
    before = {p: p.read_bytes() for p in ds.rglob("*.png")}
    out = ds / "MRI"
    argv = ["fuse", "--data", str(tmp_path), "-o", str(out), "--weights", "dilran-lite"]
    _fails(capsys, argv, "inside the input folder")
    assert {p: p.read_bytes() for p in ds.rglob("*.png")} == before


def test_max_memory_refused_before_work(tmp_path, pair, capsys):
    out = tmp_path / "o.png"
    _fails(capsys, [*_fuse(*pair, out), "--max-memory", "0.001"], "needs about")
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path, pair, no_weights):
    with pytest.raises(UserError):
        cli.main(["--debug", *_fuse(tmp_path / "nope.png", pair[1], tmp_path / "o.png")])


def test_fused_file_written_atomically(tmp_path, pair):
    out = tmp_path / "o.png"
    assert cli.main([*_fuse(*pair, out), "--strategy", "average"]) == 0
    assert Image.open(out).size == (64, 64)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- colour modes -----------------------------------------------------------------------------


def _rgb() -> np.ndarray:
    x = np.zeros((32, 32, 3), np.uint8)
    x[:, :16] = (200, 40, 10)
    x[:, 16:] = (20, 90, 230)
    return x


def test_cmyk_is_not_read_inverted(tmp_path):
    rgb = _rgb()
    cmyk = Image.fromarray(rgb).convert("CMYK")
    for name in ("c.jpg", "c.tif"):
        cmyk.save(tmp_path / name, quality=100) if name.endswith("jpg") else cmyk.save(
            tmp_path / name
        )
        x = load_image(tmp_path / name, "RGB")
        ref = torch.from_numpy(np.moveaxis(rgb, -1, 0) / 255.0).float()
        assert (x - ref).abs().mean() < 0.03, name


def test_palette_la_i16_and_equal_rgb(tmp_path):
    grey = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    Image.fromarray(grey).convert("P").save(tmp_path / "p.png")
    Image.fromarray(np.stack([grey, np.full_like(grey, 255)], -1), "LA").save(tmp_path / "la.png")
    Image.fromarray(np.repeat(grey[..., None], 3, -1)).save(tmp_path / "rgb.png")
    ref = torch.from_numpy(grey / 255.0).float()[None]
    for name in ("la.png", "rgb.png"):
        assert torch.allclose(load_image(tmp_path / name, "L"), ref), name
    pal = load_image(tmp_path / "p.png", "RGB")
    assert (pal - ref.expand(3, -1, -1)).abs().max() < 0.02
    v16 = (np.arange(32 * 32, dtype=np.uint16) * 60).reshape(32, 32)
    Image.fromarray(v16).save(tmp_path / "i16.png")
    assert torch.allclose(
        load_image(tmp_path / "i16.png"), torch.from_numpy(v16 / 65535.0)[None].float()
    )


def test_unsupported_mode_refused_by_name(tmp_path):
    Image.fromarray(np.zeros((16, 16), np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(ImageFileError, match="mode F"):
        load_image(tmp_path / "f.tif")
    with pytest.raises(MissingImageError):
        load_image(tmp_path / "none.png")


# --- split files ------------------------------------------------------------------------------


def _splits(tmp_path, series: dict):
    ds = tmp_path / "harvard-mri-ct"
    ds.mkdir()
    (ds / "splits.json").write_text(json.dumps({"series": series}))
    return tmp_path


def test_split_with_a_non_string_item(tmp_path):
    root = _splits(tmp_path, {"test": ["a.png", 3]})
    with pytest.raises(SplitFileError, match="item 1 of 'series/test'"):
        load_splits("mri-ct", root)


def test_split_naming_a_pair_twice(tmp_path):
    root = _splits(tmp_path, {"test": ["a.png", "a.png"]})
    with pytest.raises(SplitFileError, match="twice"):
        load_splits("mri-ct", root)

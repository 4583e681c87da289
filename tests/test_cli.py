"""The dilran-lite command line, run in-process through dilran_lite.cli.main."""

import numpy as np
import pytest
from PIL import Image

from dilran_lite.cli import main
from dilran_lite.inference import save_image
from dilran_lite.phantom import phantom_pair


def test_info_prints_parameters_and_macs(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "paper" in out and "720,897" in out and "79.77" in out  # paper preset, 256x256
    assert "lite" in out and "46,673" in out
    assert "dilran-paper" in out


@pytest.fixture()
def pair_files(tmp_path):
    mri, ct = phantom_pair(seed=1, size=64)
    return save_image(mri, tmp_path / "mri.png"), save_image(ct, tmp_path / "ct.png")


def test_fuse_one_pair(tmp_path, pair_files, capsys):
    out = tmp_path / "fused.png"
    assert main(["fuse", *map(str, pair_files), "-o", str(out), "--weights", "dilran-lite"]) == 0
    img = np.asarray(Image.open(out))
    assert img.shape == (64, 64) and img.dtype == np.uint8 and img.std() > 0


def test_fuse_colour_pair(tmp_path, pair_files):
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[16:48, 16:48] = (255, 64, 0)
    Image.fromarray(rgb).save(tmp_path / "pet.png")
    out = tmp_path / "fused.png"
    args = ["fuse", str(pair_files[0]), str(tmp_path / "pet.png"), "-o", str(out)]
    assert main([*args, "--weights", "dilran-lite", "--strategy", "average"]) == 0
    img = np.asarray(Image.open(out))
    assert img.shape == (64, 64, 3)
    assert img[32, 32, 0] > img[32, 32, 2]  # the PET's colour is kept


def test_fuse_refuses_unregistered_sizes(tmp_path, pair_files, capsys):
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(tmp_path / "small.png")
    out = str(tmp_path / "x.png")
    assert main(["fuse", str(pair_files[0]), str(tmp_path / "small.png"), "-o", out]) == 2
    assert "differ in size" in capsys.readouterr().err


def test_fuse_a_split(tmp_path, atlas_root, capsys):
    out = tmp_path / "out"
    args = ["fuse", "--data", str(atlas_root), "--split", "paper/test", "-o", str(out)]
    assert main([*args, "--weights", "dilran-lite", "--quiet"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 20 and all(f.endswith(".png") for f in files)
    assert np.asarray(Image.open(out / files[0])).shape == (256, 256)


def test_unknown_weights_are_named(tmp_path, pair_files, capsys):
    args = ["fuse", *map(str, pair_files), "-o", str(tmp_path / "f.png"), "--weights", "nope"]
    assert main(args) == 2  # a CheckpointError: one line, exit 2
    err = capsys.readouterr().err
    assert "no shipped weights named 'nope'" in err and err.count("\n") == 1


def test_download_offline_fails_with_a_message(tmp_path, capsys):
    args = ["download", "--dest", str(tmp_path), "--base-url", "http://127.0.0.1:9/", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("dilran-lite: error: ") and err.count("\n") == 1
    assert "offline" in err and "not attempted" in err and "--base-url" in err


def test_evaluate_shipped_weights_on_a_split(atlas_root, tmp_path, capsys):
    csv = tmp_path / "t.csv"
    args = ["evaluate", "--weights", "dilran-lite", "--dataset", str(atlas_root)]
    args += ["--split", "paper/test", "--metrics", "PSNR", "EN", "--csv", str(csv), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mean" in out and csv.is_file()
    assert len(csv.read_text().splitlines()) == 22  # header, 20 pairs, mean

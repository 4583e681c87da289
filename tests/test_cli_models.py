"""Every shipped weights file and every strategy through `dilran-lite fuse` and `evaluate`.

Grey and colour pairs; the learned fusion refuses a strategy in one line. Small images (48 px)
keep the paper-preset models fast on a CPU.
"""

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from dilran_lite.cli import main
from dilran_lite.fusion import STRATEGIES
from dilran_lite.inference import save_image
from dilran_lite.phantom import phantom_pair
from dilran_lite.pretrained import WEIGHTS_DIR, available, read_metadata

SIZE = 48
WEIGHTS = available()
LEARNED = [w for w in WEIGHTS if read_metadata(WEIGHTS_DIR / f"{w}.safetensors").get(
    "model_kind") == "learned-fusion"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    mri, ct = phantom_pair(seed=3, size=SIZE)
    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    rgb[12:36, 12:36] = (255, 80, 0)
    Image.fromarray(rgb).save(d / "pet.png")
    return save_image(mri, d / "mri.png"), save_image(ct, d / "ct.png"), d / "pet.png"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A dataset folder of three phantom MRI-CT pairs (names 1, 2, 3)."""
    d = tmp_path_factory.mktemp("ds")
    for i in (1, 2, 3):
        mri, ct = phantom_pair(seed=i, size=SIZE)
        save_image(mri, d / "MRI" / f"{i}.png")
        save_image(ct, d / "CT" / f"{i}.png")
    names = ["1", "2", "3"]
    (d / "splits.json").write_text(json.dumps({"series": {"train": [], "val": [], "test": names}}))
    return d


def test_learned_weights_are_shipped():
    assert {"learned-fusion", "learned-fusion-paper-split"} <= set(LEARNED)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_every_shipped_model_fuses_grey_and_colour(weights, pair, tmp_path):
    mri, ct, pet = pair
    for second, shape in ((ct, (SIZE, SIZE)), (pet, (SIZE, SIZE, 3))):
        out = tmp_path / f"{second.stem}.png"
        assert main(["fuse", str(mri), str(second), "-o", str(out), "--weights", weights]) == 0
        img = np.asarray(Image.open(out))
        assert img.shape == shape and img.std() > 0


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_through_fuse(strategy, pair, tmp_path):
    mri, ct, _ = pair
    out = tmp_path / "f.png"
    args = ["fuse", str(mri), str(ct), "-o", str(out), "--weights", "dilran-lite"]
    assert main([*args, "--strategy", strategy]) == 0
    assert np.asarray(Image.open(out)).shape == (SIZE, SIZE)


@pytest.mark.parametrize("weights", ["dilran-paper", *LEARNED])
def test_evaluate_with_shipped_weights(weights, dataset, tmp_path):
    csv = tmp_path / "scores.csv"
    args = ["evaluate", "--dataset", str(dataset), "--split", "series/test", "--weights", weights]
    assert main([*args, "--metrics", "PSNR", "SSIM", "--csv", str(csv), "--no-progress"]) == 0
    lines = csv.read_text().splitlines()
    assert lines[0].split(",")[1:3] == ["PSNR", "SSIM"] and len(lines) == 1 + 3 + 1


def test_fuse_data_folder_with_learned_fusion(dataset, tmp_path):
    out = tmp_path / "out"
    args = ["fuse", "--data", str(dataset), "-o", str(out), "--weights", "learned-fusion"]
    assert main([*args, "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["1.png", "2.png", "3.png"]


def test_learned_fusion_refuses_a_strategy(pair, tmp_path, capsys):
    mri, ct, _ = pair
    args = ["fuse", str(mri), str(ct), "-o", str(tmp_path / "f.png"), "--weights"]
    assert main([*args, "learned-fusion", "--strategy", "fer"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no fusion strategy" in err[0]


def test_fused_image_gets_the_umask_mode(pair, tmp_path):
    mri, ct, _ = pair
    old = os.umask(0o022)
    try:
        out = tmp_path / "f.png"
        assert main(["fuse", str(mri), str(ct), "-o", str(out), "--weights", "dilran-lite"]) == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        os.umask(0o027)
        out2 = tmp_path / "g.png"
        assert main(["fuse", str(mri), str(ct), "-o", str(out2), "--weights", "dilran-lite"]) == 0
        assert stat.S_IMODE(out2.stat().st_mode) == 0o640
    finally:
        os.umask(old)


@pytest.mark.parametrize("limit", ["nan", "inf", "-inf", "0", "-2"])
def test_non_finite_max_memory_refused(limit, pair, tmp_path, capsys):
    mri, ct, _ = pair
    args = ["fuse", str(mri), str(ct), "-o", str(tmp_path / "f.png"), f"--max-memory={limit}"]
    assert main(args) == 2
    assert "finite positive" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["tpu", "xla", "meta", "cuda:x", "banana"])
def test_bad_device_is_one_line(device, pair, tmp_path, capsys):
    mri, ct, _ = pair
    args = ["fuse", str(mri), str(ct), "-o", str(tmp_path / "f.png"), "--device", device]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device" in err[0]


@pytest.mark.parametrize("size", ["4", "0", "-3", "100000"])
def test_info_bad_size_is_one_line(size, capsys):
    assert main(["info", f"--size={size}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--size" in err[0]


def test_info_large_size_costs_no_memory(capsys):
    assert main(["info", "--size", "8192"]) == 0
    assert "8192x8192" in capsys.readouterr().out


def test_evaluate_csv_onto_an_input_refused(dataset, tmp_path, capsys):
    image = dataset / "MRI" / "1.png"
    before = image.read_bytes()
    for target in (image, dataset / "scores.csv", tmp_path / "x.png"):
        args = ["evaluate", "--dataset", str(dataset), "--split", "series/test"]
        assert main([*args, "--method", "average", "--csv", str(target), "--no-progress"]) == 2
        assert "--csv" in capsys.readouterr().err
    assert image.read_bytes() == before
    assert not (dataset / "scores.csv").exists()


def test_evaluate_csv_into_the_fused_folder_refused(dataset, tmp_path, capsys):
    fused = tmp_path / "fused"
    assert main(["fuse", "--data", str(dataset), "-o", str(fused), "--quiet",
                 "--weights", "dilran-lite"]) == 0
    target = fused / "1.png"
    before = target.read_bytes()
    args = ["evaluate", "--fused", str(fused), "--dataset", str(dataset), "--split", "series/test"]
    assert main([*args, "--csv", str(fused / "table.csv"), "--no-progress"]) == 2
    assert target.read_bytes() == before


def test_full_disk_is_one_line_and_leaves_no_partial_file(pair, tmp_path, capsys, monkeypatch):
    import errno

    from PIL import Image as PILImage

    def no_space(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PILImage.Image, "save", no_space)
    mri, ct, _ = pair
    out = tmp_path / "out" / "f.png"
    assert main(["fuse", str(mri), str(ct), "-o", str(out), "--weights", "dilran-lite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0]
    assert list(out.parent.iterdir()) == []

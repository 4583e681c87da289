"""Volumes: reading and writing NIfTI and DICOM with their geometry, CT windows, MRI scaling,
the one-line errors, and ``dilran-lite fuse`` on volumes."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

from dilran_lite import volumes as V  # noqa: E402
from dilran_lite.cli import main  # noqa: E402
from dilran_lite.errors import UserError  # noqa: E402

DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated 90 degrees about z


def _volume(shape=(6, 40, 48), spacing=(0.9, 0.8, 2.5), origin=(-10.0, 5.0, 30.0), seed=0):
    """A smooth synthetic volume (z, y, x) with a non-trivial geometry."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    arr = np.exp(-(x**2 + y**2) * 3 - z**2) * 1000 - 500 + rng.normal(0, 1, shape)
    img = sitk.GetImageFromArray(np.round(arr).astype(np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(DIRECTION)
    return img


def _assert_geometry_equal(a, b):
    ga, gb = V.geometry(a), V.geometry(b)
    assert ga["size"] == gb["size"]
    for k in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(ga[k], gb[k], atol=1e-3, err_msg=k)


def test_nifti_round_trip_keeps_geometry_and_values(tmp_path):
    img = _volume()
    path = V.write_nifti(img, tmp_path / "v.nii.gz")
    back = V.read_volume(path)
    _assert_geometry_equal(back, img)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))
    assert [p.name for p in tmp_path.iterdir()] == ["v.nii.gz"]  # no temporary left


def test_dicom_round_trip_keeps_geometry_and_hu(tmp_path):
    img = _volume()
    folder = V.write_dicom_series(img, tmp_path / "ct", modality="CT")
    assert len(list(folder.glob("*.dcm"))) == img.GetSize()[2]
    back = V.read_volume(folder)
    _assert_geometry_equal(back, img)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))


def test_dicom_round_trip_of_unit_values(tmp_path):
    arr = np.random.default_rng(1).random((4, 16, 16)).astype(np.float32)
    img = V.array_to_volume(arr, _volume((4, 16, 16)))
    back = V.read_volume(V.write_dicom_series(img, tmp_path / "f"))
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), arr, atol=1 / 8000 + 1e-6)


def test_a_2d_file_is_refused(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.float32)), str(tmp_path / "a.nii"))
    with pytest.raises(UserError, match="2-D image.*volume \\(3-D\\) is expected"):
        V.read_volume(tmp_path / "a.nii")


def test_a_4d_file_is_refused(tmp_path):
    vols = [sitk.GetImageFromArray(np.zeros((3, 8, 9), np.float32)) for _ in range(2)]
    sitk.WriteImage(sitk.JoinSeries(vols), str(tmp_path / "t.nii.gz"))
    with pytest.raises(UserError, match="4-D.*3-D volume is expected"):
        V.read_volume(tmp_path / "t.nii.gz")


def test_zero_spacing_in_a_nifti_header_is_refused(tmp_path):
    sitk.WriteImage(_volume(), str(tmp_path / "v.nii"))
    raw = bytearray((tmp_path / "v.nii").read_bytes())
    raw[76 + 12 : 76 + 16] = struct.pack("<f", 0.0)  # pixdim[3], the slice spacing
    (tmp_path / "z.nii").write_bytes(bytes(raw))
    with pytest.raises(UserError, match=r"pixdim\[3\]\) is 0"):
        V.read_volume(tmp_path / "z.nii")


def test_missing_pixel_spacing_in_dicom_is_refused(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    folder = V.write_dicom_series(_volume(), tmp_path / "s")
    for f in folder.glob("*.dcm"):
        ds = pydicom.dcmread(f)
        del ds.PixelSpacing
        ds.save_as(f)
    with pytest.raises(UserError, match="no valid Pixel Spacing"):
        V.read_volume(folder)


def test_several_series_are_listed_and_one_is_chosen(tmp_path):
    a = V.write_dicom_series(_volume(seed=1), tmp_path / "a")
    b = V.write_dicom_series(_volume(seed=2, origin=(0.0, 0.0, 0.0)), tmp_path / "b")
    both = tmp_path / "both"
    both.mkdir()
    for src, tag in ((a, "a"), (b, "b")):
        for f in src.iterdir():
            f.rename(both / f"{tag}{f.name}")
    ids = V.list_dicom_series(both)
    assert len(ids) == 2
    with pytest.raises(UserError, match="holds 2 DICOM series") as err:
        V.read_volume(both)
    assert all(i in str(err.value) for i in ids) and "--series" in str(err.value)
    picked = [V.geometry(V.read_volume(both, series=i))["origin"] for i in ids]
    assert sorted(np.round(picked, 3).tolist()) == sorted([[-10.0, 5.0, 30.0], [0.0, 0.0, 0.0]])
    with pytest.raises(UserError, match="no series nope"):
        V.read_volume(both, series="nope")


def test_an_empty_folder_has_no_series(tmp_path):
    with pytest.raises(UserError, match="no DICOM series"):
        V.read_volume(tmp_path)


def test_missing_simpleitk_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(UserError, match=r'pip install "dilran-lite\[volumes\]"'):
        V.require_sitk()


def test_named_windows():
    assert V.WINDOWS == {"brain": (80.0, 40.0), "bone": (2000.0, 500.0),
                         "soft-tissue": (400.0, 40.0)}
    hu = np.array([-1000.0, 0.0, 20.0, 40.0, 80.0, 1000.0])
    np.testing.assert_allclose(V.window_ct(hu, "brain"), [0, 0, 0.25, 0.5, 1, 1])
    np.testing.assert_allclose(V.window_ct(hu, "bone"), [0, 0.25, 0.26, 0.27, 0.29, 0.75])
    np.testing.assert_allclose(V.window_ct(hu, "400,40"), V.window_ct(hu, "soft-tissue"))
    assert V.window_ct(hu, "brain").dtype == np.float32
    for bad in ("lung", "0,40", "80"):
        with pytest.raises(UserError, match="window"):
            V.parse_window(bad)


def test_mri_scaled_by_percentiles():
    x = np.arange(1001, dtype=np.float32)
    y = V.scale_mri(x)
    assert y.dtype == np.float32 and y.min() == 0 and y.max() == 1
    np.testing.assert_allclose(y[500], (500 - 10) / (990 - 10), atol=1e-6)
    assert (y[:11] == 0).all() and (y[990:] == 1).all()


def test_hu_of_a_real_scanner_file():
    """pydicom's CT_small.dcm: one slice, so refused as a volume; its HU through a window."""
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    with pytest.raises(UserError, match="2-D image"):
        V.read_volume(path)
    hu = sitk.GetArrayFromImage(sitk.ReadImage(path)).astype(float)  # rescale slope/intercept
    import pydicom

    ds = pydicom.dcmread(path)
    raw = ds.pixel_array.astype(float)
    np.testing.assert_allclose(hu[0], raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    w = V.window_ct(hu, "soft-tissue")
    assert 0 < w.mean() < 1


def test_output_that_is_an_input_is_refused(tmp_path):
    path = V.write_nifti(_volume(), tmp_path / "v.nii.gz")
    with pytest.raises(UserError, match="would be overwritten"):
        V.check_volume_output(path, [path])
    folder = V.write_dicom_series(_volume(), tmp_path / "d")
    with pytest.raises(UserError, match="would be overwritten"):
        V.check_volume_output(folder / "x.nii.gz", [folder])
    with pytest.raises(UserError, match="end the name with .nii"):
        (tmp_path / "f.png").write_bytes(b"")
        V.check_volume_output(tmp_path / "f.png", [path])


@pytest.fixture()
def mri_ct(tmp_path):
    """An MRI-like and a CT-like synthetic volume (HU) of one head on one grid, as NIfTI."""
    mri = _volume((4, 32, 40), seed=3)
    ct = _volume((4, 32, 40), seed=4)
    return V.write_nifti(mri, tmp_path / "mri.nii.gz"), V.write_nifti(ct, tmp_path / "ct.nii.gz")


def test_cli_fuse_nifti_has_the_mri_geometry(tmp_path, mri_ct, capsys):
    out = tmp_path / "fused.nii.gz"
    args = ["fuse", *map(str, mri_ct), "-o", str(out), "--weights", "dilran-lite", "--quiet"]
    assert main(args) == 0
    fused, mri = V.read_volume(out), V.read_volume(mri_ct[0])
    _assert_geometry_equal(fused, mri)
    arr = sitk.GetArrayFromImage(fused)
    assert 0 <= arr.min() and arr.max() <= 1 and arr.std() > 0.01


def test_cli_fuse_dicom_folders_writes_dicom_with_the_mri_geometry(tmp_path, capsys):
    mri = V.write_dicom_series(_volume((4, 32, 40), seed=3), tmp_path / "mri", modality="MR")
    ct = V.write_dicom_series(_volume((4, 32, 40), seed=4), tmp_path / "ct", modality="CT")
    out = tmp_path / "fused"
    args = ["fuse", str(mri), str(ct), "-o", str(out), "--weights", "dilran-lite", "--quiet",
            "--window", "soft-tissue"]
    assert main(args) == 0
    _assert_geometry_equal(V.read_volume(out), V.read_volume(mri))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--window", "lung"], "window 'lung'"),
        (["--max-memory", "0.0001"], "needs about"),
    ],
)
def test_cli_fuse_errors_are_one_line(tmp_path, mri_ct, capsys, extra, message):
    args = ["fuse", *map(str, mri_ct), "-o", str(tmp_path / "f.nii.gz"), "--quiet",
            "--weights", "dilran-lite", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("dilran-lite: error:")


def test_cli_fuse_refuses_an_output_that_is_an_input(mri_ct, capsys):
    assert main(["fuse", *map(str, mri_ct), "-o", str(mri_ct[0])]) == 2
    assert "would be overwritten" in capsys.readouterr().err


def test_cli_fuse_refuses_volumes_that_do_not_overlap(tmp_path, capsys):
    a = V.write_nifti(_volume((4, 32, 40)), tmp_path / "a.nii.gz")
    b = V.write_nifti(_volume((4, 32, 40), origin=(500.0, 500.0, 500.0)), tmp_path / "b.nii.gz")
    assert main(["fuse", str(a), str(b), "-o", str(tmp_path / "f.nii.gz")]) == 2
    assert "do not overlap" in capsys.readouterr().err


def test_volume_fusion_refuses_up_front_above_the_limit():
    from dilran_lite.model import build_model

    model = build_model("lite")
    a = np.zeros((3, 32, 32), np.float32)
    with pytest.raises(UserError, match="32x32x3 volume needs about"):
        V.fuse_volume(model, a, a, max_memory=1e6, progress=False)
    assert V._batch_size(model, (30, 32, 32), 8, None) == 8


def test_volume_fusion_matches_slice_by_slice_fusion():
    import torch

    from dilran_lite.inference import fuse_pair
    from dilran_lite.model import build_model

    torch.manual_seed(0)
    model = build_model("lite").eval()
    rng = np.random.default_rng(0)
    a, b = (rng.random((5, 24, 24), dtype=np.float32) for _ in range(2))
    out = V.fuse_volume(model, a, b, "average", batch=2, progress=False)
    one = fuse_pair(model, torch.from_numpy(a[3:4]), torch.from_numpy(b[3:4]), "average")
    np.testing.assert_allclose(out[3], one[0].clamp(0, 1).numpy(), atol=1e-5)


def test_atlas_volumes_stack_a_series_in_order(atlas_root):
    from dilran_lite.data import load_image

    mri, ct = V.atlas_volumes("34", root=atlas_root.parent)
    assert mri.GetSize() == (256, 256, 21) and V.geometry(ct) == V.geometry(mri)
    assert mri.GetSpacing() == V.ATLAS_SPACING
    centre = mri.TransformContinuousIndexToPhysicalPoint((127.5, 127.5, 10.0))
    np.testing.assert_allclose(centre, (0, 0, 0), atol=1e-9)
    third = load_image(atlas_root / "MRI" / "34004.png")[0].numpy()
    np.testing.assert_allclose(sitk.GetArrayFromImage(mri)[2], third)
    hu = sitk.GetArrayFromImage(ct)
    assert hu.min() >= -1000 and hu.max() <= 1000


def test_cli_fuse_a_volume_with_an_image_is_refused(tmp_path, mri_ct, capsys):
    png = tmp_path / "ct.png"
    png.write_bytes(b"")
    assert main(["fuse", str(mri_ct[0]), str(png), "-o", str(tmp_path / "f.nii.gz")]) == 2
    assert "not a volume" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("form", ["nifti", "dicom"])
def test_cli_fuse_registered_atlas_volumes_have_the_mri_geometry(atlas_root, tmp_path, form):
    """Series 34: the MRI and a copy of the CT moved by 5 degrees and 8 mm, fused after a rigid
    registration; the output lies on the MRI's grid."""
    from dilran_lite import registration as R

    mri, ct = V.atlas_volumes("34", root=atlas_root.parent)
    truth = R.rigid_transform((0.0, 0.0, 5.0), (8.0, 0.0, 0.0), R.volume_centre(ct))
    moved = R.moved_copy(ct, truth, default=-1000.0)
    if form == "nifti":
        a = V.write_nifti(mri, tmp_path / "mri.nii.gz")
        b = V.write_nifti(moved, tmp_path / "ct.nii")
        out = tmp_path / "fused.nii.gz"
    else:
        a = V.write_dicom_series(mri, tmp_path / "mri", modality="MR")
        b = V.write_dicom_series(moved, tmp_path / "ct", modality="CT")
        out = tmp_path / "fused"
    args = ["fuse", str(a), str(b), "-o", str(out), "--register", "rigid", "--quiet",
            "--weights", "dilran-lite"]
    assert main(args) == 0
    fused = V.read_volume(out)
    _assert_geometry_equal(fused, V.read_volume(a))
    assert fused.GetSize() == (256, 256, 21)


def test_dicom_rescale_slope_fits_16_bits():
    assert V._rescale_slope(np.array([-1000.0, 1000.0])) == 1.0
    assert V._rescale_slope(np.array([0.0, 0.5, 1.0])) == 1 / 4000
    assert V._rescale_slope(np.array([-1000.0, 0.5])) == 0.1


def test_cli_without_simpleitk_names_the_extra(mri_ct, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    assert main(["register", *map(str, mri_ct), "-o", str(tmp_path / "t.tfm")]) == 2
    err = capsys.readouterr().err
    assert 'pip install "dilran-lite[volumes]"' in err and err.count("\n") == 1


def test_dicom_io_leaves_the_process_locale_alone(tmp_path):
    """GDCM sets the C locale when it writes or reads a series; the package puts it back, so a
    later ``open()`` without an encoding still reads UTF-8."""
    import locale

    before = locale.getpreferredencoding(False)
    img = sitk.GetImageFromArray(np.zeros((3, 8, 8), np.float32))
    folder = V.write_dicom_series(img, tmp_path / "s", modality="CT")
    V.read_volume(folder)
    assert V.list_dicom_series(folder) and locale.getpreferredencoding(False) == before

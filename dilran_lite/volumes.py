"""Clinical volumes: a NIfTI file or a DICOM series, read and written with their geometry.

A volume is a ``SimpleITK.Image`` (3-D, one value per voxel) with its physical geometry: size
(x, y, z voxels), spacing (mm), origin (mm, the first voxel's centre) and direction (the 3x3 matrix
of the axes' directions). Arrays taken from it are (z, y, x). CT is kept in Hounsfield units (HU)
and shown through a window; MRI has no absolute unit and is scaled by percentiles. Both map to the
[0, 1] float32 the models take. SimpleITK is an optional extra: ``pip install
"dilran-lite[volumes]"``.
"""

from __future__ import annotations

import locale
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import UserError

__all__ = [
    "WINDOWS",
    "INSTALL_HINT",
    "require_sitk",
    "is_volume_path",
    "list_dicom_series",
    "read_volume",
    "geometry",
    "same_geometry",
    "parse_window",
    "window_ct",
    "scale_mri",
    "to_unit",
    "array_to_volume",
    "check_volume_output",
    "write_nifti",
    "write_dicom_series",
    "write_volume",
    "phantom_volumes",
]

#: named CT windows, (width, level) in HU. ``bone`` is W2000/L500 (some viewers use W1800/L400).
WINDOWS = {"brain": (80.0, 40.0), "bone": (2000.0, 500.0), "soft-tissue": (400.0, 40.0)}

INSTALL_HINT = 'pip install "dilran-lite[volumes]"'
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def require_sitk():
    """The ``SimpleITK`` module, or a ``UserError`` naming the extra to install."""
    try:
        import SimpleITK as sitk
    except ImportError as err:
        raise UserError(
            f"reading and writing volumes needs SimpleITK, which is not installed; run "
            f"{INSTALL_HINT}"
        ) from err
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    return sitk


@contextmanager
def keep_locale():
    """Undo the C locale that GDCM (SimpleITK's DICOM library) sets process-wide when it reads or
    writes a series: without this, every later ``open()`` without an encoding in the process (a
    notebook's kernel) would read ASCII only."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def is_volume_path(path: str | os.PathLike) -> bool:
    """True for a ``.nii``/``.nii.gz`` name or an existing folder (a DICOM series)."""
    p = Path(path)
    return _is_nifti(p) or p.is_dir()


@keep_locale()
def list_dicom_series(folder: str | os.PathLike) -> list[str]:
    """The SeriesInstanceUIDs of the DICOM series in ``folder`` (sorted)."""
    sitk = require_sitk()
    return sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ())


def _dicom_files(folder: Path, series: str | None) -> list[str]:
    sitk = require_sitk()
    ids = list_dicom_series(folder)
    if not ids:
        raise UserError(f"{folder}: no DICOM series found in this folder; give a DICOM folder")
    if series is None and len(ids) > 1:
        raise UserError(
            f"{folder} holds {len(ids)} DICOM series: {', '.join(ids)}; choose one with "
            "--series UID"
        )
    uid = series or ids[0]
    if uid not in ids:
        raise UserError(f"{folder}: no series {uid}; the series there are {', '.join(ids)}")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))


#: enhanced (multi-frame) CT and MR SOP classes: Pixel Spacing lives in the functional groups
_ENHANCED = {"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.4.1"}


def _check_dicom_spacing(first: str) -> None:
    sitk = require_sitk()
    r = sitk.ImageFileReader()
    r.SetFileName(first)
    r.ReadImageInformation()
    sop = r.GetMetaData("0008|0016").strip(" \x00") if r.HasMetaDataKey("0008|0016") else ""
    if sop in _ENHANCED:  # spacing in the functional groups, read by GDCM
        return
    raw = r.GetMetaData("0028|0030") if r.HasMetaDataKey("0028|0030") else ""
    try:
        values = [float(v) for v in raw.replace(" ", "").split("\\") if v]
    except ValueError:
        values = []
    if len(values) != 2 or min(values) <= 0:
        raise UserError(
            f"{first}: no valid Pixel Spacing (0028,0030) {raw.strip()!r}; the voxel size is "
            "unknown, so physical space cannot be kept; fix the header"
        )


def _nifti_pixdim(path: Path) -> tuple | None:
    """``pixdim[1..3]`` of a NIfTI-1 header as written in the file (the reader may replace a
    zero), or None for a header it does not recognise."""
    import gzip
    import struct

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(348)
    for order in "<>":
        if len(head) == 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            ndim = struct.unpack(order + "h", head[40:42])[0]
            return struct.unpack(order + "3f", head[80:92])[: max(0, min(ndim, 3))]
    return None


def _check_nifti_spacing(path: Path) -> None:
    try:
        pixdim = _nifti_pixdim(path)
    except OSError as err:
        raise UserError(f"cannot read volume {path}: {err}") from err
    for i, v in enumerate(pixdim or (), start=1):
        if not v > 0:
            raise UserError(
                f"{path}: spacing (pixdim[{i}]) is {v:g}; the voxel size is unknown, so "
                "physical space cannot be kept; fix the header"
            )


def _check_volume(img, path: Path) -> None:
    """A 3-D scalar volume with positive spacing, more than one slice; else a ``UserError``."""
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise UserError(f"{path}: {img.GetNumberOfComponentsPerPixel()} values per voxel; "
                        "expected one (a grey volume)")
    dim = img.GetDimension()
    size = img.GetSize()
    if dim == 2 or (dim == 3 and min(size) == 1):
        raise UserError(f"{path} is a 2-D image {size}; a volume (3-D) is expected")
    if dim != 3:
        raise UserError(
            f"{path} is {dim}-D {size}; a 3-D volume is expected (split a time series first)"
        )
    if min(img.GetSpacing()) <= 0:
        raise UserError(f"{path}: spacing {img.GetSpacing()} is not positive; fix the header")


@keep_locale()
def read_volume(path: str | os.PathLike, series: str | None = None):
    """Read a NIfTI file or a DICOM series folder as a 3-D ``SimpleITK.Image`` (float32).

    ``series``: the SeriesInstanceUID to read where the folder holds several. A ``UserError``
    for a missing path, a 2-D or 4-D file, missing or zero spacing, several series.
    """
    sitk = require_sitk()
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file or folder; give a .nii/.nii.gz file or a DICOM folder")
    try:
        if p.is_dir():
            files = _dicom_files(p, series)
            _check_dicom_spacing(files[0])
            img = sitk.ReadImage(files)
        else:
            if _is_nifti(p):
                _check_nifti_spacing(p)
            img = sitk.ReadImage(str(p))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise UserError(f"cannot read volume {p}: {first}") from err
    _check_volume(img, p)
    return sitk.Cast(img, sitk.sitkFloat32)


def geometry(img) -> dict:
    """Size (voxels), spacing (mm), origin (mm) and direction of a volume, as tuples."""
    return {
        "size": tuple(img.GetSize()),
        "spacing": tuple(img.GetSpacing()),
        "origin": tuple(img.GetOrigin()),
        "direction": tuple(img.GetDirection()),
    }


def same_geometry(a, b, tol: float = 1e-4) -> bool:
    """True when two volumes share size, spacing, origin and direction (within ``tol`` mm)."""
    ga, gb = geometry(a), geometry(b)
    if ga["size"] != gb["size"]:
        return False
    return all(np.allclose(ga[k], gb[k], atol=tol) for k in ("spacing", "origin", "direction"))


def parse_window(window: str | tuple) -> tuple[float, float]:
    """A CT window (width, level) in HU from a name of :data:`WINDOWS`, ``"W,L"`` or a pair."""
    if isinstance(window, (tuple, list)):
        w, lev = (float(v) for v in window)
    elif window in WINDOWS:
        w, lev = WINDOWS[window]
    else:
        try:
            w, lev = (float(v) for v in str(window).split(","))
        except ValueError:
            raise UserError(
                f"window {window!r}: give a name ({', '.join(WINDOWS)}) or W,L in HU, e.g. 80,40"
            ) from None
    if w <= 0:
        raise UserError(f"window width must be positive, got {w}")
    return w, lev


def window_ct(hu: np.ndarray, window: str | tuple = "brain") -> np.ndarray:
    """HU (any shape) -> [0, 1] float32: ``level - width/2`` -> 0, ``level + width/2`` -> 1."""
    w, lev = parse_window(window)
    out = (np.asarray(hu, dtype=np.float32) - (lev - w / 2)) / w
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def scale_mri(x: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """MRI (any shape) -> [0, 1] float32: the ``low``/``high`` percentiles map to 0/1, clipped."""
    x = np.asarray(x, dtype=np.float32)
    lo, hi = np.percentile(x, [low, high])
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def to_unit(img, modality: str, window: str | tuple = "brain") -> np.ndarray:
    """A volume as a (z, y, x) float32 array in [0, 1]: ``"ct"`` windowed, ``"mri"`` scaled."""
    sitk = require_sitk()
    arr = sitk.GetArrayFromImage(img)
    if modality.lower() == "ct":
        return window_ct(arr, window)
    if modality.lower() in ("mri", "mr"):
        return scale_mri(arr)
    raise UserError(f"modality {modality!r}: give ct or mri")


def array_to_volume(arr: np.ndarray, reference):
    """A (z, y, x) array as a volume with the geometry of ``reference`` (same size required)."""
    sitk = require_sitk()
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    if tuple(img.GetSize()) != tuple(reference.GetSize()):
        raise ValueError(f"array {arr.shape} does not fit the grid {reference.GetSize()}")
    img.CopyInformation(reference)
    return img


def check_volume_output(out: str | os.PathLike, inputs: list) -> Path:
    """Before any work: ``out`` is a NIfTI name or a folder for DICOM, and is not (nor inside,
    nor holding) one of ``inputs``; else a ``UserError``."""
    out = Path(out)
    if out.exists() and not out.is_dir() and not _is_nifti(out):
        raise UserError(f"output {out}: end the name with .nii or .nii.gz, or give a folder")
    r = out.resolve()
    for p in inputs:
        q = Path(p).resolve()
        if r == q or q in r.parents or r in q.parents:
            raise UserError(
                f"output {out} is (or holds, or is inside) the input {p}: it would be "
                "overwritten; choose another name"
            )
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"output folder {out} is not empty; give a new or empty folder")
    return out


@keep_locale()
def write_nifti(img, path: str | os.PathLike) -> Path:
    """Write ``img`` as NIfTI atomically (a temporary file in the same folder, then renamed)."""
    sitk = require_sitk()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(img, tmp, True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _slice_tags(img, k: int, uids: dict, description: str) -> list[tuple[str, str]]:
    d = img.GetDirection()
    pos = img.TransformIndexToPhysicalPoint((0, 0, k))
    return [
        ("0008|0060", uids["modality"]),
        ("0008|103e", description),
        ("0020|000d", uids["study"]),
        ("0020|000e", uids["series"]),
        ("0020|0011", "1"),
        ("0020|0013", str(k + 1)),
        ("0020|0037", "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))),
        ("0020|0032", "\\".join(f"{v:.4f}" for v in pos)),
        ("0018|0050", f"{img.GetSpacing()[2]:.4f}"),
        ("0028|1053", f"{uids['slope']:.10g}"),
        ("0028|1052", f"{uids['intercept']:.10g}"),
        ("0028|0100", "16"),
        ("0028|0101", "16"),
        ("0028|0102", "15"),
        ("0028|0103", "1"),
    ]


def _rescale_slope(arr: np.ndarray) -> float:
    """1 for whole numbers (HU), else the finest of 1/4000, 1/1000, ... 100 that fits int16."""
    big = float(np.abs(arr).max()) if arr.size else 0.0
    whole = np.allclose(arr, np.round(arr))
    for slope in ((1.0,) if whole else ()) + (1 / 4000, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0):
        if big / slope <= 32767:
            return slope
    return 1000.0


@keep_locale()
def write_dicom_series(
    img,
    folder: str | os.PathLike,
    modality: str = "OT",
    description: str = "dilran-lite",
    unit_scale: float | None = None,
) -> Path:
    """Write ``img`` as a DICOM series (one file per slice, 16-bit signed) into a new ``folder``.

    Values are stored as ``round(v / slope)`` with the rescale slope ``unit_scale`` (default: 1
    for whole-number data such as HU, else the finest that fits 16 bits, e.g. 1/4000 for [0, 1]
    data); a reader gets ``v`` back within ``slope / 2``. The
    series is written to a temporary folder beside ``folder``, then renamed into place.
    """
    sitk = require_sitk()
    folder = Path(folder)
    arr = sitk.GetArrayViewFromImage(img)
    if unit_scale is None:
        unit_scale = _rescale_slope(arr)
    if np.abs(arr).max() / unit_scale > 32767:
        raise UserError(f"values up to {np.abs(arr).max():g} do not fit 16-bit DICOM at a "
                        f"rescale slope of {unit_scale:g}; write NIfTI instead")
    sim = sitk.Cast(img, sitk.sitkFloat64)
    uid = "1.2.826.0.1.3680043.2.1125." + str(abs(hash((str(folder), os.getpid()))) % 10**12)
    uids = {"modality": modality, "study": uid + ".1", "series": uid + ".2",
            "slope": unit_scale, "intercept": 0.0}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        w = sitk.ImageFileWriter()
        w.KeepOriginalImageUIDOn()
        for k in range(sim.GetSize()[2]):
            s = sim[:, :, k]
            for key, value in _slice_tags(img, k, uids, description):
                s.SetMetaData(key, value)
            w.SetFileName(str(tmp / f"slice{k:04d}.dcm"))
            w.Execute(s)
        if folder.exists():
            folder.rmdir()  # empty (checked by check_volume_output)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def write_volume(img, out: str | os.PathLike, modality: str = "OT") -> Path:
    """Write ``img`` as NIfTI (a ``.nii``/``.nii.gz`` name) or as a DICOM series (a folder)."""
    out = Path(out)
    if _is_nifti(out):
        return write_nifti(img, out)
    return write_dicom_series(img, out, modality=modality)


#: the geometry given to atlas volumes: the atlas PNGs carry none, so it is assumed
ATLAS_SPACING = (1.0, 1.0, 5.0)


def atlas_ct_to_hu(grey: np.ndarray) -> np.ndarray:
    """Atlas CT grey levels in [0, 1] -> pseudo-HU: 0 -> -1000, 1 -> +1000 (W2000/L0 undone).

    The atlas ships display images, not HU; this inverse window is an assumption that gives a
    volume in HU-like units to teach windows on, not measured HU.
    """
    return np.round(np.asarray(grey, dtype=np.float32) * 2000.0 - 1000.0).astype(np.float32)


def atlas_volumes(series: str = "34", root: str | os.PathLike | None = None) -> tuple:
    """The MRI and CT volumes of one atlas scan series, slices stacked in order.

    Returns ``(mri, ct)``: 256 x 256 x n volumes with the *assumed* spacing
    :data:`ATLAS_SPACING` (1 x 1 mm in-plane, 5 mm between slices; the atlas states none), the
    origin putting the volume's centre at (0, 0, 0) mm, identity direction. MRI in [0, 1], CT in
    pseudo-HU (:func:`atlas_ct_to_hu`).
    """
    from .data import PAIRS, dataset_dir, load_image, series_of, slice_of

    folder = dataset_dir("mri-ct", root)
    first, second = PAIRS["mri-ct"]
    names = sorted(
        (p.name for p in (folder / first).glob("*.png") if series_of(p.name) == str(series)),
        key=slice_of,
    )
    if len(names) < 2:
        raise UserError(f"{folder}: series {series} has {len(names)} slices; need two or more")
    mri = np.stack([load_image(folder / first / n)[0].numpy() for n in names])
    ct = atlas_ct_to_hu(np.stack([load_image(folder / second / n)[0].numpy() for n in names]))
    return _atlas_image(mri), _atlas_image(ct)


def _atlas_image(arr: np.ndarray):
    sitk = require_sitk()
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing(ATLAS_SPACING)
    size = np.array(img.GetSize(), dtype=float)
    img.SetOrigin(tuple(-(size - 1) / 2 * np.array(ATLAS_SPACING)))
    return img


def _batch_size(model, shape: tuple, batch: int, max_memory: float | None) -> int:
    """The largest batch (<= ``batch``) of (y, x) slices whose fusion, with the three volumes
    (two inputs, the output; float32) held, fits in ``max_memory``; a ``UserError`` if none."""
    from .tiling import HALO, default_tile, fusion_memory

    z, h, w = shape
    held = 3 * z * h * w * 4
    tile = default_tile(model.config)
    tile = tile if max(h, w) > tile + 2 * HALO else None
    if max_memory is None:
        return batch
    for n in range(min(batch, z), 0, -1):
        if held + fusion_memory(model.config, n, h, w, tile) <= max_memory:
            return n
    need = held + fusion_memory(model.config, 1, h, w, tile)
    raise UserError(
        f"fusing a {w}x{h}x{z} volume needs about {need / 2**30:.2f} GB, over the limit of "
        f"{max_memory / 2**30:.2f} GB; raise the limit (--max-memory) or crop the volume"
    )


def fuse_volume(
    model,
    fixed: np.ndarray,
    moving: np.ndarray,
    strategy: str | None = None,
    weights=None,
    batch: int = 8,
    max_memory: float | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Fuse two volumes on one grid, (z, y, x) float32 in [0, 1], slice by slice.

    ``model`` is anything :func:`dilran_lite.inference.make_fuser` takes (``strategy`` and
    ``weights`` for a DILRAN only; default SFNN-max). Slices go through
    :func:`dilran_lite.inference.fuse_pair` in batches of at most ``batch``,
    fewer where ``max_memory`` (bytes) demands; refused up front when one slice does not fit.
    Returns the fused (z, y, x) float32 volume; a ``tqdm.auto`` bar with ``progress``.
    """
    import torch
    from tqdm.auto import tqdm

    from .inference import fuse_pair
    from .model import MIN_SIZE

    if fixed.shape != moving.shape or fixed.ndim != 3:
        raise ValueError(f"volumes must share one (z, y, x) grid: {fixed.shape} vs {moving.shape}")
    if min(fixed.shape[1:]) < MIN_SIZE:
        raise UserError(f"slices of {fixed.shape[2]}x{fixed.shape[1]} voxels; DILRAN needs at "
                        f"least {MIN_SIZE}x{MIN_SIZE}")
    n = _batch_size(model, fixed.shape, batch, max_memory)
    out = np.empty(fixed.shape, dtype=np.float32)
    for k in tqdm(range(0, fixed.shape[0], n), desc="fusing slices", unit="batch",
                  disable=not progress):
        a = torch.from_numpy(np.ascontiguousarray(fixed[k:k + n], dtype=np.float32))[:, None]
        b = torch.from_numpy(np.ascontiguousarray(moving[k:k + n], dtype=np.float32))[:, None]
        fused = fuse_pair(model, a, b, strategy, weights=weights, max_memory=max_memory)
        out[k:k + n] = fused[:, 0].clamp(0, 1).numpy()
    return out


def phantom_volumes(slices: int = 9, size: int = 64, seed: int = 0) -> tuple:
    """An (MRI, CT) pair of volumes built from the phantom head slice, for use without the atlas.

    Slice ``k`` is :func:`dilran_lite.phantom.phantom_pair` shrunk about its centre by
    ``sqrt(1 - z_k^2)`` (``z`` from -0.8 to 0.8), so the head is a rounded solid that narrows
    towards the top and bottom. ``size x size x slices`` voxels of 1 x 1 x 5 mm scaled by
    ``256 / size`` in-plane, centred at (0, 0, 0) mm. MRI in [0, 1], CT in pseudo-HU.
    """
    import torch
    import torch.nn.functional as F

    from .phantom import phantom_pair

    sitk = require_sitk()
    pair = torch.stack(phantom_pair(seed, size))  # (2, 1, H, W)
    zs = np.linspace(-0.8, 0.8, slices)
    theta = torch.tensor([[[1.0 / r, 0, 0], [0, 1.0 / r, 0]] for r in np.sqrt(1 - zs**2)],
                         dtype=torch.float32)
    grid = F.affine_grid(theta, (slices, 1, size, size), align_corners=False)
    vols = [F.grid_sample(pair[i].expand(slices, 1, size, size), grid, align_corners=False)
            [:, 0].numpy() for i in range(2)]
    spacing = (256 / size, 256 / size, 5.0)
    out = []
    for arr in (vols[0], atlas_ct_to_hu(vols[1])):
        img = sitk.GetImageFromArray(arr.astype(np.float32))
        img.SetSpacing(spacing)
        img.SetOrigin(tuple(-(np.array(img.GetSize(), dtype=float) - 1) / 2 * np.array(spacing)))
        out.append(img)
    return out[0], out[1]

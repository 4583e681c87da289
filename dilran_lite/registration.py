"""Rigid and affine registration of a moving volume onto a fixed one by Mattes mutual information.

The transform ``T`` found maps a point of the fixed volume (mm) to the matching point of the moving
volume, as ITK's registration writes it: ``moving(T(p))`` lies on ``fixed(p)``. Resampling the
moving volume through ``T`` on the fixed grid puts it in the fixed volume's space.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .volumes import require_sitk

__all__ = [
    "RegistrationResult",
    "register",
    "resample_onto",
    "save_transform",
    "rigid_transform",
    "moved_copy",
    "tre_points",
    "rotation_angle",
    "expected_transform",
    "MISALIGNMENTS",
    "target_registration_error",
    "overlap_fraction",
    "no_finer_than",
    "head_mask",
    "write_atlas_example",
    "shift_mi",
]

KINDS = ("rigid", "affine")

_A, _S = 5.68, 15.0 / math.sqrt(3.0)  # three rotations of 5.68 degrees make one of 10.0
#: known rigid misalignments (rotations about x, y, z in degrees; shift in mm) of up to 10 degrees
#: and 15 mm: none, a moderate one, one axis at a time at the bound, three oblique at the bound
MISALIGNMENTS = (
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((5.0, -3.0, 4.0), (6.0, -8.0, 4.0)),
    ((10.0, 0.0, 0.0), (0.0, 0.0, 15.0)),
    ((0.0, 10.0, 0.0), (15.0, 0.0, 0.0)),
    ((0.0, 0.0, 10.0), (0.0, 15.0, 0.0)),
    ((_A, _A, _A), (_S, _S, _S)),
    ((-_A, _A, -_A), (_S, -_S, _S)),
    ((_A, -_A, -_A), (-_S, -_S, _S)),
)


@dataclass
class RegistrationResult:
    """A registration's transform (fixed -> moving points), final metric (negative Mattes MI,
    lower is better), iterations at the last level, stop condition and overlap (fraction of the
    fixed foreground that lands inside the moving foreground)."""

    transform: object
    metric: float
    iterations: int
    stop: str
    overlap: float
    levels: list = field(default_factory=list)


def _foreground(img, fraction: float = 0.1):
    """A mask of the voxels brighter than ``fraction`` of the way from min to max."""
    sitk = require_sitk()
    arr = sitk.GetArrayViewFromImage(img)
    lo, hi = float(arr.min()), float(arr.max())
    return sitk.BinaryThreshold(img, lo + fraction * (hi - lo), hi + 1.0, 1, 0)


def overlap_fraction(fixed, moving, transform) -> float:
    """Fraction of the fixed foreground whose points ``transform`` maps into the moving
    foreground (nearest neighbour)."""
    sitk = require_sitk()
    fm = sitk.GetArrayViewFromImage(_foreground(fixed)) > 0
    mm = sitk.Resample(_foreground(moving), fixed, transform, sitk.sitkNearestNeighbor, 0)
    n = int(fm.sum())
    return float((sitk.GetArrayViewFromImage(mm)[fm] > 0).sum() / n) if n else 0.0


def no_finer_than(moving, fixed):
    """``moving`` averaged over whole blocks of voxels (BinShrink) where it is finer than
    ``fixed`` by a factor of two or more along an axis: the same physical space, fewer voxels
    (a 0.5 mm CT registered onto a 1 mm MRI takes a quarter of the memory)."""
    sitk = require_sitk()
    factors = [max(1, int(f // m)) for f, m in zip(fixed.GetSpacing(), moving.GetSpacing())]
    return moving if factors == [1, 1, 1] else sitk.BinShrink(moving, factors)


def head_mask(img, margin_mm: float = 5.0):
    """The foreground (:func:`_foreground`) grown by ``margin_mm`` along each axis (at least one
    voxel): the voxels the metric samples when registering with a mask, the head and not the air
    around it."""
    sitk = require_sitk()
    radius = [max(1, int(round(margin_mm / s))) for s in img.GetSpacing()]
    return sitk.BinaryDilate(_foreground(img), radius)


def _initial(fixed, moving, kind: str):
    sitk = require_sitk()
    base = sitk.Euler3DTransform() if kind == "rigid" else sitk.AffineTransform(3)
    return sitk.CenteredTransformInitializer(
        fixed, moving, base, sitk.CenteredTransformInitializerFilter.GEOMETRY
    )


def _method(fixed, sampling: float, iterations: int, seed: int, bins: int, mask: bool):
    sitk = require_sitk()
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    if mask:
        r.SetMetricFixedMask(head_mask(fixed))
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(sampling, seed)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=iterations,
        relaxationFactor=0.7, gradientMagnitudeTolerance=1e-8,
    )
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetShrinkFactorsPerLevel([4, 2, 1])
    r.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return r


def register(
    fixed,
    moving,
    kind: str = "rigid",
    sampling: float = 0.1,
    iterations: int = 500,
    min_overlap: float = 0.5,
    max_metric: float = -0.2,
    seed: int = 1,
    bins: int = 32,
    mask: bool = True,
) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` (3-D ``SimpleITK.Image``): ``kind`` rigid (Euler3D)
    or affine, Mattes MI (``bins`` histogram bins, a random ``sampling`` fraction of the voxels;
    with ``mask`` only voxels of the fixed head, :func:`head_mask`), three levels (shrink
    4/2/1, smoothing 2/1/0 mm), started at the geometric centres.

    A ``UserError`` when the optimiser ran out of ``iterations`` at the last level, when less
    than ``min_overlap`` of the fixed foreground lands in the moving one, or when the final
    metric (negative MI) is above ``max_metric``: the volumes are not aligned.
    """
    sitk = require_sitk()
    if kind not in KINDS:
        raise UserError(f"registration {kind!r}: choose one of {', '.join(KINDS)}")
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = no_finer_than(sitk.Cast(moving, sitk.sitkFloat32), fixed)
    if kind == "affine":  # rigid first, then the affine from the rigid result
        rigid = register(fixed, moving, "rigid", sampling, iterations, min_overlap,
                         max_metric, seed, bins, mask)
        init = sitk.AffineTransform(3)
        init.SetMatrix(rigid.transform.GetMatrix())
        init.SetTranslation(rigid.transform.GetTranslation())
        init.SetCenter(rigid.transform.GetCenter())
    else:
        init = _initial(fixed, moving, kind)
    r = _method(fixed, sampling, iterations, seed, bins, mask)
    r.SetInitialTransform(init, inPlace=False)
    levels: list = []
    r.AddCommand(sitk.sitkMultiResolutionIterationEvent,
                 lambda: levels.append(r.GetOptimizerIteration()))
    try:
        out = r.Execute(fixed, moving)
    except RuntimeError as err:
        raise UserError(f"registration failed: {str(err).strip().splitlines()[-1]}") from err
    t = out.GetNthTransform(0) if hasattr(out, "GetNthTransform") else out
    res = RegistrationResult(
        transform=t, metric=float(r.GetMetricValue()), iterations=int(r.GetOptimizerIteration()),
        stop=r.GetOptimizerStopConditionDescription(), overlap=overlap_fraction(fixed, moving, t),
        levels=levels,
    )
    _check_result(res, iterations, min_overlap, max_metric)
    return res


def _check_result(res: RegistrationResult, iterations: int, min_overlap: float,
                  max_metric: float) -> None:
    msg = (f"final metric {res.metric:.3f}, {res.iterations} iterations, overlap "
           f"{res.overlap:.0%}")
    if res.iterations >= iterations:
        raise UserError(f"registration did not converge in {iterations} iterations ({msg}); "
                        "start closer (align the volumes roughly) or check the inputs")
    if res.overlap < min_overlap or res.metric > max_metric:
        raise UserError(f"registration failed: the volumes do not line up ({msg}); start "
                        "closer (align the volumes roughly) or check that they show one patient")


def resample_onto(moving, fixed, transform=None, default: float | None = None):
    """``moving`` resampled (linear) onto the grid of ``fixed`` through ``transform`` (fixed ->
    moving points; identity when None); outside the moving volume: ``default`` (its minimum)."""
    sitk = require_sitk()
    t = transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity)
    if default is None:
        default = float(sitk.GetArrayViewFromImage(moving).min())
    return sitk.Resample(moving, fixed, t, sitk.sitkLinear, default, sitk.sitkFloat32)


def save_transform(transform, path: str | os.PathLike) -> Path:
    """Write ``transform`` with ``SimpleITK.WriteTransform`` (.tfm/.txt/.h5), atomically."""
    sitk = require_sitk()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        sitk.WriteTransform(transform, str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def volume_centre(img) -> tuple:
    """The physical centre (mm) of a volume's grid."""
    size = np.array(img.GetSize(), dtype=float)
    return img.TransformContinuousIndexToPhysicalPoint(tuple((size - 1) / 2))


def rigid_transform(angles_deg: tuple, shift_mm: tuple, centre: tuple = (0.0, 0.0, 0.0)):
    """An Euler3D transform: rotations about x, y, z (degrees) around ``centre``, then a shift."""
    sitk = require_sitk()
    t = sitk.Euler3DTransform()
    t.SetCenter(tuple(float(c) for c in centre))
    t.SetRotation(*(math.radians(a) for a in angles_deg))
    t.SetTranslation(tuple(float(s) for s in shift_mm))
    return t


def moved_copy(img, truth, default: float | None = None):
    """A copy of ``img`` on its own grid, moved so that ``truth`` (fixed -> moving points) is the
    transform a registration of it onto ``img`` should find: ``moved(truth(p)) = img(p)``."""
    return resample_onto(img, img, truth.GetInverse(), default)


def tre_points(img, offsets: tuple = (50.0, 50.0, 25.0)) -> np.ndarray:
    """The eight points (8, 3) mm at (+-dx, +-dy, +-dz) around the volume's centre."""
    c = np.array(volume_centre(img))
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    return c + signs * np.array(offsets)


def rotation_angle(t) -> float:
    """The angle (degrees) of the rotation in a rigid or affine transform's matrix."""
    m = np.array(t.GetMatrix(), dtype=float).reshape(3, 3)
    return math.degrees(math.acos(float(np.clip((np.trace(m) - 1.0) / 2.0, -1.0, 1.0))))


def expected_transform(truth, base=None):
    """What a registration of a copy moved by ``truth`` should find when the fixed volume and the
    copy's source were themselves related by ``base`` (fixed -> source points, e.g. their own
    registration): ``truth(base(p))``; ``truth`` when ``base`` is None."""
    sitk = require_sitk()
    return truth if base is None else sitk.CompositeTransform([truth, base])


def target_registration_error(found, truth, points: np.ndarray) -> np.ndarray:
    """Distances (mm) between where ``found`` and ``truth`` map each of ``points`` (N, 3)."""
    return np.array([
        np.linalg.norm(np.subtract(found.TransformPoint(tuple(p)), truth.TransformPoint(tuple(p))))
        for p in np.asarray(points, dtype=float)
    ])


def write_atlas_example(
    folder: str | os.PathLike,
    series: str = "34",
    angles_deg: tuple = (5.0, -3.0, 4.0),
    shift_mm: tuple = (6.0, -8.0, 4.0),
    root: str | os.PathLike | None = None,
) -> dict:
    """Volumes made from the atlas, for registration and fusion without a download.

    Writes into ``folder``: ``mri.nii.gz``, ``ct.nii.gz`` and ``ct_moved.nii.gz`` (the CT moved by
    the rigid ``angles_deg``/``shift_mm`` around the centre), and the same as DICOM series
    ``mri/``, ``ct/``, ``ct_moved/``; the stacked series has an *assumed* 1 x 1 x 5 mm spacing
    (:func:`dilran_lite.volumes.atlas_volumes`). Returns the paths and ``"truth"``, the
    transform (fixed -> moving points) a registration of ``ct_moved`` onto ``ct`` should find.
    """
    from .volumes import atlas_volumes, write_dicom_series, write_nifti

    mri, ct = atlas_volumes(series, root=root)
    truth = rigid_transform(angles_deg, shift_mm, volume_centre(ct))
    moved = moved_copy(ct, truth, default=-1000.0)
    folder = Path(folder)
    out: dict = {"truth": truth}
    for name, img, modality in (("mri", mri, "MR"), ("ct", ct, "CT"), ("ct_moved", moved, "CT")):
        out[name] = write_nifti(img, folder / f"{name}.nii.gz")
        out[f"{name}_dicom"] = write_dicom_series(img, folder / name, modality=modality)
    return out


def shift_mi(fixed: np.ndarray, moving: np.ndarray, shifts) -> np.ndarray:
    """Mutual information (bits, :func:`dilran_lite.metrics.mi`) of ``fixed`` and ``moving``
    (2-D uint8, same shape (H, W)) with ``moving`` shifted by each of ``shifts`` (whole pixels
    along x, positive: to the right), over the columns where the two overlap: for a shift ``s``,
    ``fixed[:, x]`` is paired with ``moving[:, x - s]``. The registration cost is its negative.
    """
    from .metrics import mi

    width = fixed.shape[1]
    out = []
    for s in (int(v) for v in shifts):
        if abs(s) >= width:
            raise ValueError(f"shift {s} leaves no overlap in {width} columns")
        a = fixed[:, max(s, 0): width + min(s, 0)]
        b = moving[:, max(-s, 0): width - max(s, 0)]
        out.append(mi(a, b))
    return np.array(out, dtype=np.float64)

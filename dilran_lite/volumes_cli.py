"""The volume side of the command line: ``fuse`` with NIfTI/DICOM inputs, and ``register``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import UserError
from .volumes import NIFTI_SUFFIXES, is_volume_path

__all__ = [
    "add_volume_arguments",
    "add_register_parser",
    "wants_volume",
    "run_volume_fuse",
    "run_register",
]


def add_volume_arguments(q: argparse.ArgumentParser) -> None:
    """The options of ``fuse`` for volumes (.nii, .nii.gz, DICOM folders)."""
    q.add_argument(
        "--register", default="none", choices=["none", "rigid", "affine"],
        help="volumes: register the second onto the first before fusing (default none)",
    )
    q.add_argument("--window", default="brain",
                   help="volumes: CT window brain, bone, soft-tissue or W,L in HU (default brain)")
    q.add_argument("--series", default=None, help="volumes: the DICOM SeriesInstanceUID to read")


def add_register_parser(sub) -> argparse.ArgumentParser:
    """``dilran-lite register FIXED MOVING -o TRANSFORM [--resampled OUT]``."""
    q = sub.add_parser("register", help="register a moving volume onto a fixed one (Mattes MI)")
    q.add_argument("fixed", help="fixed volume: .nii, .nii.gz or a DICOM folder")
    q.add_argument("moving", help="moving volume: .nii, .nii.gz or a DICOM folder")
    q.add_argument("-o", "--output", required=True,
                   help="transform file (.tfm or .txt; maps fixed points to moving points)")
    q.add_argument("--resampled", default=None,
                   help="also write the moving volume on the fixed grid (.nii.gz or a folder)")
    q.add_argument("--kind", default="rigid", choices=["rigid", "affine"])
    q.add_argument("--series", default=None, help="the DICOM SeriesInstanceUID to read")
    q.set_defaults(func=run_register)
    return q


def wants_volume(args: argparse.Namespace) -> bool:
    """True when ``fuse`` was given two inputs that are volumes: a ``.nii``/``.nii.gz`` name
    among them, or two folders (DICOM series); a folder beside an image is the image path's
    error."""
    images = [Path(p) for p in getattr(args, "images", None) or []]
    if len(images) != 2:
        return False
    return any(p.name.lower().endswith(NIFTI_SUFFIXES) for p in images) or all(
        p.is_dir() for p in images
    )


def _read(path: str, series: str | None):
    from .volumes import list_dicom_series, read_volume

    p = Path(path)
    if series and p.is_dir() and series not in list_dicom_series(p):
        series = None  # the UID names a series of the other input
    return read_volume(p, series=series)


def _check_inputs(paths: list) -> None:
    for p in paths:
        if not Path(p).exists():
            raise UserError(f"{p}: no such file or folder")
        if not is_volume_path(p):
            raise UserError(f"{p}: not a volume; give .nii, .nii.gz or a DICOM folder for both")


def _align(fixed, moving, kind: str):
    """The transform (fixed -> moving points): registered, or the identity after a check
    that the volumes overlap in physical space."""
    from .registration import overlap_fraction, register
    from .volumes import require_sitk

    if kind != "none":
        res = register(fixed, moving, kind)
        print(f"registered ({kind}): metric {res.metric:.4f}, {res.iterations} iterations, "
              f"overlap {res.overlap:.0%}")
        return res.transform
    sitk = require_sitk()
    t = sitk.Transform(3, sitk.sitkIdentity)
    if overlap_fraction(fixed, moving, t) < 0.05:
        raise UserError("the volumes do not overlap in physical space (origins and sizes); "
                        "use --register rigid or check the headers")
    return t


def run_volume_fuse(args: argparse.Namespace, limit: float | None, load) -> int:
    """``fuse FIXED MOVING -o OUT`` for volumes: the first is the MRI (the fixed grid), the
    second the CT in HU (windowed by ``--window``); the output on the first's grid.
    ``load(args)`` returns the model (the CLI's loader), called after the inputs are read."""
    from .registration import resample_onto
    from .volumes import (
        array_to_volume,
        check_volume_output,
        fuse_volume,
        parse_window,
        require_sitk,
        scale_mri,
        window_ct,
        write_volume,
    )

    if getattr(args, "data", None):
        raise UserError("give either two volumes or --data DIR, not both")
    _check_inputs(args.images)
    parse_window(args.window)
    out = check_volume_output(args.output, args.images)
    fixed, moving = (_read(p, args.series) for p in args.images)
    t = _align(fixed, moving, args.register)
    sitk = require_sitk()
    on_grid = resample_onto(moving, fixed, t, default=-1000.0)
    a = scale_mri(sitk.GetArrayFromImage(fixed))
    b = window_ct(sitk.GetArrayFromImage(on_grid), args.window)
    model = load(args)
    fused = fuse_volume(model, a, b, args.strategy, max_memory=limit,
                        progress=not getattr(args, "quiet", False))
    print(f"wrote {write_volume(array_to_volume(fused, fixed), out)}")
    return 0


def run_register(args: argparse.Namespace) -> int:
    """``register FIXED MOVING -o TRANSFORM [--resampled OUT]``."""
    from .registration import register, resample_onto, save_transform
    from .volumes import check_volume_output, write_volume

    _check_inputs([args.fixed, args.moving])
    out = Path(args.output)
    if out.is_dir() or out.suffix.lower() not in (".tfm", ".txt", ".h5", ".hdf5"):
        raise UserError(f"transform {out}: give a file name ending in .tfm, .txt or .h5")
    for p in (args.fixed, args.moving):
        if out.resolve() == Path(p).resolve():
            raise UserError(f"output {out} is also an input; choose another name")
    if args.resampled:
        check_volume_output(args.resampled, [args.fixed, args.moving])
    fixed, moving = _read(args.fixed, args.series), _read(args.moving, args.series)
    res = register(fixed, moving, args.kind)
    print(f"registered ({args.kind}): metric {res.metric:.4f}, {res.iterations} iterations, "
          f"overlap {res.overlap:.0%}")
    print(f"wrote {save_transform(res.transform, out)}")
    if args.resampled:
        print(f"wrote {write_volume(resample_onto(moving, fixed, res.transform), args.resampled)}")
    return 0

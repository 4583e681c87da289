"""Registration accuracy on the atlas volumes: the TRE table, and timings of a large pair.

    python -m benchmarks.bench_volumes tre [--data ROOT]      # TRE of known rigid misalignments
    python -m benchmarks.bench_volumes size [--scale 1.0]     # 512x512x300 CT + 256x256x180 MRI

``tre``: series 34 stacked at an assumed 1 x 1 x 5 mm; the CT registered onto a copy of itself
moved by a known rigid transform (and the MRI onto the moved CT, the cross-modality case), for
:data:`dilran_lite.registration.MISALIGNMENTS` (up to 10 degrees and 15 mm) and for larger ones
(beyond the bound: some recovered, some refused); the target registration error at the eight
points (+-50, +-50, +-25) mm around the centre. ``--plain`` runs the registration without the head
mask and with 50 bins on a quarter of the voxels, for comparison.
``size``: synthetic volumes of the benchmark's size; time per stage and peak memory (ru_maxrss),
each in a fresh process, once on the cores as they are and once with every core kept busy by a
pure-Python loop (:func:`benchmarks.load.busy_cores`).
Results go to ``--out`` (JSON; default ``dilran_lite/results/benchmarks/volumes_<what>.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dilran_lite import registration as R
from dilran_lite import volumes as V
from dilran_lite.errors import UserError

SHIPPED = Path(__file__).resolve().parents[1] / "dilran_lite" / "results" / "benchmarks"
#: misalignments beyond the bound of 10 degrees and 15 mm
BEYOND = (
    ((8.0, -8.0, 10.0), (-10.0, 10.0, -10.0)),
    ((10.0, 10.0, 10.0), (15.0, 15.0, 15.0)),
    ((0.0, 0.0, 180.0), (0.0, 0.0, 0.0)),
    ((60.0, 0.0, 90.0), (0.0, 60.0, 40.0)),
)
PLAIN = {"bins": 50, "sampling": 0.25, "mask": False}


def tre_row(fixed, moving_source, fixed_name: str, angles, shift, points, base=None,
            **kw) -> dict:
    """One registration of ``moving_source`` moved by a known rigid transform onto ``fixed``: the
    TRE mean and max (mm) against that transform, and with ``base`` (the registration of
    ``fixed`` onto the unmoved source) also against it composed with ``base``: how well the
    known misalignment was recovered, whatever the two volumes' own alignment; or the error."""
    centre = R.volume_centre(moving_source)
    truth = R.rigid_transform(angles, shift, centre)
    moving = R.moved_copy(moving_source, truth, default=-1000.0)
    row = {"fixed": fixed_name, "angles_deg": [round(a, 2) for a in angles],
           "shift_mm": [round(s, 2) for s in shift],
           "rotation_deg": round(R.rotation_angle(truth), 1),
           "shift_norm_mm": round(float(np.linalg.norm(shift)), 1)}
    t0 = time.perf_counter()
    try:
        res = R.register(fixed, moving, "rigid", **kw)
    except UserError as err:
        row.update(error=str(err), seconds=round(time.perf_counter() - t0, 1))
        return row
    row["seconds"] = round(time.perf_counter() - t0, 1)
    tre = R.target_registration_error(res.transform, truth, points)
    row.update(tre_mean=round(float(tre.mean()), 2), tre_max=round(float(tre.max()), 2),
               metric=round(res.metric, 3), iterations=res.iterations,
               overlap=round(res.overlap, 2))
    if base is not None:
        rel = R.target_registration_error(res.transform, R.expected_transform(truth, base), points)
        row.update(tre_rel_mean=round(float(rel.mean()), 2), tre_rel_max=round(float(rel.max()), 2))
    return row


def _summary(rows: list[dict]) -> dict:
    """Per fixed volume, over the rows of a real misalignment within the bound: the mean TRE, the
    worst misalignment's mean TRE, the largest single point, and the same for the TRE of the
    misalignment (``rel``); ``not_moved``: the TRE of the unmoved pair."""
    out = {}
    for name in ("CT", "MRI"):
        mine = [r for r in rows if r["fixed"] == name and r["bound"] == "within"]
        moved = [r for r in mine if r["shift_norm_mm"] > 0 or r["rotation_deg"] > 0]
        out[name] = {
            "misalignments": len(moved),
            "mean_tre": round(float(np.mean([r["tre_mean"] for r in moved])), 2),
            "worst_case_mean": max(r["tre_mean"] for r in moved),
            "largest_point": max(r["tre_max"] for r in moved),
            "mean_tre_rel": round(float(np.mean([r["tre_rel_mean"] for r in moved])), 2),
            "worst_case_rel": max(r["tre_rel_mean"] for r in moved),
            "not_moved": next(r["tre_mean"] for r in mine if r not in moved),
        }
    return out


def tre_table(root: str | None, series: str = "34", plain: bool = False) -> dict:
    mri, ct = V.atlas_volumes(series, root=root)
    points, kw = R.tre_points(ct), (PLAIN if plain else {})
    bases = {"CT": R.register(ct, ct, "rigid", **kw).transform,
             "MRI": R.register(mri, ct, "rigid", **kw).transform}
    rows = []
    for bound, cases in (("within", R.MISALIGNMENTS), ("beyond", BEYOND)):
        for angles, shift in cases:
            for name, fixed in (("CT", ct), ("MRI", mri)):
                row = {"bound": bound, **tre_row(fixed, ct, name, angles, shift, points,
                                                 bases[name], **kw)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return {"series": series, "spacing_mm": list(ct.GetSpacing()), "size": list(ct.GetSize()),
            "settings": "plain" if plain else "default", "within_bound": _summary(rows),
            "load_avg_start": os.getloadavg()[0], "rows": rows}


def _synthetic(size: tuple, spacing: tuple, seed: int):
    sitk = V.require_sitk()
    x, y, z = (np.linspace(-1, 1, n, dtype=np.float32) for n in size)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij", sparse=True)
    arr = 1000 * (xx**2 / 0.7 + yy**2 / 0.5 + zz**2 / 0.8 < 1) - 1000
    arr = arr + 500 * np.exp(-((xx - 0.3) ** 2 + yy**2 + zz**2) / 0.05)
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin(tuple(-(np.array(size) - 1) / 2 * np.array(spacing)))
    return img


def size_benchmark(scale: float = 1.0) -> dict:
    """Time per stage and peak memory: 512x512x300 CT (0.5x0.5x0.6 mm) and 256x256x180 MRI."""
    from dilran_lite.pretrained import load_weights

    ct_size = tuple(int(round(n * scale)) for n in (512, 512, 300))
    mri_size = tuple(int(round(n * scale)) for n in (256, 256, 180))
    out = {"ct": ct_size, "mri": mri_size, "load_avg_start": os.getloadavg()[0]}
    t = time.perf_counter()
    ct = _synthetic(ct_size, (0.5 / scale, 0.5 / scale, 0.6 / scale), 0)
    mri = _synthetic(mri_size, (1.0 / scale, 1.0 / scale, 1.0 / scale), 1)
    out["make_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    res = R.register(mri, ct, "rigid", sampling=0.05)
    out["register_s"], out["iterations"] = round(time.perf_counter() - t, 1), res.iterations
    t = time.perf_counter()
    sitk = V.require_sitk()
    on_grid = R.resample_onto(ct, mri, res.transform, default=-1000.0)
    a = V.scale_mri(sitk.GetArrayFromImage(mri))
    b = V.window_ct(sitk.GetArrayFromImage(on_grid), "brain")
    out["resample_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    V.fuse_volume(load_weights("dilran-lite"), a, b, max_memory=4 * 2**30, progress=False)
    out["fuse_s"] = round(time.perf_counter() - t, 1)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    out["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(out))
    return out


def size_runs(scale: float) -> dict:
    """:func:`size_benchmark` in a fresh process, idle and with every core busy."""
    from benchmarks.load import busy_cores

    cmd = [sys.executable, "-m", "benchmarks.bench_volumes", "size-one", "--scale", str(scale)]
    root = Path(__file__).resolve().parents[1]

    def one() -> dict:
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    result = {"cores": os.cpu_count(), "budget_gb": 4, "idle": one()}
    with busy_cores(os.cpu_count() or 1):
        result["busy"] = one()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["tre", "size", "size-one"])
    p.add_argument("--data", default=None, help="data root holding harvard-mri-ct")
    p.add_argument("--scale", type=float, default=1.0, help="size: shrink every side by this")
    p.add_argument("--plain", action="store_true", help="tre: no mask, 50 bins, 25%% sampling")
    p.add_argument("--out", default=None, help="JSON file to write")
    args = p.parse_args()
    if args.what == "tre":
        result = tre_table(args.data, plain=args.plain)
        default = "volumes_tre_plain.json" if args.plain else "volumes_tre.json"
    elif args.what == "size-one":
        size_benchmark(args.scale)
        return
    else:
        result, default = size_runs(args.scale), "volumes_size.json"
    out = Path(args.out) if args.out else SHIPPED / default
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result.get("within_bound", result)))


if __name__ == "__main__":
    main()

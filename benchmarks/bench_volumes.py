"""Registration accuracy on the atlas volumes: the TRE table, and optional timings of a large pair.

    python benchmarks/bench_volumes.py tre [--data ROOT]      # TRE of known rigid misalignments
    python benchmarks/bench_volumes.py size [--scale 1.0]     # 512x512x300 CT + 256x256x180 MRI

``tre``: series 34 stacked at an assumed 1 x 1 x 5 mm; the CT registered onto a copy of itself
moved by a known rigid transform (and the MRI onto the moved CT, the cross-modality case); the
target registration error at the eight points (+-50, +-50, +-25) mm around the centre.
``size``: synthetic volumes of the benchmark's size; time per stage and peak memory (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from dilran_lite import registration as R
from dilran_lite import volumes as V
from dilran_lite.errors import UserError

CASES = [
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((5.0, -3.0, 4.0), (6.0, -8.0, 4.0)),
    ((-10.0, 0.0, 0.0), (0.0, 0.0, 15.0)),
    ((0.0, 10.0, -5.0), (15.0, -10.0, 0.0)),
    ((8.0, -8.0, 10.0), (-10.0, 10.0, -10.0)),
    ((10.0, 10.0, 10.0), (15.0, 15.0, 15.0)),
    ((0.0, 0.0, 180.0), (0.0, 0.0, 0.0)),
    ((60.0, 0.0, 90.0), (0.0, 60.0, 40.0)),
]


def tre_table(root: str | None, series: str = "34") -> list[dict]:
    mri, ct = V.atlas_volumes(series, root=root)
    centre, points = R.volume_centre(ct), R.tre_points(ct)
    rows = []
    for fixed_name, fixed in (("CT", ct), ("MRI", mri)):
        for angles, shift in CASES if fixed_name == "CT" else CASES[:3]:
            truth = R.rigid_transform(angles, shift, centre)
            moving = R.moved_copy(ct, truth, default=-1000.0)
            t0 = time.perf_counter()
            row = {"fixed": fixed_name, "angles_deg": angles, "shift_mm": shift}
            try:
                res = R.register(fixed, moving, "rigid")
                tre = R.target_registration_error(res.transform, truth, points)
                row.update(tre_mean=round(float(tre.mean()), 2), tre_max=round(float(tre.max()), 2),
                           metric=round(res.metric, 3), iterations=res.iterations,
                           overlap=round(res.overlap, 2))
            except UserError as err:
                row.update(error=str(err))
            row["seconds"] = round(time.perf_counter() - t0, 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


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
    out, t = {"ct": ct_size, "mri": mri_size}, time.perf_counter()
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
    print(json.dumps(out))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["tre", "size"])
    p.add_argument("--data", default=None, help="data root holding harvard-mri-ct")
    p.add_argument("--scale", type=float, default=1.0, help="size: shrink every side by this")
    args = p.parse_args()
    if args.what == "tre":
        tre_table(args.data)
    else:
        size_benchmark(args.scale)


if __name__ == "__main__":
    main()

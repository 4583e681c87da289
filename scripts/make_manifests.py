"""Regenerate dilran_lite/manifests/<pairs>.json from the atlas folders in ../shared/data.

Dev-only: run from the repository root with ``python scripts/make_manifests.py [DATA_ROOT]``.
Each manifest holds the SHA-256 of every file (from the folder's sha256.json, re-checked against
the files, which must all be present), its size in bytes (the downloader refuses a file as soon
as it passes that size), the splits (splits.json) and the public source the downloader
fetches from.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
OUT = REPO / "dilran_lite" / "manifests"

# github.com/xianming-gu/Havard-Medical-Image-Fusion-Datasets, pinned to the commit whose file
# listing was checked: folders CT-MRI/, PET-MRI/, SPECT-MRI/, each with <MODALITY>/<NAME>.png,
# the same names as the local layout (only the top folder differs).
REPO_URL = "https://github.com/xianming-gu/Havard-Medical-Image-Fusion-Datasets"
COMMIT = "efa50b7a617bacf2ff29dd7651171c286cec5727"
RAW = (
    f"https://raw.githubusercontent.com/xianming-gu/Havard-Medical-Image-Fusion-Datasets/{COMMIT}/"
)

DATASETS = {
    "mri-ct": ("harvard-mri-ct", ("MRI", "CT"), "CT-MRI"),
    "mri-pet": ("harvard-mri-pet", ("MRI", "PET"), "PET-MRI"),
    "mri-spect": ("harvard-mri-spect", ("MRI", "SPECT"), "SPECT-MRI"),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(pairs: str, data: Path) -> dict:
    folder, modalities, remote = DATASETS[pairs]
    src = data / folder
    sums = json.loads((src / "sha256.json").read_text())
    splits = json.loads((src / "splits.json").read_text())
    sizes = {}
    for rel, digest in sums.items():
        path = src / rel
        if not path.is_file():
            raise SystemExit(f"{path} not found: the manifest needs every file's size")
        if sha256(path) != digest:
            raise SystemExit(f"{path}: checksum differs from {src / 'sha256.json'}")
        sizes[rel] = path.stat().st_size
    names = sorted({rel.split("/", 1)[1] for rel in sums})
    for m in modalities:
        missing = [n for n in names if f"{m}/{n}" not in sums]
        if missing:
            raise SystemExit(f"{src}: {m}/ lacks {missing[:5]}")
    return {
        "pairs": pairs,
        "dataset": folder,
        "modalities": list(modalities),
        "n_pairs": len(names),
        "source": {
            "repository": REPO_URL,
            "commit": COMMIT,
            "base_url": RAW,
            "path_template": remote + "/{modality}/{name}",
            "citation": "The Whole Brain Atlas, K. A. Johnson and J. A. Becker, Harvard Medical "
            "School, https://www.med.harvard.edu/aanlib/",
        },
        "sha256": dict(sorted(sums.items())),
        "size": dict(sorted(sizes.items())),
        "splits": splits,
    }


def main(argv: list[str]) -> None:
    data = Path(argv[0]) if argv else DEFAULT_DATA
    OUT.mkdir(parents=True, exist_ok=True)
    for pairs in DATASETS:
        manifest = build(pairs, data)
        out = OUT / f"{pairs}.json"
        out.write_text(json.dumps(manifest, indent=1) + "\n")
        n_files = len(manifest["sha256"])
        print(f"{out.relative_to(REPO)}: {manifest['n_pairs']} pairs, {n_files} files")


if __name__ == "__main__":
    main(sys.argv[1:])

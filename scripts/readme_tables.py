"""Print the README's result tables (Markdown) from the shipped Table 2 and beyond_* CSVs.

Usage: python scripts/readme_tables.py [RESULTS_DIR]   (default: dilran_lite/results)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

COLUMNS = ["PSNR", "SSIM", "MI", "FSIM", "EN", "Qabf", "VIF"]
DIGITS = {"PSNR": 2, "MI": 2, "EN": 2}


def markdown_table(csv: Path) -> str:
    """One Markdown row per method of a ``table2_<split>.csv``, blanks where nothing was quoted."""
    df = pd.read_csv(csv)
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for _, row in df.iterrows():
        name = row["method"] + (f" (`{row['weights']}`)" if isinstance(row["weights"], str) else "")
        cells = ["" if pd.isna(row[c]) else f"{row[c]:.{DIGITS.get(c, 3)}f}" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BEYOND = ["EN", "SD", "SF", "MI", "SCD", "VIF", "Qabf", "SSIM"]
BEYOND_ROWS = ["max", "best other", "learned / best", "wins"]


def beyond_markdown(csv: Path) -> str:
    """The learned layer's row of a ``beyond_<key>.csv`` with the pixel maximum, the best of
    every other method, the ratio and the wins (1 = beats every other method)."""
    df = pd.read_csv(csv, index_col=0)
    mine = [i for i in df.index if i.startswith("learned fusion")]
    lines = ["| | " + " | ".join(BEYOND) + " |", "|---" * (len(BEYOND) + 1) + "|"]
    for name in ["max", *mine, *BEYOND_ROWS[1:]]:
        row = df.loc[name, BEYOND].astype(float)
        digits = 0 if name == "wins" else 3
        lines.append(f"| {name} | " + " | ".join(f"{v:.{digits}f}" for v in row) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path("dilran_lite/results")
    for split in ("series", "paper"):
        print(f"<!-- {split}: python scripts/readme_tables.py -->")
        print(markdown_table(root / f"table2_{split}.csv"), end="\n\n")
    for key in ("series", "paper", "mri-pet", "mri-spect"):
        if (root / f"beyond_{key}.csv").is_file():
            print(f"<!-- beyond, {key}: python scripts/readme_tables.py -->")
            print(beyond_markdown(root / f"beyond_{key}.csv"), end="\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

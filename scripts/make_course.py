"""Write a course's copy of the chapter notebooks, its install source and data mirror baked in.

Usage:
    python scripts/make_course.py --out DIR [--install SOURCE] [--mirror URL] [--colab URL]

The settings come from `course.yml` (its `course:` mapping: install, mirror, colab); the options
win over it. Each chapter notebooks/NN_*.ipynb is copied to DIR/NN_*.ipynb with its setup cell
regenerated (INSTALL and MIRROR set) and its Open-in-Colab badge pointing at `colab` (removed
when `colab` is empty). The book's own notebooks are not changed.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import yaml

REPO = Path(__file__).resolve().parents[1]
COURSE_FILE = REPO / "course.yml"


def _sync():
    spec = importlib.util.spec_from_file_location(
        "sync_notebooks", REPO / "scripts" / "sync_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("sync_notebooks", module)
    spec.loader.exec_module(module)
    return module


def read_course(path: Path = COURSE_FILE) -> dict[str, str]:
    """The ``course:`` settings of ``path`` (install, mirror, colab); empty strings when absent."""
    course = {}
    if path.is_file():
        try:
            course = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("course") or {}
        except (yaml.YAMLError, AttributeError) as err:
            raise SystemExit(f"make_course: {path} is not a YAML mapping: {err}") from None
    return {k: str(course.get(k) or "").strip() for k in ("install", "mirror", "colab")}


def install_source(value: str) -> str:
    """What pip installs: a GitHub address becomes ``dilran-lite @ git+ADDRESS``; the rest as is."""
    if re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+(@[\w./-]+)?/?", value):
        return f"dilran-lite @ git+{value.rstrip('/')}"
    return value


def check(settings: dict[str, str]) -> None:
    """Refuse, in one line, a mirror or a Colab address that is not a URL."""
    mirror, colab = settings["mirror"], settings["colab"]
    if mirror and not re.match(r"(https?|file)://", mirror):
        raise SystemExit(
            f"make_course: mirror must be an http(s):// or file:// URL, got {mirror!r}"
        )
    if colab and not colab.startswith("https://colab.research.google.com/"):
        raise SystemExit(
            f"make_course: colab must be a https://colab.research.google.com/ address, "
            f"got {colab!r}"
        )


def course_notebook(path: Path, out: Path, settings: dict[str, str]) -> None:
    """Write ``out``: the chapter ``path`` with the course's setup cell and badge."""
    sync = _sync()
    url, branch = sync.config()
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if sync.SETUP_KEY in c.metadata)
    pairs = tuple(cell.metadata[sync.SETUP_KEY]["pairs"])
    source = sync.setup_source(
        url, branch, pairs, install=install_source(settings["install"]), mirror=settings["mirror"]
    )
    cell.source = source
    first = nb.cells[0]
    if first.cell_type == "markdown" and "colab-badge" in first.source:
        if settings["colab"]:
            link = f"{settings['colab'].rstrip('/')}/{path.name}"
            first.source = f"[![Open In Colab]({sync.COLAB_BADGE})]({link})"
        else:
            del nb.cells[0]
    nbformat.validate(nb)
    tmp = out.with_suffix(".part")
    nbformat.write(nb, tmp)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the course's copy")
    parser.add_argument("--install", help="wheel URL, package name or repository address")
    parser.add_argument("--mirror", help="base URL of a copy of the atlas (DILRAN_MIRROR)")
    parser.add_argument("--colab", help="Colab address of the published folder (badges)")
    parser.add_argument("--config", type=Path, default=COURSE_FILE, help="default: course.yml")
    args = parser.parse_args(argv)
    settings = read_course(args.config)
    for key in settings:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key).strip()
    check(settings)
    if args.out.resolve() == (REPO / "notebooks").resolve():
        raise SystemExit("make_course: --out must not be the book's notebooks/ folder")
    args.out.mkdir(parents=True, exist_ok=True)
    chapters = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
    for path in chapters:
        course_notebook(path, args.out / path.name, settings)
    print(
        f"make_course: {len(chapters)} notebooks in {args.out} (install: "
        f"{install_source(settings['install']) or 'the repository'}; mirror: "
        f"{settings['mirror'] or 'the atlas source'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

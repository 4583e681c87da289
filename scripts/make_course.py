"""Write a course's copy of the chapter notebooks, its install source and data mirror baked in.

Usage:
    python scripts/make_course.py --out DIR [--install SOURCE] [--mirror URL] [--colab URL]
                                  [--students] [--book URL]

The settings come from `course.yml` (its `course:` mapping: install, mirror, colab, students,
book); the options win over it. Each chapter notebooks/NN_*.ipynb is copied to DIR/NN_*.ipynb with
its setup cell regenerated (INSTALL and MIRROR set) and its Open-in-Colab badge pointing at `colab`
(removed when `colab` is empty). With `--students` (or `students: true`) it writes the copies
students get: every solution cell (tag `exercise-solution`) is replaced by a markdown cell linking
to the chapter's page in the online book (`book`; empty: the GitHub Pages address of
`_config.yml`'s repository, https://OWNER.github.io/NAME), where the solution is. The book's own
notebooks are not changed.
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
SETTINGS = ("install", "mirror", "colab", "book")
SOLUTION_TAG = "exercise-solution"
LINK_TAG = "exercise-solution-link"


def _sync():
    spec = importlib.util.spec_from_file_location(
        "sync_notebooks", REPO / "scripts" / "sync_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("sync_notebooks", module)
    spec.loader.exec_module(module)
    return module


def read_course(path: Path = COURSE_FILE) -> dict[str, str]:
    """The ``course:`` settings of ``path`` (install, mirror, colab, book: strings, empty when
    absent; students: "1" when true, else "")."""
    course = {}
    if path.is_file():
        try:
            course = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("course") or {}
        except (yaml.YAMLError, AttributeError) as err:
            raise SystemExit(f"make_course: {path} is not a YAML mapping: {err}") from None
    settings = {k: str(course.get(k) or "").strip() for k in SETTINGS}
    students = course.get("students", False)
    if not isinstance(students, bool):
        raise SystemExit(f"make_course: {path}: students must be true or false, got {students!r}")
    settings["students"] = "1" if students else ""
    return settings


def book_address(value: str, url: str) -> str:
    """The online book's address: ``value``, or the GitHub Pages address of the repository
    ``url`` (https://github.com/OWNER/NAME -> https://OWNER.github.io/NAME)."""
    if value:
        return value.rstrip("/")
    owner, name = url.removeprefix("https://github.com/").split("/")[:2]
    return f"https://{owner.lower()}.github.io/{name}"


def solution_link(chapter: str, title: str, book: str) -> nbformat.NotebookNode:
    """The markdown cell that stands in a student's copy where a solution cell was."""
    page = f"{book}/notebooks/{chapter}.html"
    cell = nbformat.v4.new_markdown_cell(
        f"**Solution:** not in your copy. It is on this chapter's page in the book, "
        f"[{title}]({page}), folded under the exercise. Try the exercise yourself first; the "
        f"check below tells you when your code is right."
    )
    cell.metadata["tags"] = [LINK_TAG]
    return cell


def strip_solutions(nb: nbformat.NotebookNode, chapter: str, book: str) -> int:
    """Replace every solution cell of ``nb`` by :func:`solution_link`; returns how many."""
    title = next(
        (line.lstrip("# ").strip() for c in nb.cells if c.cell_type == "markdown"
         for line in c.source.splitlines() if line.startswith("# ")),
        chapter,
    )
    count = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and SOLUTION_TAG in cell.metadata.get("tags", []):
            nb.cells[i] = solution_link(chapter, title, book)
            count += 1
    return count


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
    book = settings.get("book", "")
    if book and not book.startswith(("https://", "http://")):
        raise SystemExit(f"make_course: book must be an http(s):// address, got {book!r}")
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
    extras = tuple(cell.metadata[sync.SETUP_KEY].get("extras", ()))
    source = sync.setup_source(
        url, branch, pairs, install=install_source(settings["install"]), mirror=settings["mirror"],
        extras=extras,
    )
    cell.source = source
    first = nb.cells[0]
    if first.cell_type == "markdown" and "colab-badge" in first.source:
        if settings["colab"]:
            link = f"{settings['colab'].rstrip('/')}/{path.name}"
            first.source = f"[![Open In Colab]({sync.COLAB_BADGE})]({link})"
        else:
            del nb.cells[0]
    if settings.get("students"):
        strip_solutions(nb, path.stem, book_address(settings.get("book", ""), url))
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
    parser.add_argument("--book", help="address of the online book (solution links)")
    parser.add_argument(
        "--students", action="store_true", default=None,
        help="the students' copy: solution cells replaced by a link to the book",
    )
    parser.add_argument("--config", type=Path, default=COURSE_FILE, help="default: course.yml")
    args = parser.parse_args(argv)
    settings = read_course(args.config)
    for key in SETTINGS:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key).strip()
    if args.students:
        settings["students"] = "1"
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
        f"{settings['mirror'] or 'the atlas source'}"
        f"{'; students: solutions replaced by links to the book' if settings['students'] else ''})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rewrite the MyST roles of the chapters' markdown cells as plain Markdown links.

Usage:
    python scripts/rewrite_roles.py           # rewrite the markdown cells that hold a role
    python scripts/rewrite_roles.py --check   # exit 1, listing them, when one holds a role

Jupyter and Colab show a MyST role (``{term}`MRI` ``) as raw text; a Markdown link reads the same
everywhere, and the book resolves a relative link to a ``.md`` page as a link to that page:
- ``{term}`MRI` ``, ``{term}`text <Term>` `` -> ``[MRI](../book/glossary.md)`` (the glossary; an
  anchor such as ``#term-MRI`` is not a heading of that page, and the book build warns on it);
- ``{cite:p}`a,b` `` -> ``([Zhou et al. 2022](../book/references.md); [...](...))`` and
  ``{cite:t}`a` `` -> ``[Zhou et al. (2022)](../book/references.md)``, names and years from
  ``book/references.bib``;
- ``{doc}`../book/page` `` -> ``[the page's title](../book/page.md)``, and ``{ref}`label` `` ->
  ``[the section's title](../book/page.md)`` (the page that holds ``(label)=``).
Only markdown cells holding a role are changed; code cells and outputs are left alone.
"""

from __future__ import annotations

import argparse
import re
import sys
from functools import lru_cache
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
BOOK = REPO / "book"
ROLE = re.compile(r"\{(term|cite:p|cite:t|cite|ref|doc|numref|eq)\}`([^`]+)`")
GLOSSARY = "../book/glossary.md"
REFERENCES = "../book/references.md"


@lru_cache(maxsize=1)
def bibliography() -> dict[str, str]:
    """Citation key -> "Zhou et al. 2022" (one author: "Summers 2003"; two: "A and B 2004")."""
    from pybtex.database import parse_file

    out = {}
    for key, entry in parse_file(str(BOOK / "references.bib")).entries.items():
        people = entry.persons.get("author") or entry.persons.get("editor") or []
        last = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in people]
        names = (
            last[0]
            if len(last) == 1
            else f"{last[0]} and {last[1]}"
            if len(last) == 2
            else f"{last[0]} et al."
            if last
            else key
        )
        out[key] = f"{names} {entry.fields.get('year', 'n.d.')}"
    return out


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    raise SystemExit(f"rewrite_roles: {path.relative_to(REPO)} has no '# ' title")


def _label(label: str) -> tuple[str, str]:
    """(relative link, section title) of the ``(label)=`` target in book/*.md."""
    for page in sorted(BOOK.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() == f"({label})=":
                heading = next(ln for ln in lines[i + 1 :] if ln.startswith("#"))
                return f"../book/{page.name}", heading.lstrip("#").strip()
    raise SystemExit(f"rewrite_roles: no ({label})= target in book/*.md")


def _cite(keys: str, textual: bool) -> str:
    bib = bibliography()
    parts = []
    for key in (k.strip() for k in keys.split(",")):
        if key not in bib:
            raise SystemExit(f"rewrite_roles: citation key {key!r} is not in book/references.bib")
        text = re.sub(r" (\S+)$", r" (\1)", bib[key]) if textual else bib[key]
        parts.append(f"[{text}]({REFERENCES})")
    return "; ".join(parts) if textual else "(" + "; ".join(parts) + ")"


def _replace(match: re.Match) -> str:
    role, body = match.group(1), match.group(2)
    explicit = re.fullmatch(r"(.+?)\s*<([^<>]+)>", body)
    text, target = (explicit.group(1), explicit.group(2)) if explicit else (body, body)
    if role == "term":
        return f"[{text}]({GLOSSARY})"
    if role in ("cite:p", "cite"):
        return _cite(target, textual=False)
    if role == "cite:t":
        return _cite(target, textual=True)
    if role == "doc":
        page = (NOTEBOOKS / target).resolve().with_suffix(".md")
        if not page.is_file():
            raise SystemExit(f"rewrite_roles: {{doc}}`{target}` names no .md page")
        rel = "../" + str(page.relative_to(REPO))
        return f"[{text if explicit else _title(page)}]({rel})"
    if role == "ref":
        rel, title = _label(target)
        return f"[{text if explicit else title}]({rel})"
    raise SystemExit(f"rewrite_roles: no plain-Markdown form for {match.group(0)}")


def rewrite(text: str) -> str:
    """``text`` with every role rewritten as a plain Markdown link."""
    return ROLE.sub(_replace, text)


def role_cells(path: Path) -> list[int]:
    """Indices of the markdown cells of ``path`` that hold a role."""
    nb = nbformat.read(path, as_version=4)
    return [
        i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and ROLE.search(c.source)
    ]


def rewrite_notebook(path: Path) -> int:
    """Rewrite the role-bearing markdown cells of ``path`` in place; the number of cells changed."""
    nb = nbformat.read(path, as_version=4)
    changed = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown" and ROLE.search(cell.source):
            cell.source = rewrite(cell.source)
            changed += 1
    if changed:
        tmp = path.with_suffix(".part")
        nbformat.write(nb, tmp)
        tmp.replace(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report; exit 1 on a role")
    args = parser.parse_args(argv)
    chapters = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    if args.check:
        bad = [f"{p.name} cell {i}" for p in chapters for i in role_cells(p)]
        if bad:
            print(f"rewrite_roles: MyST roles in {', '.join(bad)}", file=sys.stderr)
            return 1
        print("rewrite_roles: no MyST role in the chapters' markdown cells")
        return 0
    counts = {p.name: rewrite_notebook(p) for p in chapters}
    done = {k: v for k, v in counts.items() if v}
    print(f"rewrite_roles: {sum(done.values())} cell(s) rewritten in {len(done)} notebook(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

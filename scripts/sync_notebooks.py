"""Generate everything that names the repository from one place: `_config.yml`'s `repository.url`.

Usage:
    python scripts/sync_notebooks.py           # rewrite what disagrees
    python scripts/sync_notebooks.py --check   # exit 1, listing the files, when one disagrees

What it writes:
- in every chapter notebook (notebooks/NN_*.ipynb): the first cell (markdown, tag `remove-cell`),
  the Open-in-Colab badge; and the setup cell after the title (code, tag `remove-input`), from
  SETUP_TEMPLATE: on Colab it installs the package (from the repository, or from INSTALL when a
  course copy sets one: scripts/make_course.py) and imports it, and stops with one line saying
  what was tried and what to do when that fails; MIRROR (a course's DILRAN_MIRROR) is set; then
  `dilran_lite.notebook.setup()` says which mode runs and how to switch,
  fetches the atlas (or says the phantom is used) and prints how the page was executed.
  The setup cell keeps its outputs while its `RUN = setup(...)` line does not change.
- in README.md, book/running.md and notebooks/_chapter_template.md: every `git clone URL`,
  `git+URL@BRANCH` and Colab link, rewritten to the configured URL and branch, and every copy of
  the setup cell (a ```python block starting `# Setup. On Colab:`), regenerated.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import yaml

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
TEXT_FILES = ["README.md", "book/running.md", "notebooks/_chapter_template.md"]
SETUP_KEY = "dilran_setup"  # cell metadata key that marks the generated setup cell
TIMINGS = NOTEBOOKS / "timings.json"  # measured runs (scripts/execute_notebooks.py writes it)
TIME_LINE = re.compile(r"^\*\*Time:\*\*.*$", re.MULTILINE)
ESTIMATE = re.compile(r"Working through the text and the exercises: about (\d+) minutes")
DEFAULT_MINUTES = 60  # a chapter's study-time estimate when its page gives none
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"

BADGE_TEMPLATE = "[![Open In Colab]({badge})]({colab}/notebooks/{name})"

SETUP_TEMPLATE = """\
# Setup. On Colab: install dilran-lite from INSTALL (a course copy sets it), then import it.
import os
import sys

INSTALL = {install}  # a wheel URL, a package name or "name @ git+URL"; empty: the repository
MIRROR = {mirror}  # a copy of the atlas (DILRAN_MIRROR); empty: the atlas's own source
if MIRROR:
    os.environ["DILRAN_MIRROR"] = MIRROR
if "google.colab" in sys.modules and "dilran_lite" not in sys.modules:
    import importlib
    import subprocess

    class SetupFailed(Exception):
        def _render_traceback_(self):
            return [f"SetupFailed: {{self}}"]

    SOURCE = INSTALL or "dilran-lite{extras} @ git+{url}@{branch}"
    print(f"Installing dilran-lite from {{SOURCE}} ...")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", SOURCE],
                         capture_output=True, text=True)
    importlib.invalidate_caches()
    try:
        if pip.returncode != 0:
            said = [ln for ln in pip.stderr.splitlines() if ln.startswith("ERROR")]
            raise ImportError((said or pip.stderr.strip().splitlines() or ["pip failed"])[-1])
        import dilran_lite  # noqa: F401
    except ImportError as err:
        raise SetupFailed(
            f"could not install dilran-lite from {{SOURCE!r}} ({{err}}). Check that address, "
            "or set INSTALL to a wheel URL, or use your course's copy of the notebooks."
        ) from None
# os.environ["DILRAN_QUICK"] = "0"  # full mode on a CPU (slow); "1": quick mode on a GPU

from dilran_lite.notebook import setup

RUN = setup({pairs})"""


def config() -> tuple[str, str]:
    """(repository URL without a trailing slash, branch) from _config.yml."""
    cfg = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
    repo = cfg.get("repository") or {}
    url = str(repo.get("url", "")).rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise SystemExit(
            f"_config.yml: repository.url must be https://github.com/OWNER/NAME, got {url!r}"
        )
    return url, str(repo.get("branch") or "main")


def colab_base(url: str, branch: str) -> str:
    """https://colab.research.google.com/github/OWNER/NAME/blob/BRANCH"""
    owner_name = url.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_name}/blob/{branch}"


def chapters() -> list[Path]:
    return sorted(p for p in NOTEBOOKS.glob("[0-9]*.ipynb"))


def chapter_pairs(nb: nbformat.NotebookNode) -> tuple[str, ...]:
    """The atlases a chapter reads: MRI-CT, plus MRI-PET and MRI-SPECT when it uses them."""
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and not _is_setup(c))
    extra = tuple(p for p in ("mri-pet", "mri-spect") if f'"{p}"' in text or f"'{p}'" in text)
    return ("mri-ct", *extra)


def setup_source(
    url: str, branch: str, pairs: tuple[str, ...], install: str = "", mirror: str = "",
    extras: tuple[str, ...] = (),
) -> str:
    """The setup cell's source; ``install`` and ``mirror`` are a course copy's settings;
    ``extras``: the package's optional extras the chapter needs (e.g. ``volumes``)."""
    arg = "" if pairs == ("mri-ct",) else "pairs=(" + ", ".join(f'"{p}"' for p in pairs) + ")"
    return SETUP_TEMPLATE.format(
        url=url, branch=branch, pairs=arg, install=json.dumps(install), mirror=json.dumps(mirror),
        extras=f"[{','.join(extras)}]" if extras else "",
    )


def chapter_extras(nb: nbformat.NotebookNode) -> tuple[str, ...]:
    """The extras named in the setup cell's metadata (``"dilran_setup": {"extras": [...]}``)."""
    cell = next((c for c in nb.cells if _is_setup(c)), None)
    return tuple(cell.metadata.get(SETUP_KEY, {}).get("extras", ())) if cell else ()


def _run_line(source: str) -> str:
    """The ``RUN = setup(...)`` line of a setup cell (what makes its outputs)."""
    return next((ln for ln in source.splitlines() if ln.startswith("RUN = ")), "")


def _is_setup(cell) -> bool:
    if cell.cell_type != "code":
        return False
    if SETUP_KEY in cell.metadata:
        return True
    return "google.colab" in cell.source and "%pip install" in cell.source


def _set_tags(cell, tags: list[str]) -> None:
    cell.metadata["tags"] = tags


def _duration(seconds: float) -> str:
    """``42 s``, ``14 min``, ``1 h 5 min``: a wall time rounded for reading."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def time_line(runs: dict, minutes: int) -> str:
    """A chapter's **Time:** line from its measured runs (notebooks/timings.json entries) and its
    study-time estimate in minutes."""
    parts = []
    cpu = {k.rsplit("-", 1)[0]: v for k, v in runs.items() if k.endswith("-cpu")}
    if cpu:
        cores = max(v["cpu_cores"] for v in cpu.values())
        said = []
        if "quick-atlas" in cpu:
            said.append(f"quick mode {_duration(cpu['quick-atlas']['seconds'])} with the atlas")
        if "quick-phantom" in cpu:
            said.append(f"{_duration(cpu['quick-phantom']['seconds'])} with the built-in phantom")
        if "full-atlas" in cpu:
            said.append(f"full mode {_duration(cpu['full-atlas']['seconds'])}")
        parts.append(f"on a CPU with {cores} cores, " + ", ".join(said))
    gpu = runs.get("full-atlas-gpu")
    if gpu:
        parts.append(f"on a {gpu['device']}, full mode {_duration(gpu['seconds'])}")
    measured = ("; ".join(parts) + " (the atlas already on disk). ") if parts else ""
    if measured:
        measured = measured[0].upper() + measured[1:]
    return (
        f"**Time:** {measured}Working through the text and the exercises: about {minutes} "
        "minutes (our estimate)."
    )


def sync_time(nb: nbformat.NotebookNode, stem: str, timings: dict) -> None:
    """Write the chapter's **Time:** line (in the cell that has one, else at the end of its
    objectives cell) from notebooks/timings.json."""
    cells = [c for c in nb.cells if c.cell_type == "markdown"]
    cell = next((c for c in cells if TIME_LINE.search(c.source)), None)
    if cell is None:
        cell = next((c for c in cells if c.metadata.get("dilran_objectives")), None)
        cell = cell or next((c for c in cells if "## Objectives" in c.source), None)
        if cell is None:
            return
        cell.source = cell.source.rstrip() + "\n\n**Time:**"
    found = ESTIMATE.search(cell.source)
    line = time_line(timings.get(stem, {}), int(found.group(1)) if found else DEFAULT_MINUTES)
    cell.source = TIME_LINE.sub(lambda m: line, cell.source, count=1)


def load_timings() -> dict:
    return json.loads(TIMINGS.read_text(encoding="utf-8")) if TIMINGS.is_file() else {}


def sync_notebook(path: Path, url: str, branch: str) -> bool:
    """Rewrite the badge and setup cells of one chapter; True when the file changed."""
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    badge = BADGE_TEMPLATE.format(badge=COLAB_BADGE, colab=colab_base(url, branch), name=path.name)
    first = nb.cells[0] if nb.cells else None
    if first is not None and first.cell_type == "markdown" and "colab-badge" in first.source:
        first.source = badge
    else:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(badge))
    _set_tags(nb.cells[0], ["remove-cell"])

    pairs, extras = chapter_pairs(nb), chapter_extras(nb)
    source = setup_source(url, branch, pairs, extras=extras)
    found = [i for i, c in enumerate(nb.cells) if _is_setup(c)]
    if found:
        cell = nb.cells[found[0]]
        for extra in reversed(found[1:]):
            del nb.cells[extra]
    else:
        cell = nbformat.v4.new_code_cell()
        nb.cells.insert(2 if len(nb.cells) > 1 else 1, cell)
    if cell.source != source:
        if _run_line(cell.source) != _run_line(source):
            cell.outputs = []  # the outputs come from setup(): kept while its call is unchanged
            cell.execution_count = None
        cell.source = source
    cell.metadata[SETUP_KEY] = {"pairs": list(pairs)}
    if extras:
        cell.metadata[SETUP_KEY]["extras"] = list(extras)
    _set_tags(cell, ["remove-input"])
    sync_time(nb, path.stem.removesuffix(".ipynb"), load_timings())

    after = nbformat.writes(nb)
    if after == before:
        return False
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return True


TEXT_RULES = [
    # (pattern, replacement builder)
    (re.compile(r"git clone https://github\.com/[\w.-]+/[\w.-]+"), lambda u, b: f"git clone {u}"),
    (
        re.compile(r"git\+https://github\.com/[\w.-]+/[\w.-]+?(@[\w./-]+)?(?=[\s\"'`)]|$)"),
        lambda u, b: f"git+{u}@{b}",
    ),
    (
        re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[\w.-]+"),
        lambda u, b: colab_base(u, b),
    ),
]


SETUP_BLOCK = re.compile(r"```python\n# Setup\. On Colab:.*?\n```", re.DOTALL)


TIMINGS_BLOCK = re.compile(r"(<!-- timings:start -->\n).*?(<!-- timings:end -->)", re.DOTALL)


def _load(run: dict) -> str:
    load = run.get("load_at_start")
    return "–" if load is None else f"{load:.1f}"


def timings_table(timings: dict) -> str:
    """The measured runs of every chapter as a Markdown table (running.md): wall time, and in
    brackets the load average at the start of the run."""
    keys = [("quick-atlas-cpu", "quick, atlas"), ("quick-phantom-cpu", "quick, phantom"),
            ("full-atlas-cpu", "full, atlas"), ("full-atlas-gpu", "full, atlas, GPU")]  # fmt: skip
    seen = {k for runs in timings.values() for k in runs}
    keys = [(k, h) for k, h in keys if k in seen]
    rows = ["| chapter | " + " | ".join(h for _, h in keys) + " | CPU cores |",
            "|---|" + "---:|" * (len(keys) + 1)]  # fmt: skip
    for path in chapters():
        runs = timings.get(path.stem, {})
        cells = [
            f"{_duration(runs[k]['seconds'])} ({_load(runs[k])})" if k in runs else ""
            for k, _ in keys
        ]  # fmt: skip
        cores = ", ".join(sorted({str(r["cpu_cores"]) for r in runs.values()}))
        rows.append(f"| {path.stem[:2]} | " + " | ".join(cells) + f" | {cores} |")
    return "\n".join(rows) + "\n"


def synced_text(text: str, url: str, branch: str) -> str:
    """``text`` with its repository URLs, its copies of the setup cell and its table of the
    chapters' measured times regenerated."""
    for pattern, build in TEXT_RULES:
        text = pattern.sub(build(url, branch), text)
    block = "```python\n" + setup_source(url, branch, ("mri-ct",)) + "\n```"
    text = SETUP_BLOCK.sub(lambda m: block, text)
    table = timings_table(load_timings())
    return TIMINGS_BLOCK.sub(lambda m: m.group(1) + table + m.group(2), text)


def sync_text(path: Path, url: str, branch: str) -> bool:
    """Rewrite the repository URLs and setup-cell copies of one text file; True when it changed."""
    text = path.read_text(encoding="utf-8")
    new = synced_text(text, url, branch)
    if new == text:
        return False
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)
    return True


def disagreements(url: str, branch: str) -> list[str]:
    """Files whose generated parts differ from what the configuration gives (nothing written)."""
    out = []
    with tempfile.TemporaryDirectory() as folder:
        for path in chapters():
            tmp = Path(folder) / path.name
            shutil.copyfile(path, tmp)
            if sync_notebook(tmp, url, branch):
                out.append(str(path.relative_to(REPO)))
    for rel in TEXT_FILES:
        path = REPO / rel
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        if synced_text(text, url, branch) != text:
            out.append(rel)
    return out


def sync_intro_chapters(write: bool) -> bool:
    """Write book/intro.md's chapter table (between its INTRO_BEGIN/INTRO_END markers) from the
    numbered parts of _toc.yml and each chapter's ``# Title``; True when the table disagreed
    (rewritten when ``write``, reported on stderr otherwise)."""
    begin = "<!-- chapters: written by scripts/sync_notebooks.py from _toc.yml -->"
    end = "<!-- /chapters -->"
    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
    rows = ["| Chapter | Subject |", "|---|---|"]
    files = [c["file"] for part in toc.get("parts", []) if part.get("numbered")
             for c in part.get("chapters", [])]  # fmt: skip
    for number, name in enumerate(files, start=1):
        path = next(p for p in (REPO / f"{name}.ipynb", REPO / f"{name}.md") if p.is_file())
        if path.suffix == ".ipynb":
            text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells
                             if c.cell_type == "markdown")  # fmt: skip
        else:
            text = path.read_text(encoding="utf-8")
        title = next(ln[2:].strip() for ln in text.splitlines() if ln.startswith("# "))
        rows.append(f"| {number} | [{title}](../{path.relative_to(REPO).as_posix()}) |")
    intro = REPO / "book" / "intro.md"
    old = intro.read_text(encoding="utf-8")
    if begin not in old or end not in old:
        raise SystemExit(f"sync_notebooks: book/intro.md lacks the markers {begin} ... {end}")
    head, rest = old.split(begin, 1)
    new = head + begin + "\n" + "\n".join(rows) + "\n" + end + rest.split(end, 1)[1]
    if new == old:
        return False
    if write:
        intro.write_text(new, encoding="utf-8")
        print("sync_notebooks: book/intro.md's chapter table rewritten from _toc.yml")
    else:
        print("sync_notebooks: intro.md: chapter table disagrees with _toc.yml", file=sys.stderr)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report; exit 1 on a mismatch")
    args = parser.parse_args(argv)
    url, branch = config()
    if sync_intro_chapters(write=not args.check) and args.check:
        return 1
    if args.check:
        bad = disagreements(url, branch)
        if bad:
            print(
                f"sync_notebooks: {len(bad)} file(s) disagree with _config.yml ({url}@{branch}): "
                + ", ".join(bad)
                + "\n  run `python scripts/sync_notebooks.py` to regenerate them",
                file=sys.stderr,
            )
            return 1
        print(f"sync_notebooks: all files agree with {url}@{branch}")
        return 0
    changed = [str(p.relative_to(REPO)) for p in chapters() if sync_notebook(p, url, branch)]
    changed += [
        rel for rel in TEXT_FILES if (REPO / rel).is_file() and sync_text(REPO / rel, url, branch)
    ]
    print(
        f"sync_notebooks: {len(changed)} file(s) rewritten"
        + (": " + ", ".join(changed) if changed else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The setup cell on Colab (a stand-in ``google.colab``): a failed install stops the notebook with
one line; and the course copies of scripts/make_course.py carry a course's install source and
mirror in every setup cell, leaving the book's notebooks alone."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
STAND_IN = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sync():
    return _script("sync_notebooks")


def _run(cells: list[str], folder: Path) -> tuple[nbformat.NotebookNode, Exception | None]:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    try:
        client.execute()
    except CellExecutionError as err:
        return nb, err
    return nb, None


def test_failed_install_stops_with_one_line(sync, tmp_path: Path) -> None:
    """An install source that does not exist: the setup cell ends in one error line naming it
    and what to do, and the cell after it never runs."""
    missing = str(tmp_path / "nowhere" / "dilran_lite-0.0.0-py3-none-any.whl")
    url, branch = sync.config()
    setup = sync.setup_source(url, branch, ("mri-ct",), install=missing)
    nb, err = _run([STAND_IN, setup, "print('the next cell ran')"], tmp_path)
    assert err is not None, "the notebook ran to its end"
    outputs = nb.cells[1].outputs
    errors = [o for o in outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "SetupFailed"
    (line,) = errors[0].traceback  # one line, no traceback
    assert line.startswith(f"SetupFailed: could not install dilran-lite from {missing!r}")
    assert "set INSTALL to a wheel URL" in line and "course's copy" in line
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert printed == f"Installing dilran-lite from {missing} ...\n"  # setup() did not run
    assert nb.cells[2].outputs == [] and nb.cells[2].get("execution_count") is None


def test_setup_cell_never_forces_colab_packages(sync) -> None:
    """Colab's torch and ipywidgets are never upgraded or reinstalled by the setup cell."""
    source = sync.setup_source(*sync.config(), ("mri-ct",), install="x.whl", mirror="http://m/")
    for flag in ("--upgrade", "-U ", "--force-reinstall", "--no-deps", "%pip"):
        assert flag not in source
    compile(source, "setup", "exec")  # plain Python: no IPython magic
    assert 'INSTALL = "x.whl"' in source and 'MIRROR = "http://m/"' in source


@pytest.fixture(scope="module")
def make_course():
    return _script("make_course")


def _setup_source(nb) -> str:
    return next(c.source for c in nb.cells if "dilran_setup" in c.metadata)


def test_course_copy_bakes_in_install_and_mirror(make_course, tmp_path: Path, capsys) -> None:
    """Every chapter in the copy installs from the course's wheel and sets its mirror; the other
    cells are the book's, and the book's notebooks are not touched."""
    before = {p: p.read_bytes() for p in CHAPTERS}
    config = tmp_path / "course.yml"
    config.write_text('course:\n  install: "https://example.org/dl.whl"\n  mirror: ""\n')
    out = tmp_path / "copy"
    args = ["--out", str(out), "--config", str(config), "--mirror", "http://127.0.0.1:8000/"]
    assert make_course.main(args) == 0
    assert f"{len(CHAPTERS)} notebooks in {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in CHAPTERS]
    for path in CHAPTERS:
        book, copy = nbformat.read(path, 4), nbformat.read(out / path.name, 4)
        source = _setup_source(copy)
        assert 'INSTALL = "https://example.org/dl.whl"' in source
        assert 'MIRROR = "http://127.0.0.1:8000/"' in source
        assert _setup_source(book).splitlines()[-1] == source.splitlines()[-1]  # same pairs
        assert "colab-badge" not in copy.cells[0].source  # no colab address: no badge
        rest = [c.source for c in book.cells if "dilran_setup" not in c.metadata][1:]
        assert [c.source for c in copy.cells if "dilran_setup" not in c.metadata] == rest
    assert {p: p.read_bytes() for p in CHAPTERS} == before


def test_course_copy_badges_and_repository_address(make_course, tmp_path: Path) -> None:
    colab = "https://colab.research.google.com/github/t/c/blob/main/nb"
    args = ["--out", str(tmp_path), "--install", "https://github.com/t/c", "--colab", colab,
            "--config", str(tmp_path / "absent.yml")]  # fmt: skip
    assert make_course.main(args) == 0
    nb = nbformat.read(tmp_path / CHAPTERS[0].name, 4)
    assert nb.cells[0].source.endswith(f"({colab}/{CHAPTERS[0].name})")
    assert 'INSTALL = "dilran-lite @ git+https://github.com/t/c"' in _setup_source(nb)
    assert make_course.install_source("dilran-lite==0.1.0") == "dilran-lite==0.1.0"


@pytest.mark.parametrize(
    "args",
    [["--mirror", "127.0.0.1:8000"], ["--colab", "https://example.org/x"]],
    ids=["mirror-not-a-url", "colab-not-colab"],
)
def test_course_copy_refuses_bad_settings(make_course, tmp_path: Path, args) -> None:
    with pytest.raises(SystemExit, match="make_course: (mirror|colab) must be"):
        make_course.main(["--out", str(tmp_path / "copy"), *args])
    assert not (tmp_path / "copy").exists()


def test_course_copy_refuses_the_book_folder(make_course) -> None:
    with pytest.raises(SystemExit, match="must not be the book's notebooks"):
        make_course.main(["--out", str(REPO / "notebooks")])


def _solutions(nb) -> list[str]:
    return [
        c.source for c in nb.cells
        if c.cell_type == "code" and "exercise-solution" in c.metadata.get("tags", [])
    ]  # fmt: skip


def test_students_copy_has_links_not_solutions(make_course, tmp_path: Path, capsys) -> None:
    """--students: every solution cell becomes one markdown cell linking to the chapter's page in
    the book; no cell of the copy holds a line of a solution's code; the other cells stay."""
    before = {p: p.read_bytes() for p in CHAPTERS}
    args = ["--out", str(tmp_path), "--students", "--book", "https://example.org/book/",
            "--config", str(tmp_path / "absent.yml")]  # fmt: skip
    assert make_course.main(args) == 0
    assert "students: solutions replaced" in capsys.readouterr().out
    found = 0
    for path in CHAPTERS:
        book, copy = nbformat.read(path, 4), nbformat.read(tmp_path / path.name, 4)
        solutions = _solutions(book)
        assert _solutions(copy) == []
        links = [c for c in copy.cells if "exercise-solution-link" in c.metadata.get("tags", [])]
        assert len(links) == len(solutions) and len(copy.cells) == len(book.cells) - 1  # badge
        page = f"(https://example.org/book/notebooks/{path.stem}.html)"
        assert all(c.cell_type == "markdown" and page in c.source for c in links)
        # distinctive lines: the solution's code that no other cell of the book has
        others = "\n".join(c.source for c in book.cells if c.source not in solutions)
        lines = {
            line.strip() for s in solutions for line in s.splitlines()[3:]
            if line.startswith("        ") and len(line.strip()) > 20
        } - {line.strip() for line in others.splitlines()}  # fmt: skip
        assert len(lines) >= len(solutions)
        copied = {line.strip() for c in copy.cells for line in c.source.splitlines()}
        assert not lines & copied
        found += len(solutions)
    assert found == 14
    assert {p: p.read_bytes() for p in CHAPTERS} == before


def test_students_setting_and_default_book_address(make_course, tmp_path: Path) -> None:
    """``students: true`` in course.yml does the same; without a book address the links go to
    the repository's GitHub Pages address; a non-boolean students value is refused."""
    config = tmp_path / "course.yml"
    config.write_text("course:\n  students: true\n")
    assert make_course.main(["--out", str(tmp_path / "copy"), "--config", str(config)]) == 0
    nb = nbformat.read(tmp_path / "copy" / "02_residual_attention.ipynb", 4)
    url, _ = _script("sync_notebooks").config()
    owner, name = url.removeprefix("https://github.com/").split("/")
    page = f"https://{owner.lower()}.github.io/{name}/notebooks/02_residual_attention.html"
    assert _solutions(nb) == [] and page in "\n".join(c.source for c in nb.cells)
    config.write_text("course:\n  students: 'yes please'\n")
    with pytest.raises(SystemExit, match="students must be true or false"):
        make_course.main(["--out", str(tmp_path / "copy2"), "--config", str(config)])


def _exercises():
    from dilran_lite.exercises import EXERCISES

    return EXERCISES


@pytest.mark.parametrize("path", CHAPTERS[1:8], ids=lambda p: p.stem)
def test_solution_runs_pasted_over_its_scaffold(path: Path, monkeypatch) -> None:
    """Each solution cell, run alone in a fresh namespace (holding only what the chapter's
    earlier exercises define), defines the scaffold's name and passes the chapter's check: no
    import of the scaffold cell is needed."""
    import dilran_lite.exercises as exercises

    monkeypatch.setenv("DILRAN_SOLUTIONS", "1")
    monkeypatch.setenv("DILRAN_QUICK", "1")
    nb = nbformat.read(path, 4)
    chapter = int(path.name[:2])
    expected = [e for e in _exercises() if e.chapter == chapter]
    solutions = _solutions(nb)
    assert len(solutions) == len(expected) > 0
    earlier: dict = {}
    for source, exercise in zip(solutions, expected):
        namespace = {"__name__": "__main__", **earlier}
        exec(compile(source, f"{path.stem}-solution", "exec"), namespace)  # noqa: S102
        assert exercise.name in namespace, f"{exercise.name} not defined"
        verdict = getattr(exercises, exercise.check)(namespace[exercise.name])
        assert verdict.passed, str(verdict)
        earlier[exercise.name] = namespace[exercise.name]


COURSE_PAGE = REPO / "book" / "course.md"


def _chapter_minutes() -> dict[int, int]:
    """Each chapter's estimate of working through it (its **Time:** line), in minutes."""
    import re

    minutes = {}
    for path in CHAPTERS:
        text = "\n".join(c.source for c in nbformat.read(path, 4).cells[:6])
        found = re.search(r"Working through the text and the exercises: about (\d+) minutes", text)
        if found:
            minutes[int(path.name[:2])] = int(found.group(1))
    return minutes


def _chapters_named(cell: str) -> list[int]:
    import re

    return [int(n) for n in re.findall(r"\b(\d+)\b", cell.split(":")[0])]


def test_schedule_fits_the_chapters_estimates() -> None:
    """Every session's in-class chapters fit its 75 minutes by the chapters' own estimates, the
    minutes columns are those estimates' sums, and each chapter is in class or homework once."""
    text = COURSE_PAGE.read_text(encoding="utf-8")
    schedule = text[text.index("## Schedule"):text.index("## Instructor notes")]
    rows = [r.split("|")[1:-1] for r in schedule.splitlines() if r.startswith("| ")][1:]
    minutes = _chapter_minutes()
    assert sorted(minutes) == list(range(1, 14))
    seen = []
    for number, (session, in_class, in_minutes, homework, home_minutes, hand_in) in enumerate(
        rows, 1
    ):
        assert int(session) == number and hand_in.strip()
        taught, home = _chapters_named(in_class), _chapters_named(homework)
        assert taught, f"session {number} teaches no chapter"
        assert int(in_minutes) == sum(minutes[c] for c in taught) <= 75, f"session {number}"
        assert int(home_minutes) == sum(minutes[c] for c in home), f"session {number}"
        seen += taught + home
    assert len(rows) == 6 and sorted(seen) == list(range(1, 14)) == seen


def test_every_chapter_ends_with_its_discussion_questions() -> None:
    """The last cell of each chapter is its Discussion, the questions of course.md's notes."""
    import re

    text = COURSE_PAGE.read_text(encoding="utf-8")
    notes = text[text.index("## Instructor notes per chapter"):text.index("## Assignment")]
    for path in CHAPTERS:
        number = int(path.name[:2])
        section = re.search(rf"### {number}\. .*?\n(.*?)(?=\n### |\Z)", notes, re.S).group(1)
        question = re.search(r"- \*\*Discussion:\*\* (.*?)(?=\n- \*\*|\Z)", section, re.S)
        last = nbformat.read(path, 4).cells[-1]
        assert last.cell_type == "markdown" and last.source.startswith("## Discussion\n")
        bullets = [line[2:] for line in last.source.splitlines() if line.startswith("- ")]
        assert " ".join(bullets) == " ".join(question.group(1).split()), path.name

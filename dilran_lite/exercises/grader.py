"""Grading a class's hand-ins: the verdicts are computed here, never read from a notebook.

For every notebook of a hand-in the grader takes only the cells tagged ``exercise-scaffold`` (the
student's code; solution, check and all other cells are ignored, outputs too) and runs them with
the checks in a fresh ``python -I`` process: its own temporary working folder and home, an
environment holding only PATH and LANG, a memory limit, a time limit for the whole hand-in, and a
private copy of the package written from the grader's memory. THIS EXECUTES STUDENT CODE: for a
real class run it inside a container (see the course page).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import UserError
from .checks import EXERCISES, FAILED, NOT_DONE, PASSED, Exercise

MISSING, REFERENCE, TAMPERED, TIMED_OUT = "missing", "reference", "tampered", "timed out"
SHARE = {PASSED: 1.0, FAILED: 0.25}  # of an exercise's points; every other status scores 0
RANK = {PASSED: 6, FAILED: 5, NOT_DONE: 4, REFERENCE: 3, TAMPERED: 2, TIMED_OUT: 1, MISSING: 0}
MAX_NOTEBOOK_BYTES = 20_000_000
PACKAGE = Path(__file__).resolve().parents[1]


def package_snapshot() -> dict[str, bytes]:
    """Relative path -> bytes of every ``.py`` file of the package, read once at the start."""
    return {str(p.relative_to(PACKAGE.parent)): p.read_bytes() for p in PACKAGE.rglob("*.py")}


def digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for k in sorted(files):
        h.update(k.encode() + b"\0" + files[k])
    return h.hexdigest()


def exercise_cells(path: Path) -> tuple[list[str], list[str], str]:
    """The sources of a notebook's ``exercise-scaffold`` cells, the exercise ids they define and a
    note; a file that is too big or not a notebook gives no cells and a note saying so."""
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        return [], [], f"{path.name}: larger than {MAX_NOTEBOOK_BYTES // 10**6} MB, not graded"
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = [c for c in nb["cells"] if isinstance(c, dict)]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        return [], [], f"{path.name}: not a notebook ({type(err).__name__}), not graded"
    sources = []
    for c in cells:
        tags = (c.get("metadata") or {}).get("tags") or []
        if c.get("cell_type") == "code" and "exercise-scaffold" in tags:
            src = c.get("source", "")
            sources.append("".join(src) if isinstance(src, list) else str(src))
    defined = _defined_names(sources)
    return sources, [e.id for e in EXERCISES if e.name in defined], ""


def select(chapters: str | None) -> tuple[Exercise, ...]:
    """The exercises of ``chapters`` (``"2-8"``, ``"2-8,12"``; None: all of them)."""
    if chapters is None:
        return EXERCISES
    wanted: set[int] = set()
    try:
        for part in chapters.split(","):
            lo, _, hi = part.strip().partition("-")
            wanted |= set(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise UserError(f"--chapters {chapters!r}: give chapter numbers and ranges, "
                        "like 2-8 or 2-8,12") from None
    chosen = tuple(e for e in EXERCISES if e.chapter in wanted)
    if not chosen:
        have = sorted({e.chapter for e in EXERCISES})
        raise UserError(f"--chapters {chapters!r}: no exercises there; the chapters with "
                        f"exercises are {', '.join(map(str, have))}")
    return chosen


def _parsed(sources: list[str]) -> list[ast.Module]:
    """The cells' syntax trees, IPython ``%``/``!`` lines read as ``pass``; cells that do not
    parse are left out."""
    trees = []
    for src in sources:
        lines = ("pass" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines())
        try:
            trees.append(ast.parse("\n".join(lines)))
        except SyntaxError:
            continue
    return trees


def _defined_names(sources: list[str]) -> set[str]:
    names = set()
    for tree in _parsed(sources):
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names |= {a.asname or a.name for a in node.names}
    return names


def _imports_reference(sources: list[str]) -> set[str]:
    """Exercise ids whose reference (``dilran_lite.<module>.<attr>``) the cells import or use."""
    used = set()
    for tree in _parsed(sources):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dilran_lite"):
                used |= {a.name for a in node.names}
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if node.value.id in {"model", "losses", "train", "fusion", "metrics"}:
                    used.add(node.attr)
    return {e.id for e in EXERCISES if e.reference.split(":")[1] in used}


def _limits(memory_mb: int):
    def apply() -> None:
        os.setsid()
        if memory_mb > 0:
            limit = memory_mb * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _run_notebook(
    cells: list[str], ids: list[str], snapshot: dict[str, bytes], budget: float, memory_mb: int
) -> tuple[dict[str, list[str]], str]:
    """One fresh process for one notebook's exercise cells; returns {id: [status, message]}."""
    with tempfile.TemporaryDirectory(prefix="dilran-grade-") as tmp:
        root = Path(tmp)
        for rel, data in snapshot.items():
            (root / "pkg" / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / "pkg" / rel).write_bytes(data)
        for d in ("home", "work", "io"):
            (root / d).mkdir()
        (root / "io" / "job.json").write_text(json.dumps({"cells": cells, "exercises": ids}))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": str(root / "home"), "TMPDIR": str(root / "work"), "MPLBACKEND": "Agg",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        child = root / "pkg" / "dilran_lite" / "exercises" / "_child.py"  # from memory too
        cmd = [sys.executable, "-I", str(child), str(root / "pkg"), str(root / "io" / "job.json"),
               str(root / "io" / "result.json")]
        with open(root / "io" / "stderr", "wb") as log:
            proc = subprocess.Popen(cmd, cwd=root / "work", env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=log,
                                    preexec_fn=_limits(memory_mb))
            try:
                proc.wait(timeout=max(budget, 1.0))
            except subprocess.TimeoutExpired:
                _kill(proc)
                return ({i: [TIMED_OUT, "the hand-in ran past its time limit"] for i in ids},
                        "timed out")
            _kill(proc)
        with open(root / "io" / "stderr", "rb") as log:
            log.seek(max(0, log.seek(0, 2) - 2000))
            err = log.read()
        result = root / "io" / "result.json"
        if proc.returncode != 0 or not result.exists():
            why = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            memo = " (the memory limit?)" if "MemoryError" in why[0] or proc.returncode < 0 else ""
            msg = f"the run stopped{memo}: exit status {proc.returncode} {why[0][:200]}".strip()
            return {i: [FAILED, msg] for i in ids}, msg
        try:
            data = json.loads(result.read_text())
            results = {i: [str(s) for s in data["results"][i]][:2] for i in ids}
        except (ValueError, KeyError, TypeError):
            return {i: [FAILED, "the run gave no readable result"] for i in ids}, "no result"
        return results, "; ".join(str(e) for e in data.get("errors", []))[:500]


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def grade_student(
    name: str, paths: list[Path], snapshot: dict[str, bytes], timeout: float, memory_mb: int,
    exercises: tuple[Exercise, ...] = EXERCISES,
) -> dict:
    """One row: every exercise's [status, message], the notebooks read and a note."""
    best: dict[str, list[str]] = {e.id: [MISSING, "no hand-in defines it"] for e in exercises}
    notes, start = [], time.monotonic()
    for p in paths:
        try:
            cells, ids, note = exercise_cells(p)
        except OSError as err:
            cells, ids, note = [], [], f"{p.name}: unreadable ({type(err).__name__})"
        ids = [i for i in ids if i in best]
        if note:
            notes.append(note)
        if not ids:
            continue
        left = timeout - (time.monotonic() - start)
        results, note = (_run_notebook(cells, ids, snapshot, left, memory_mb) if left > 0 else
                         ({i: [TIMED_OUT, "the hand-in ran past its time limit"] for i in ids}, ""))
        if note:
            notes.append(f"{p.name}: {note}")
        for i in _imports_reference(cells):
            if i in results and results[i][0] in (PASSED, FAILED):
                results[i] = [REFERENCE, "the exercise cells import the package's own version"]
        for i, v in results.items():
            if RANK.get(v[0], -1) > RANK[best[i][0]]:
                best[i] = v
    points = sum(e.points * SHARE.get(best[e.id][0], 0.0) for e in exercises)
    return {"student": name, "notebooks": len(paths), "results": best, "points": points,
            "note": "; ".join(notes)}


def _students(root: Path) -> dict[str, list[Path]]:
    """Student -> notebooks: a subfolder per student, or one notebook directly in the folder."""
    out: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in p.parts or not p.is_file():
            continue
        name = p.stem if p.parent == root else p.relative_to(root).parts[0]
        out.setdefault(name, []).append(p)
    return out


def grade(
    folder: str | Path,
    out_csv: str | Path | None = None,
    timeout: float = 600,
    jobs: int | None = None,
    memory_mb: int = 6144,
    feedback: str | Path | None = None,
    progress: bool = False,
    chapters: str | None = None,
) -> list[dict]:
    """Grade every hand-in under ``folder``; one row per student, every exercise of
    ``chapters`` (:func:`select`; None: all) a column.

    Each exercise reads ``passed``, ``failed``, ``not done yet``, ``missing`` (no notebook
    defines it), ``reference`` (the package's own implementation handed in), ``tampered`` (the
    code replaced the checks or the libraries) or ``timed out``; ``points`` follows the rubric of
    the course page. ``timeout`` is seconds for a whole hand-in, ``memory_mb`` the address-space
    limit of each process. Written as CSV to ``out_csv`` and one text file per student to
    ``feedback`` (a folder) when given."""
    exercises = select(chapters)
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder: give the folder that holds the student notebooks")
    students = _students(root)
    if not students:
        raise UserError(f"no notebooks (*.ipynb) found under {root}")
    snapshot = package_snapshot()
    jobs = max(1, jobs or os.cpu_count() or 1)
    bar = _progress(len(students), progress)
    lock = threading.Lock()

    def one(item: tuple[str, list[Path]]) -> dict:
        try:
            row = grade_student(item[0], item[1], snapshot, timeout, memory_mb, exercises)
        except Exception as err:  # noqa: BLE001 - one hand-in never ends the run
            row = {"student": item[0], "notebooks": len(item[1]), "points": 0.0,
                   "results": {e.id: [MISSING, "not graded"] for e in exercises},
                   "note": f"not graded: {type(err).__name__}: {err}"}
        with lock:
            bar.update(1)
        return row

    with ThreadPoolExecutor(jobs) as pool:
        full = list(pool.map(one, students.items()))
    bar.close()
    if digest(package_snapshot()) != digest(snapshot):
        print("warning: the package's files changed while grading (a hand-in wrote to them?); "
              "the grades used the copy read at the start", file=sys.stderr)
    if out_csv is not None:
        _write_csv(Path(out_csv), full)
    if feedback is not None:
        _write_feedback(Path(feedback), full, exercises)
    return [_flat(r) for r in full]


def _flat(row: dict) -> dict:
    """The table row: the exercise columns are the ones graded (the keys of the results)."""
    return {"student": row["student"], "notebooks": row["notebooks"],
            **{i: v[0] for i, v in row["results"].items()},
            "points": f"{row['points']:g}", "note": row["note"]}


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _write_csv(out: Path, rows: list[dict]) -> None:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(_flat(rows[0])) if rows else ["student"])
    writer.writeheader()
    writer.writerows(_flat(r) for r in rows)
    _atomic_text(out, buf.getvalue())


def _write_feedback(folder: Path, rows: list[dict], exercises: tuple[Exercise, ...]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    total = sum(e.points for e in exercises)
    for r in rows:
        lines = [f"{r['student']}: {r['points']:g} of {total} points", ""]
        for e in exercises:
            status, msg = r["results"][e.id]
            lines.append(f"chapter {e.chapter}, {e.id} ({e.points} points): {status}\n  {msg}")
        if r["note"]:
            lines += ["", f"note: {r['note']}"]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in r["student"])
        _atomic_text(folder / f"{safe}.txt", "\n".join(lines) + "\n")


def _progress(total: int, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="hand-in", disable=not show, file=sys.stderr)


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dilran_lite.exercises grade FOLDER [--csv FILE] [--feedback DIR] [--jobs N]
    [--timeout S] [--memory MB] [--chapters 2-8]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m dilran_lite.exercises",
        description="Grade student hand-ins. WARNING: this executes the students' code; for a "
        "real class run it in a container without network (see the course page).")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser(
        "grade", help="run every hand-in's exercise cells and the checks",
        description="Run the exercise cells of every hand-in and the checks, one fresh process "
        "per notebook. WARNING: this executes the students' code as you; for a real class run "
        "it in a container without network (see the course page).")
    g.add_argument("folder")
    g.add_argument("--csv", default=None, help="also write the table to this CSV file")
    g.add_argument("--feedback", default=None,
                   help="folder for one feedback file per student (default: next to --csv)")
    g.add_argument("--timeout", type=float, default=600, help="seconds per hand-in (default 600)")
    g.add_argument("--memory", type=int, default=6144,
                   help="memory limit per process in MB (default 6144, at least 4096: torch "
                   "needs it; 0: none)")
    g.add_argument("--jobs", type=int, default=None, help="hand-ins at a time (default: cores)")
    g.add_argument("--chapters", default=None,
                   help="grade only these chapters' exercises, e.g. 2-8 or 2-8,12 (default: all)")
    args = parser.parse_args(argv)
    feedback = args.feedback
    if feedback is None and args.csv is not None:
        feedback = str(Path(args.csv).with_suffix("")) + "-feedback"
    try:
        if 0 < args.memory < 4096:
            raise UserError(f"--memory {args.memory} is too small: torch alone needs about 4000 "
                            "MB of address space; give at least 4096 (or 0 for no limit)")
        rows = grade(args.folder, args.csv, args.timeout, args.jobs, args.memory, feedback,
                     progress=sys.stderr.isatty(), chapters=args.chapters)
    except UserError as err:
        print(f"dilran-lite: error: {err}", file=sys.stderr)
        return 2
    _print_table(rows)
    return 0

"""Execute the chapter notebooks in place: the book (execute_notebooks: off) shows their outputs.

Usage:
    python scripts/execute_notebooks.py                 # every notebooks/*.ipynb
    python scripts/execute_notebooks.py notebooks       # the same (a folder)
    python scripts/execute_notebooks.py 07 05_loss notebooks/08_metrics.ipynb

A name may be a folder, a notebook path, or the start of a notebook's name in notebooks/.
Files whose name starts with "_" (drafts, templates) are left out.

- Mode: full (DILRAN_QUICK=0), the published pages, unless --quick or DILRAN_QUICK=1 is given.
- Data: refuses to run a notebook whose atlas is absent (the pages would show the phantom) unless
  --allow-phantom is given.
- Metadata: each saved notebook records how it ran in ``metadata.dilran`` (mode, data, pairs,
  weights, package version, UTC date, device: dilran_lite.notebook.run_info); its setup cell
  prints the same as one line, which the book shows.
- Matplotlib: the kernel gets the inline backend, whatever MPLBACKEND says (Agg would hide figures).
- Widgets: their state is stored in the notebook metadata, so that the book shows them (static);
  the random model ids are renumbered in order (00000000000000000000000000000001, ...) so that a
  re-run does not change the file where nothing else changed; a notebook whose widgets are all in
  cells the book removes (remove-cell, remove-output) keeps no widget state.
- Errors: a failing cell prints the notebook, the cell number (1-based, markdown cells counted)
  and the error; that notebook is not saved, the others still run, and the script exits 1.
- Times: the wall time of every successful run goes to notebooks/timings.json, under the
  chapter and "<mode>-<data>-<cpu|gpu>" (quick-atlas-cpu, full-atlas-cpu, ...), with the device,
  the CPU cores, the load average at the start and the date; scripts/sync_notebooks.py writes each
  chapter's **Time:** line from it. --time-only runs the notebook without saving it (the way to
  measure quick mode, or the phantom: --phantom runs on an empty data folder without fetching).
- Options: --timeout SECONDS per cell (default 900), --kernel NAME (default python3),
  --fail-fast (stop at the first failing notebook), --quick, --allow-phantom, --time-only,
  --phantom.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SETUP_KEY = "dilran_setup"  # cell metadata of the setup cell (scripts/sync_notebooks.py)
TIMINGS = NOTEBOOKS / "timings.json"  # measured wall times (scripts/sync_notebooks.py reads them)
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def chapter_pairs(nb: nbformat.NotebookNode) -> list[str]:
    """The atlases the notebook's setup cell asks for (MRI-CT when it names none)."""
    for cell in nb.cells:
        if SETUP_KEY in cell.get("metadata", {}):
            return list(cell.metadata[SETUP_KEY].get("pairs", ["mri-ct"]))
    return ["mri-ct"]


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
HIDDEN = {"remove-cell", "remove-output"}


def drop_unshown_widget_state(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Without the saved widget state when no cell the book shows displays a widget: the state
    would only load the widget manager (and its fonts) on a page that has nothing for it."""
    shown = any(
        WIDGET_VIEW in out.get("data", {})
        for cell in nb.cells if not HIDDEN & set(cell.get("metadata", {}).get("tags", []))
        for out in cell.get("outputs", [])
    )
    if not shown:
        nb.metadata.pop("widgets", None)
    return nb


def renumber_widgets(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The same notebook with its widget model ids replaced by 1, 2, ... (32 hex digits)."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    if not state:
        return nb
    mapping = {old: f"{i:032x}" for i, old in enumerate(state, start=1)}
    pattern = re.compile("|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)))
    text = pattern.sub(lambda m: mapping[m.group(0)], nbformat.writes(nb))
    return nbformat.reads(text, as_version=4)


def find_notebooks(names: list[str]) -> list[Path]:
    """Resolve folder, file and name-prefix arguments to a sorted list of notebooks."""
    if not names:
        names = [str(NOTEBOOKS)]
    found: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found += sorted(p for p in path.glob("*.ipynb") if not p.name.startswith("_"))
        elif path.is_file():
            found.append(path)
        else:
            stem = path.name.removesuffix(".ipynb")
            matches = sorted(
                p for p in NOTEBOOKS.glob(f"{stem}*.ipynb") if not p.name.startswith("_")
            )
            if not matches:
                raise SystemExit(f"execute_notebooks: no notebook matches {name!r} in {NOTEBOOKS}")
            found += matches
    unique: list[Path] = []
    for p in found:
        p = p.resolve()
        if p not in unique:
            unique.append(p)
    return unique


def failing_cell(nb: nbformat.NotebookNode) -> tuple[int, str, str] | None:
    """(index, first source line, 'ename: evalue') of the first code cell with an error output."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
                return index, first, f"{out.get('ename')}: {out.get('evalue')}"
    return None


def record_time(stem: str, seconds: float, load: float) -> None:
    """Add one measured run of chapter ``stem`` to notebooks/timings.json (atomic write)."""
    import json

    from dilran_lite.notebook import run_info

    info = run_info(chapter_pairs(nbformat.read(NOTEBOOKS / f"{stem}.ipynb", 4)))
    times = json.loads(TIMINGS.read_text()) if TIMINGS.is_file() else {}
    kind = "gpu" if info["device"].startswith("GPU") else "cpu"
    times.setdefault(stem, {})[f"{info['mode']}-{info['data']}-{kind}"] = {
        "seconds": round(seconds, 1),
        "device": info["device"],
        "cpu_cores": len(os.sched_getaffinity(0)),
        "load_at_start": round(load, 2),
        "date": info["date"],
    }
    tmp = TIMINGS.with_name(f".{TIMINGS.name}.part")
    tmp.write_text(json.dumps(dict(sorted(times.items())), indent=1) + "\n")
    os.replace(tmp, TIMINGS)


def execute(path: Path, timeout: int, kernel: str, save: bool = True) -> bool:
    """Run one notebook in its own folder; save it only if every cell ran (and ``save``);
    record its wall time (:func:`record_time`). Returns success."""
    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel,
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=True,
        record_timing=False,
    )
    load = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as err:
        where = failing_cell(nb)
        if where is None:  # a timeout leaves no error output: name the running cell instead
            pending = [
                i
                for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and c.get("execution_count") is None
            ]
            text = str(err).strip()
            message = text.splitlines()[0] if text else type(err).__name__
            where = (pending[0] if pending else -1, "", message)
        index, first, message = where
        print(
            f"FAILED {rel}: cell {index + 1} of {len(nb.cells)} ({first!r}) raised {message}",
            file=sys.stderr,
        )
        print(str(err)[-3000:], file=sys.stderr)
        return False
    except Exception as err:  # the kernel died, could not start, ...
        print(f"FAILED {rel}: {type(err).__name__}: {err}", file=sys.stderr)
        return False
    elapsed = time.perf_counter() - start
    from dilran_lite.notebook import run_info

    if path.parent == NOTEBOOKS:
        record_time(path.stem, elapsed, load)
    if not save:
        print(f"ran    {rel}  {elapsed:6.1f} s (not saved)", flush=True)
        return True
    nb.metadata["dilran"] = run_info(chapter_pairs(nb))
    nb = renumber_widgets(drop_unshown_widget_state(nb))
    nbformat.validate(nb)
    tmp = path.with_name(f".{path.name}.part")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    print(f"ok     {rel}  {elapsed:6.1f} s", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="folders, notebook paths or name prefixes")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    parser.add_argument("--kernel", default="python3", help="kernel name (default python3)")
    parser.add_argument(
        "--fail-fast", action="store_true", help="stop at the first failing notebook"
    )
    parser.add_argument("--quick", action="store_true", help="quick mode (DILRAN_QUICK=1)")
    parser.add_argument(
        "--allow-phantom", action="store_true", help="run even where the atlas is absent"
    )
    parser.add_argument(
        "--time-only", action="store_true", help="record the wall time; do not save the notebook"
    )
    parser.add_argument(
        "--phantom", action="store_true", help="run on an empty data folder (implies --time-only)"
    )
    args = parser.parse_args(argv)
    if args.phantom:
        import tempfile

        args.time_only = args.allow_phantom = True
        os.environ["DILRAN_DATA"] = tempfile.mkdtemp(prefix="dilran-no-atlas-")
        os.environ["DILRAN_FETCH"] = "0"

    if args.quick:
        os.environ["DILRAN_QUICK"] = "1"
    os.environ.setdefault("DILRAN_QUICK", "0")
    # The Makefile exports MPLBACKEND=Agg for scripts; in a kernel that would hide every figure.
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")

    notebooks = find_notebooks(args.names)
    if not notebooks:
        print("execute_notebooks: no notebook to run", file=sys.stderr)
        return 1
    if not args.allow_phantom:
        from dilran_lite.notebook import atlas_present

        missing = sorted(
            {p for nb in notebooks for p in chapter_pairs(nbformat.read(nb, 4))}
            - {p for p in ("mri-ct", "mri-pet", "mri-spect") if atlas_present(p)}
        )
        if missing:
            print(
                f"execute_notebooks: the {', '.join(missing)} atlas is not here (set DILRAN_DATA "
                "or run `dilran-lite download --pairs ...`): the pages would show the phantom. "
                "Pass --allow-phantom (make execute ALLOW_PHANTOM=1) to run anyway.",
                file=sys.stderr,
            )
            return 2
    quick = os.environ["DILRAN_QUICK"]
    print(f"execute_notebooks: {len(notebooks)} notebook(s), DILRAN_QUICK={quick}")
    failed: list[Path] = []
    start = time.perf_counter()
    for path in notebooks:
        if not execute(path, args.timeout, args.kernel, save=not args.time_only):
            failed.append(path)
            if args.fail_fast:
                break
    total = time.perf_counter() - start
    if failed:
        names = ", ".join(p.name for p in failed)
        print(
            f"execute_notebooks: {len(failed)} failed ({names}) in {total:.1f} s", file=sys.stderr
        )
        return 1
    print(f"execute_notebooks: all {len(notebooks)} ran in {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

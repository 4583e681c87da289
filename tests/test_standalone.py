"""Every chapter runs standalone as on Colab: from a course copy, installing the wheel, alone.

For the session: build the wheel of this checkout and serve a copy of the atlas on 127.0.0.1,
laid out like the mirror. For each chapter: make the course copy (scripts/make_course.py, install
source: the wheel; mirror: the local server), copy the chapter alone into an empty folder, and
execute it in quick mode in a bare venv with pip that sees this environment's packages but no
dilran-lite (Colab's preinstalled packages stand in), in a kernel where `google.colab` is
imported, with HOME and caches in an empty temp folder and DILRAN_DATA unset: the setup cell
installs the wheel with pip, imports it, fetches the atlas from the mirror, and the chapter runs
to its end. With an install source that does not exist, it stops in the setup cell with one line
and nothing after it runs.

Per chapter, the wall time, the setup cell's time and the number of files fetched go to
_build/standalone-times.json. Needs the atlas beside the checkout (skipped otherwise, e.g. under
`make test NO_ATLAS=1`).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.standalone]

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
TIMES = REPO / "_build" / "standalone-times.json"
DATASETS = ("harvard-mri-ct", "harvard-mri-pet", "harvard-mri-spect")
TIMEOUT_S = 1200  # one chapter, quick mode
ANSI = re.compile(r"\x1b\[[0-9;]*m")

RUNNER = """
import sys, nbformat
from nbclient import NotebookClient
path, out = sys.argv[1], sys.argv[2]
nb = nbformat.read(path, as_version=4)
client = NotebookClient(nb, timeout=900, kernel_name="python3", record_timing=True,
                        resources={"metadata": {"path": sys.argv[3]}})
try:
    client.execute()
finally:
    nbformat.write(nb, out)
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    served = [0]  # files served so far (GET answered 200)

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def log_request(self, code="-", size="-"):
        if str(code) == "200":
            _QuietHandler.served[0] += 1


@pytest.fixture(scope="session")
def mirror(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """http://127.0.0.1:<port>/ serving a copy of the atlas folders (harvard-mri-*/MODALITY/*)."""
    root = tmp_path_factory.mktemp("mirror")
    for name in DATASETS:
        if (shared_data / name).is_dir():
            shutil.copytree(shared_data / name, root / name)
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout."""
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(REPO)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return next(wheels.glob("dilran_lite-*.whl"))


def _bare_venv(venv: Path, with_pip: bool = False, deps: Path | None = None) -> Path:
    """A venv that sees the running environment's dependencies through a path entry (not its
    editable dilran_lite; ``deps``: that folder instead of the environment's site-packages);
    its Python."""
    subprocess.run(
        [sys.executable, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(venv)],
        check=True,
    )
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    (site / "_dependencies.pth").write_text(str(deps or sysconfig.get_paths()["purelib"]) + "\n")
    return python


def _clean_env(home: Path, mirror: str) -> dict[str, str]:
    """Nothing of this checkout: no PYTHONPATH, no DILRAN_DATA, an empty HOME and caches."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "TORCH_HOME": str(home / ".cache" / "torch"),
        "MPLCONFIGDIR": str(home / ".config" / "matplotlib"),
        "DILRAN_QUICK": "1",
        "DILRAN_MIRROR": mirror,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "LANG": "C.UTF-8",
    }
    return env


def _record(name: str, seconds: float, nb: nbformat.NotebookNode, files: int) -> None:
    """The chapter's wall time, its setup cell's (install, import, atlas fetch) and the number of
    files it fetched from the mirror, into _build/standalone-times.json."""
    setup = next(c for c in nb.cells if "dilran_setup" in c.metadata)
    timing = setup.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    setup_s = None
    if start and end:
        from datetime import datetime

        setup_s = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    TIMES.parent.mkdir(parents=True, exist_ok=True)
    times = json.loads(TIMES.read_text()) if TIMES.is_file() else {}
    times[name] = {"seconds": round(seconds, 1), "setup_s": setup_s and round(setup_s, 1),
                   "files_fetched": files}  # fmt: skip
    TIMES.write_text(json.dumps(dict(sorted(times.items())), indent=1) + "\n")


STAND_IN = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n"


@pytest.fixture(scope="session")
def colab_deps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What Colab preinstalls, as far as this environment has it: its site-packages without
    dilran-lite (links to every other entry), so that pip sees no dilran-lite installed."""
    view = tmp_path_factory.mktemp("colab-site")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if not name.startswith(("dilran_lite", "__editable__", "_dilran")):
            (view / entry.name).symlink_to(entry)
    return view


def _course_run(chapter, wheel_or_source, mirror, colab_deps, tmp_path):
    """Make the course copy (install source, mirror), run ``chapter`` from it (outputs cleared)
    alone in a bare venv with pip, in a kernel where ``google.colab`` is imported (an IPython
    startup file)."""
    python = _bare_venv(tmp_path / "venv", with_pip=True, deps=colab_deps)
    copy = tmp_path / "course"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_course.py"), "--out", str(copy),
         "--install", str(wheel_or_source), "--mirror", mirror, "--config", "/nonexistent"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    nb = nbformat.read(copy / chapter.name, as_version=4)
    for cell in nb.cells:  # cleared, so that what runs is seen
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, work / chapter.name)
    env = _clean_env(tmp_path / "home", mirror)
    env["PATH"] = f"{python.parent}:{env['PATH']}"
    startup = tmp_path / "home" / ".ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text(STAND_IN)
    out = tmp_path / "executed.ipynb"
    served, start = _QuietHandler.served[0], time.perf_counter()
    proc = subprocess.run(
        [str(python), "-c", RUNNER, str(work / chapter.name), str(out), str(work)],
        cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    nb = nbformat.read(out, as_version=4)
    if proc.returncode == 0:
        _record(chapter.stem, time.perf_counter() - start, nb, _QuietHandler.served[0] - served)
    return proc, nb


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[f"course-{p.stem}" for p in CHAPTERS])
def test_course_copy_runs_on_colab(chapter, wheel, mirror, colab_deps, tmp_path) -> None:
    """Colab-like: the course copy's setup cell installs the wheel with pip, imports it, and the
    chapter runs to its end on the atlas fetched from the course's mirror."""
    proc, nb = _course_run(chapter, wheel, mirror, colab_deps, tmp_path)
    log = ANSI.sub("", proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"{chapter.name} failed from the course copy:\n{log[-4000:]}"
    setup = next(c for c in nb.cells if "dilran_setup" in c.metadata)
    text = "".join(o.get("text", "") for o in setup.outputs if o.get("output_type") == "stream")
    assert "Executed in quick mode on the Harvard atlas" in text, text[-2000:]


def test_course_copy_stops_on_a_bad_install_source(wheel, mirror, colab_deps, tmp_path) -> None:
    """An install source that does not exist: the setup cell stops with the one line, and no
    cell after it runs."""
    chapter = CHAPTERS[0]
    missing = tmp_path / "nowhere" / wheel.name
    proc, nb = _course_run(chapter, missing, mirror, colab_deps, tmp_path)
    assert proc.returncode != 0
    index = next(i for i, c in enumerate(nb.cells) if "dilran_setup" in c.metadata)
    errors = [o for o in nb.cells[index].outputs if o.get("output_type") == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "SetupFailed"
    (line,) = errors[0]["traceback"]  # one line, no traceback
    assert line.startswith(f"SetupFailed: could not install dilran-lite from {str(missing)!r}")
    assert "set INSTALL to a wheel URL" in line
    later = [c for c in nb.cells[index + 1 :] if c.cell_type == "code"]
    assert later and all(not c.outputs and c.get("execution_count") is None for c in later)

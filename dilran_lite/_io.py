"""Small file helpers shared by the package: atomic writes with normal modes, the commit.

``atomic_write`` writes to a temporary file beside the target, fsyncs it, gives it the mode a
plain ``open(path, "w")`` would (``0o666`` less the umask: ``-rw-r--r--`` under the usual
umask 022), and renames it over the target, so a reader never sees a partial file and an
interrupted write leaves the old file (or none) in place. A full disk is a ``UserError``.
"""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import UserError
from .settings import git_commit_override

__all__ = ["TMP_TAG", "atomic_write", "atomic_write_text", "file_mode", "git_commit"]

#: Temporary files are named ``.<target><TMP_TAG><random>.tmp``; only these are ever cleaned up.
TMP_TAG = ".dilran-partial-"


def _umask() -> int:
    """The process's umask: read from ``/proc/self/status`` where Linux has it (no change to
    the process), else by setting and restoring it."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from ``open()`` under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync, then rename it over
    ``path``; on any error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_TAG}", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"no space left to write {path}: free some disk space") from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def git_commit() -> str | None:
    """The checkout's commit; ``$DILRAN_GIT_COMMIT`` for a copy of a checkout without ``.git``;
    None outside a git checkout."""
    override = git_commit_override()
    if override:
        return override
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None

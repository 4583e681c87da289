"""Runs one notebook's exercise cells and the checks, in a fresh process started by the grader.

``python -I _child.py PACKAGE_ROOT JOB.json RESULT.json``: ``PACKAGE_ROOT`` holds a private copy
of ``dilran_lite`` (imported before any student code runs); ``JOB.json`` lists the scaffold cells'
sources and the exercise ids to check. Writes {exercise id: [status, message]} and a note.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys


def _fingerprint(modules: list) -> dict:
    """(module, name) -> every callable or class attribute (kept, so that no id is reused)."""
    out = {}
    for m in modules:
        for k, v in list(vars(m).items()):
            if callable(v) or isinstance(v, type):
                out[(getattr(m, "__qualname__", getattr(m, "__name__", repr(m))), k)] = v
    return out


def _warm_up(torch) -> None:
    """An optimiser's first step rebinds a few torch functions: do it before fingerprinting."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([p])
    p.sum().backward()
    opt.step()


def _tampered(before: dict, after: dict) -> list[str]:
    return [f"{m}.{k}" for (m, k), v in before.items() if after.get((m, k)) is not v]


def _strip_magics(src: str) -> str:
    """IPython magics and shell lines (``%env``, ``!pip``) are not run: they become comments."""
    return "\n".join(
        "# " + line if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines()
    )


def main(pkg_root: str, job_path: str, result_path: str) -> None:
    sys.path.insert(0, pkg_root)
    env = dict(os.environ)
    import builtins
    import math

    import numpy as np
    import torch
    import torch.nn.functional as F

    from dilran_lite import fusion, losses, metrics, model, registration, train
    from dilran_lite.exercises import checks

    watched = [checks, model, losses, train, fusion, metrics, registration, torch, F, torch.Tensor,
               torch.nn.Module, np, builtins, math]
    if hasattr(torch._C, "TensorBase"):
        watched.append(torch._C.TensorBase)
    _warm_up(torch)
    before = _fingerprint(watched)
    verdict_type, by_id = checks.Verdict, {e.id: e for e in checks.EXERCISES}
    check_fns = {e.id: getattr(checks, e.check) for e in checks.EXERCISES}
    refs = {}
    for e in checks.EXERCISES:
        mod, attr = e.reference.split(":")
        refs[e.id] = getattr(sys.modules[f"dilran_lite.{mod}"], attr)
    with open(job_path) as fh:
        job = json.load(fh)
    ns: dict = {"__name__": "__main__"}
    errors = []
    sink = io.StringIO()
    for i, src in enumerate(job["cells"]):
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                exec(compile(_strip_magics(src), f"<exercise cell {i + 1}>", "exec"), ns)
        except BaseException as err:  # noqa: BLE001 - the student's code, reported in one line
            errors.append(f"exercise cell {i + 1} raised {type(err).__name__}: {err}"[:300])
    os.environ.clear()
    os.environ.update(env)
    results = {}
    for ex_id in job["exercises"]:
        results[ex_id] = _one(ns, by_id[ex_id], check_fns[ex_id], refs[ex_id], verdict_type,
                              watched, before, sink)
    with open(result_path + ".tmp", "w") as fh:
        json.dump({"results": results, "errors": errors}, fh)
    os.replace(result_path + ".tmp", result_path)


def _one(ns, ex, check, ref, verdict_type, watched, before, sink) -> list[str]:
    """[status, message] for one exercise: missing, reference, tampered or the check's verdict."""
    obj = ns.get(ex.name)
    if obj is None:
        return ["missing", f"no {ex.name} is defined in the exercise cells"]
    if _is_reference(obj, ref):
        return ["reference", f"{ex.name} is the package's own implementation, not yours"]
    changed = _tampered(before, _fingerprint(watched))
    if changed:
        return ["tampered", "your code replaced part of the checks or the libraries: "
                + ", ".join(changed[:3])]
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            v = check(obj)
    except BaseException as err:  # noqa: BLE001
        return ["failed", f"the check stopped: {type(err).__name__}: {err}"[:300]]
    changed = _tampered(before, _fingerprint(watched))
    if changed:
        return ["tampered", "your code replaced part of the checks or the libraries: "
                + ", ".join(changed[:3])]
    if type(v) is not verdict_type:
        return ["tampered", "the check did not return its own verdict"]
    return [v.status, v.detail]


def _is_reference(obj, ref) -> bool:
    if obj is ref:
        return True
    if isinstance(obj, type) and isinstance(ref, type):
        return issubclass(obj, ref)
    wrapped = getattr(obj, "__wrapped__", None) or getattr(obj, "func", None)
    return wrapped is ref or str(getattr(obj, "__module__", "") or "").startswith("dilran_lite")


if __name__ == "__main__":
    main(*sys.argv[1:4])
    os._exit(0)  # no exit handler of the student's code runs after the result is written

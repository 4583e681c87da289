"""The package's shape: no import cycle (imports inside functions count), short functions, one
reader of the environment, no private names imported across modules.

An AST walk of ``dilran_lite/``; nothing is imported, so a cycle that Python would tolerate at
run time (because one side imports inside a function) still fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dilran_lite"
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    """The package modules an ``import`` statement of ``module`` reaches."""
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    targets = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        targets.append(sub if sub in MODULES else base)
    return [t for t in targets if t in MODULES]


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, anywhere in the file."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                deps.update(_resolve(module, path, node))
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in MODULES)
        deps.discard(module)
        graph[module] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    """The checker itself: a -> b -> c -> a is found, a DAG is not."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_in_the_package():
    assert cycles(import_graph()) == []


def _functions():
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield module, node


def test_no_function_longer_than_the_limit():
    long = [
        f"{m}.{n.name}: {n.end_lineno - n.lineno + 1} lines"
        for m, n in _functions()
        if n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


#: modules that may touch ``os.environ``: its one reader, and the grader, which builds a clean
#: environment for the student code it runs
ENVIRONMENT_MODULES = ("dilran_lite.settings", "dilran_lite.exercises")


def test_only_settings_reads_the_environment():
    readers = []
    for module, path in MODULES.items():
        if module.startswith(ENVIRONMENT_MODULES):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                if isinstance(node.value, ast.Name) and node.value.id == "os":
                    readers.append(f"{module}:{node.lineno}")
    assert readers == []


def test_no_private_name_imported_across_modules():
    private = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and _resolve(module, path, node):
                names = [a.name for a in node.names if a.name.startswith("_")]
                private += [f"{module}: {n}" for n in names if n != "__version__"]
    assert private == []


@pytest.mark.parametrize(
    "error",
    ["ImageFileError", "MissingImageError", "SplitFileError", "DownloadError",
     "CheckpointError", "VGGWeightsUnavailable"],
)
def test_every_exception_class_lives_in_errors_and_is_a_user_error(error):
    from dilran_lite import errors

    assert issubclass(getattr(errors, error), errors.UserError)
    defined = [
        f"{m}.{n.name}"
        for m, p in MODULES.items()
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.ClassDef) and n.name == error
    ]
    assert defined == [f"dilran_lite.errors.{error}"]

"""The package's modules import one another without a cycle, counting the imports inside functions:
a function-level import only hides a cycle until the day someone moves it to the top."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vsgrid"


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = modules()


def _base(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` names, relative imports resolved against ``module``."""
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return ".".join(filter(None, [package, node.module]))


def imports(module: str) -> set[str]:
    """The package's modules that ``module`` imports, at the top or inside functions: ``from
    vsgrid.x import y`` imports the module ``vsgrid.x.y`` where there is one, else ``vsgrid.x``."""
    path, found = MODULES[module], set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, path, node)
            found.update(
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            )
    return (found & MODULES.keys()) - {module}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as the modules along it, the first repeated at the end; None if
    there is none (a depth-first search: a cycle is an edge back to a module on the path)."""
    done, path = set(), []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph[module]):
            if cycle := visit(imported):
                return cycle
        path.pop()
        done.add(module)
        return None

    return next(filter(None, map(visit, sorted(graph))), None)


def test_the_finder_names_a_cycle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_relative_imports_resolve_to_the_package_s_modules():
    ingest = MODULES["vsgrid.data.ingest"]
    for line, base in [
        ("from .store import CHANNELS", "vsgrid.data.store"),
        ("from . import store", "vsgrid.data"),
        ("from ..grid import ROWS", "vsgrid.grid"),
    ]:
        assert _base("vsgrid.data.ingest", ingest, ast.parse(line).body[0]) == base


def test_no_import_cycle():
    cycle = find_cycle({module: imports(module) for module in MODULES})
    assert cycle is None, "import cycle: " + " -> ".join(cycle)

"""The package's shape: stages import only from earlier stages, without a cycle (counting the
imports inside functions, which only hide a cycle until someone moves them to the top), and
modules stay small enough to read."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vsgrid"
# Pipeline order. Top-level modules (grid, config, layout, files, seeds, errors, arrays, stats)
# serve every stage; the command line sits above them all. Level 4, the screen, comes last: it
# profiles with evaluation's features and draws its figures in the report's style.
STAGES = ["data", "model", "evaluation", "report", "screen"]
# Pure score functions, a leaf module: training's validation reports the evaluation's PSNR.
LEAVES = {"vsgrid.evaluation.metrics"}
# The only modules of evaluation and the screen that may import the grid's report: the screen's
# own figures and tables, which share its figure style. Their statistics come from vsgrid.stats.
REPORT_READERS = {"vsgrid.screen.figures", "vsgrid.screen.tables"}


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
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


def stage(module: str) -> int:
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 2 and parts[1] in STAGES else -1


@pytest.mark.parametrize("module", [m for m in MODULES if not m.startswith("vsgrid.cli")])
def test_no_module_imports_from_a_later_stage(module):
    later = [name for name in imports(module) if stage(name) > stage(module) and name not in LEAVES]
    assert not later, f"{module} imports {later}"


def reads_the_report(name: str) -> bool:
    return name == "vsgrid.report" or name.startswith("vsgrid.report.")


@pytest.mark.parametrize(
    "module",
    [
        m
        for m in MODULES
        if m.startswith(("vsgrid.evaluation", "vsgrid.screen")) and m not in REPORT_READERS
    ],
)
def test_evaluation_and_the_screen_leave_the_report_to_the_screens_figures_and_tables(module):
    report = sorted(filter(reads_the_report, imports(module)))
    assert not report, f"{module} imports {report}"


def test_the_statistics_floor_imports_nothing_of_the_package():
    assert not imports("vsgrid.stats"), imports("vsgrid.stats")


def test_importing_inference_does_not_import_training():
    code = "import sys, vsgrid.model.infer; print('vsgrid.model.train' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


def test_the_snakefiles_imports_need_only_the_standard_library():
    code = (
        "import sys, vsgrid.layout, vsgrid.grid, vsgrid.config; "
        "print(sorted({'numpy', 'pandas', 'torch', 'zarr'} & set(sys.modules)))"
    )
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "[]"
    )


def test_the_command_line_is_thin_and_functions_fit_on_a_screen():
    assert all(len(path.read_text().splitlines()) < 200 for path in (PACKAGE / "cli").glob("*.py"))
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.end_lineno - node.lineno + 1 > 60
            ):
                long.append(f"{module}.{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


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

"""The layers of the package point down: no import cycles, the core imports no backend and
no command-line module, the backends import no command-line module.

From the bottom: the core (the engine and its ports), the backends (``overseer.backends``),
the wiring (``overseer.runner``: the run loops of ``overseer run``, which build backends
but are no command), the command line (``overseer.cli`` and ``overseer.__main__``). A
module may import its own layer and those below it.

Every import statement counts, those inside functions too (a lazy import is still a
dependency), except those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = "overseer.backends"
CLI = "overseer.cli"
# Modules that build backends and run the engine on them, for the command line.
WIRING = frozenset({"overseer.runner"})


def module_names(package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of ``package`` (a top-level folder of the repo)."""
    names = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for orelse in child.orelse:
                yield from _imports_of(orelse)
            continue
        yield from _imports_of(child)


def _imports_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    yield from _imports(node)


def imported_modules(name: str, path: Path, known: Mapping[str, Path]) -> set[str]:
    """The modules among ``known`` that module ``name`` (at ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from package import module`` depends on the module, ``from module import name``
            # on the module itself (the package's __init__ is not counted: it runs first anyway).
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        for target in targets:
            # The deepest known module that the target names (``a.b.c`` where only ``a.b``
            # is a module: a name inside ``a.b``).
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(*packages: str) -> dict[str, set[str]]:
    known = {name: path for package in packages for name, path in module_names(package).items()}
    return {name: imported_modules(name, path, known) for name, path in known.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first repeated at the end)."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def _in(package: str, module: str) -> bool:
    return module == package or module.startswith(package + ".")


def _is_backend(module: str) -> bool:
    return _in(BACKENDS, module)


def _is_cli(module: str) -> bool:
    return _in(CLI, module) or module == "overseer.__main__"


def _layer_breaks(graph: Mapping[str, set[str]]) -> list[str]:
    breaks = []
    for module, imports in sorted(graph.items()):
        if not module.startswith("overseer") or _is_cli(module):
            continue
        for target in sorted(imports):
            if _is_cli(target):
                breaks.append(f"{module} imports the command-line module {target}")
            elif target in WIRING and module not in WIRING:
                breaks.append(f"{module} imports the wiring module {target}")
            elif _is_backend(target) and not _is_backend(module) and module not in WIRING:
                breaks.append(f"the core module {module} imports the backend {target}")
    return breaks


def test_the_cycle_finder_reports_a_reintroduced_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert find_cycle({"a": {"b"}, "b": set(), "d": {"a", "b"}}) is None


def test_relative_and_lazy_imports_are_resolved(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .. import top\n")
    (package / "top.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .hidden import X\n"
        "def f():\n    from .sub.leaf import g\n"
    )
    (package / "hidden.py").write_text("")
    (package / "sub" / "leaf.py").write_text("from ..top import f\n")
    known = {
        "pkg": package / "__init__.py",
        "pkg.sub": package / "sub" / "__init__.py",
        "pkg.top": package / "top.py",
        "pkg.hidden": package / "hidden.py",
        "pkg.sub.leaf": package / "sub" / "leaf.py",
    }
    graph = {name: imported_modules(name, path, known) for name, path in known.items()}
    assert graph["pkg.top"] == {"pkg.sub.leaf"}  # lazy import counted, TYPE_CHECKING not
    assert graph["pkg.sub"] == {"pkg.top"}
    assert graph["pkg.sub.leaf"] == {"pkg.top"}
    assert find_cycle(graph) == ["pkg.top", "pkg.sub.leaf", "pkg.top"] or find_cycle(graph) == [
        "pkg.sub.leaf",
        "pkg.top",
        "pkg.sub.leaf",
    ]


def test_a_cycle_put_back_into_the_engine_is_found() -> None:
    graph = import_graph("overseer")
    graph["overseer.isolation"].add("overseer.worker")  # the cycle this test first found
    cycle = find_cycle(graph)
    assert cycle is not None and {"overseer.isolation", "overseer.worker"} <= set(cycle)


@pytest.mark.parametrize("package", ["overseer", "infra"])
def test_no_import_cycle(package: str) -> None:
    cycle = find_cycle(import_graph(package))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_core_imports_no_backend_and_no_cli_and_backends_import_no_cli() -> None:
    graph = import_graph("overseer")
    assert any(_is_backend(module) for module in graph), "no backend package found"
    assert _layer_breaks(graph) == []


def test_a_core_module_importing_a_backend_is_reported() -> None:
    graph = {
        "overseer.scheduler": {"overseer.backends.aws.clients"},
        "overseer.backends.embedded": {"overseer.cli"},
        "overseer.cli": {"overseer.backends"},
    }
    assert _layer_breaks(graph) == [
        "overseer.backends.embedded imports the command-line module overseer.cli",
        "the core module overseer.scheduler imports the backend overseer.backends.aws.clients",
    ]


def test_the_command_line_is_the_cli_package_and_the_runner_is_wiring() -> None:
    graph = import_graph("overseer")
    assert {"overseer.cli", "overseer.cli.run", "overseer.cli.graphs"} <= set(graph)
    assert all(_is_cli(module) for module in ("overseer.cli", "overseer.cli.views", "overseer.__main__"))
    assert not _is_cli("overseer.client") and not _is_cli("overseer.runner")
    assert set(graph) >= WIRING
    # The runner may build backends; it may not reach up into the command line, nor the
    # core or a backend into it.
    assert _layer_breaks(
        {
            "overseer.runner": {"overseer.backends.embedded", "overseer.cli.views"},
            "overseer.scheduler": {"overseer.runner"},
            "overseer.backends.aws.stream": {"overseer.runner"},
        }
    ) == [
        "overseer.backends.aws.stream imports the wiring module overseer.runner",
        "overseer.runner imports the command-line module overseer.cli.views",
        "overseer.scheduler imports the wiring module overseer.runner",
    ]


def test_the_core_reads_stream_records_without_powertools() -> None:
    """Powertools is for the Lambda edge (``functions/``); the engine reads plain records."""
    users = set()
    for name, path in module_names("overseer").items():
        if _is_backend(name) or _is_cli(name) or name in WIRING:
            continue
        for node in _imports(ast.parse(path.read_text(), str(path))):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
            if any((module or "").startswith("aws_lambda_powertools") for module in modules):
                users.add(name)
    assert users == set()

"""The package's shape: no import cycle anywhere in `pipeline/`, at most 12 modules on the top
floor, each stage package's `__init__.py` a docstring only, and nothing read from outside the
project's own tree."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "pipeline"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules of the package that it imports, anywhere in its body (an import
    inside a function closes a loop as surely as one at the top)."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # `from pipeline.store import ledger` imports the module pipeline.store.ledger
                targets.update(f"{node.module}.{alias.name}" for alias in node.names
                               if f"{node.module}.{alias.name}" in modules)
                targets.add(node.module)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        return list(exc.args[1])
    return None


def test_no_import_cycle_in_the_package() -> None:
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    """The check above can fail: a package whose modules import each other, one of them lazily."""
    pkg = tmp_path / "pipeline"
    (pkg / "store").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "store" / "__init__.py").write_text("")
    (pkg / "config.py").write_text("def f():\n    from pipeline.store import engine\n")
    (pkg / "store" / "engine.py").write_text("from pipeline.config import f\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle is not None and set(cycle) == {"pipeline.config", "pipeline.store.engine"}
    (pkg / "config.py").write_text("X = 1\n")
    assert find_cycle(import_graph(pkg)) is None


def test_at_most_twelve_modules_on_the_top_floor() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, f"{len(top)} modules directly in pipeline/: {top}"


@pytest.mark.parametrize("package", sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")))
def test_a_stage_package_init_is_its_docstring(package: str) -> None:
    tree = ast.parse((PACKAGE / package / "__init__.py").read_text(encoding="utf-8"))
    docstring = ast.get_docstring(tree)
    assert docstring, f"pipeline/{package}/__init__.py has no docstring"
    assert len(tree.body) == 1, f"pipeline/{package}/__init__.py holds code; move it to a module"
    assert len(docstring.splitlines()) <= 5


def test_nothing_reads_outside_the_project() -> None:
    """A user clones the project alone: no code, test or script may reach for the folder beside
    it that only our own checkouts have."""
    outside = "/".join(("..", "shared"))
    offenders = [str(p.relative_to(ROOT)) for folder in ("pipeline", "tests", "bench", "docs", ".ci")
                 for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in {".py", ""}
                 and p != Path(__file__) and outside in p.read_text(encoding="utf-8", errors="replace")]
    offenders += [name for name in ("Makefile",) if outside in (ROOT / name).read_text()]
    assert not offenders, f"these read {outside}: {offenders}"

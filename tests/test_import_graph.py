"""The package's import graph has no cycles (lazy imports inside functions count too: a cycle hidden in a
function is still two modules that cannot be understood, or moved, one without the other)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """Project modules that `name` imports, outside `if TYPE_CHECKING:` blocks."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING":
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level:
                module = name.rsplit(".", node.level)[0] + (f".{node.module}" if node.module else "")
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    targets = set()
    for imported in found:
        while imported and imported not in modules:  # `from pkg.mod import func` -> pkg.mod
            imported = imported.rpartition(".")[0]
        if imported and imported != name:
            targets.add(imported)
    return targets


def import_cycles() -> list[list[str]]:
    paths = {_module_name(p): p for p in (REPO / "source").rglob("*.py")}
    graph = {name: _imports(name, path, set(paths)) for name, path in paths.items()}
    cycles, visiting, done = [], [], set()

    def visit(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(visiting[visiting.index(node):] + [node])
            return
        visiting.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        visiting.pop()
        done.add(node)

    for name in sorted(graph):
        visit(name)
    return cycles


def test_source_has_no_import_cycles():
    cycles = import_cycles()
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_finds_a_cycle(tmp_path, monkeypatch):
    """The walk itself works: two modules importing each other are reported."""
    pkg = tmp_path / "source"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from source import b\n")
    (pkg / "b.py").write_text("def f():\n    from source.a import x\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["REPO"]), "REPO", tmp_path)
    assert import_cycles() == [["source.a", "source.b", "source.a"]]

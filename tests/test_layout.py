"""The package's layout: imports run one way (no cycle), no module reaches into another's private
names, and no module grows past 600 lines (docs/architecture.md).

The import graph is read from each module's own ``import``/``from ... import`` statements with
``ast``, those inside functions included: a cycle dodged by an import inside a function is still a
cycle for the reader.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import smoothviz

ROOT = Path(smoothviz.__file__).parent
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(module: str, name: str | None) -> str:
    """The module an import statement loads: ``from smoothviz.compress import svd`` -> the
    submodule, ``from smoothviz.compress import METHODS`` -> the package's ``__init__``."""
    if name is not None and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module


def imports(name: str) -> list[tuple[str, str | None]]:
    """``(target module, imported name or None)`` for every smoothviz import in module ``name``."""
    found = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            mod = node.module or ""
            if mod == "smoothviz" or mod.startswith("smoothviz."):
                found += [(_resolve(mod, a.name), a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.startswith("smoothviz")]
    return [(target, imported) for target, imported in found if target in MODULES]


def graph() -> dict[str, set[str]]:
    return {name: {t for t, _ in imports(name) if t != name} for name in MODULES}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _is_package_init(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def test_the_package_has_no_import_cycle():
    edges = graph()
    # A package's __init__ re-exports its submodules; a submodule importing a name from its own
    # package's __init__ would close a loop through it, which is what this test forbids too.
    assert _cycles(edges) == [], "import cycle(s) among smoothviz modules"


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from smoothviz.compress.svd import svd_compress\n")
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_another_modules_private_name(name):
    for target, imported in imports(name):
        if imported is not None and target != name:
            assert not imported.startswith("_"), f"{name} imports the private {target}.{imported}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_600_lines(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by concept"


def test_the_graph_sees_function_level_and_package_imports():
    edges = graph()
    assert "smoothviz.compress.svd" in edges["smoothviz.sweep"] or any(
        t.startswith("smoothviz.compress") for t in edges["smoothviz.sweep"]
    )
    assert not _is_package_init("smoothviz.sweep") and _is_package_init("smoothviz.compress")


def test_nothing_the_project_ships_cites_a_file_outside_it():
    """The method definitions users read are in docs/; no module, notebook or page names the
    developers' own notes (design.md, style.md), which a user's clone does not have."""
    root = Path(__file__).resolve().parent.parent
    shipped = [root / "README.md", *root.glob("docs/*.md"), *root.glob("notebooks/*.ipynb")]
    shipped += root.glob("smoothviz/**/*.py")
    cited = [
        p.relative_to(root) for p in shipped if re.search(r"\b(design|style)\.md\b", p.read_text())
    ]
    assert not cited, f"these cite design.md/style.md, which are not in the project: {cited}"

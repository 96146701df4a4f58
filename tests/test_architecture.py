"""The house rules, checked: which stage may import which, no import loops, light imports.

Stages (DESIGN.md §1): ``ir`` is the base; ``backend`` imports ``ir``; ``passes`` import
``ir`` and the backend's target, cost model and kernel planning (never schedule emission);
``runtime`` reads schedules only (the backend's schedule format, cost model and target, and
the shared errors); the driver (``compiler/``, the ``coec`` package) sits on top and no
stage imports it. Imports under ``if TYPE_CHECKING:`` are for annotations and not counted.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
#: folder -> package, as pyproject maps them
PACKAGES = {
    "ir": "coec.ir",
    "backend": "coec.backend",
    "passes": "coec.passes",
    "runtime": "coec.runtime",
    "compiler": "coec",
}
STAGES = ("coec.ir", "coec.backend", "coec.passes", "coec.runtime")

#: what each stage may import of coec (prefixes), besides itself
ALLOWED = {
    "coec.ir": (),
    "coec.backend": ("coec.ir",),
    "coec.passes": (
        "coec.ir",
        "coec.backend.target",
        "coec.backend.cost",
        "coec.backend.plan",
        "coec.backend.plan_cost",
        "coec.backend.streaming",
    ),
    "coec.runtime": (
        "coec.ir.errors",
        "coec.ir.dtypes",
        "coec.backend.schedule",
        "coec.backend.cost",
        "coec.backend.target",
    ),
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    package = PACKAGES[rel.parts[0]]
    parts = [*package.split("."), *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, module: str) -> set[str]:
    """The coec modules ``path`` imports at run time (module level or inside functions)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for n in node.orelse:
                visit(n)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m == "coec" or m.startswith("coec.")}


def _graph() -> nx.DiGraph:
    files = {_module_name(p): p for d in PACKAGES for p in (ROOT / d).rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(files)
    for name, path in files.items():
        for target in _imports(path, name):
            if target in files and target != name:
                g.add_edge(name, target)
    return g


GRAPH = _graph()


def _stage(module: str) -> str:
    for s in STAGES:
        if module == s or module.startswith(s + "."):
            return s
    return "coec"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_imports_only_what_it_may(stage):
    bad = []
    for src, dst in GRAPH.edges:
        if _stage(src) != stage or _stage(dst) == stage:
            continue
        if not any(dst == a or dst.startswith(a + ".") for a in ALLOWED[stage]):
            bad.append(f"{src} -> {dst}")
    assert bad == [], f"{stage} imports what it may not: {bad}"


def test_no_stage_imports_the_driver():
    bad = [f"{s} -> {d}" for s, d in GRAPH.edges if _stage(s) != "coec" and _stage(d) == "coec"]
    assert bad == []


def test_no_import_loops():
    assert list(nx.simple_cycles(GRAPH)) == []


def test_the_graph_sees_real_imports():
    """The checks above would pass on an empty graph: make sure it holds known edges."""
    assert GRAPH.has_edge("coec.passes.tiling", "coec.backend.plan")
    assert GRAPH.has_edge("coec.pipeline", "coec.passes.fusion")  # a lazy, in-function import
    assert GRAPH.has_edge("coec.frontend.aten_ops", "coec.frontend.registry")
    assert not GRAPH.has_edge("coec.frontend.aten_ops", "coec.frontend.lower")  # type-only


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


HEAVY = ("torch", "xdsl", "onnx", "onnxruntime", "transformers", "matplotlib", "networkx")


@pytest.mark.parametrize(
    "statement, forbidden",
    [
        ("import coec.ir.errors", (*HEAVY, "numpy")),
        ("import coec", (*HEAVY, "numpy")),
        ("import coec.runtime.executor", HEAVY),
        ("import coec.runtime.node", HEAVY),
        ("import coec.backend.schedule", HEAVY),
    ],
)
def test_light_imports_stay_light(statement, forbidden):
    loaded = _loaded_after(statement)
    assert [m for m in forbidden if m in loaded] == []

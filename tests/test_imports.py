"""The import graph: no cycles, and the layers import downwards only.

Read with ``ast``, not by importing: every ``import`` and ``from ... import`` counts, at module
level and inside functions, with relative imports resolved. A package ``__init__`` whose
``_LAZY`` table maps names to submodules (loaded with ``import_module`` on first use) counts as
importing those submodules.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ppyolo_slim", "deploy")

_LOW = ("ppyolo_slim.engine", "ppyolo_slim.slim", "ppyolo_slim.export", "ppyolo_slim.pipeline",
        "ppyolo_slim.summary", "ppyolo_slim.deploy", "deploy", "tools")
# a module under the key may not import anything under these prefixes
LAYERS = {
    "ppyolo_slim.utils": ("ppyolo_slim.model", "ppyolo_slim.data", "ppyolo_slim.config") + _LOW,
    "ppyolo_slim.utils.io": ("paddle",),              # config and data checks write files without it
    "ppyolo_slim.model": _LOW,
    "ppyolo_slim.model.pt_reader": ("torch", "paddle"),   # reads .pt files where neither is installed
    "ppyolo_slim.data": ("ppyolo_slim.model",) + _LOW,
    # sections are registered by their components (settings.HOMES, loaded by name), so
    # config.py, which engine/ uses, reaches no component's code and no paddle
    "ppyolo_slim.settings": ("paddle", "ppyolo_slim.utils", "ppyolo_slim.model", "ppyolo_slim.data",
                             "ppyolo_slim.config") + _LOW,
    "ppyolo_slim.config": ("paddle", "ppyolo_slim.model", "ppyolo_slim.data") + _LOW,
    # the trainer is open through callbacks: sparsity and distillation register themselves
    "ppyolo_slim.engine": ("ppyolo_slim.slim", "ppyolo_slim.export", "ppyolo_slim.pipeline",
                           "ppyolo_slim.summary", "tools"),
}


class Edge(NamedTuple):
    source: str
    target: str     # a module of the walked packages, or the dotted name as written for others
    where: str      # file:line of the import statement


def module_files(root: Path, packages: Sequence[str]) -> Dict[str, Path]:
    """Dotted module name -> file, for every .py of the packages."""
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _known(name: str, modules: Dict[str, Path]) -> str:
    """The walked module that ``import name`` loads last, or ``name`` when it is outside them."""
    probe = name
    while probe and probe not in modules:
        probe = probe.rpartition(".")[0]
    return probe or name


def _from_base(module: str, is_package: bool, node: ast.ImportFrom, where: str) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if node.level - 1 >= len(parts):
        raise ValueError(f"{where}: relative import beyond the top-level package")
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: Dict[str, Path], root: Path) -> List[Edge]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    rel = path.relative_to(root)
    edges = []
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            edges += [Edge(module, _known(a.name, modules), where) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(module, is_package, node, where)
            for a in node.names:    # ``from pkg import sub`` imports the submodule
                sub = f"{base}.{a.name}"
                edges.append(Edge(module, sub if sub in modules else _known(base, modules), where))
    if is_package:
        for node in tree.body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                    and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets)):
                for v in node.value.values:
                    if isinstance(v, ast.Constant) and isinstance(v.value, str):
                        edges.append(Edge(module, _known(f"{module}.{v.value}", modules),
                                          f"{rel}:{v.lineno}"))
    return [e for e in edges if e.target != module]


def import_graph(root: Path, packages: Sequence[str]) -> List[Edge]:
    modules = module_files(root, packages)
    return [e for name, path in modules.items() for e in imports_of(name, path, modules, root)]


def cycles(edges: List[Edge]) -> List[List[Edge]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    graph: Dict[str, List[Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, []).append(e)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components: List[Set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for e in graph.get(v, []):
            if e.target not in index:
                visit(e.target)
                low[v] = min(low[v], low[e.target])
            elif e.target in on_stack:
                low[v] = min(low[v], index[e.target])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(comp, graph) for comp in components]


def _one_cycle(comp: Set[str], graph: Dict[str, List[Edge]]) -> List[Edge]:
    """The shortest way from the component's first module back to itself, edge by edge."""
    start = min(comp)
    paths: Dict[str, List[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for e in graph.get(v, []):
                if e.target == start:
                    return paths[v] + [e]
                if e.target in comp and e.target not in paths:
                    paths[e.target] = paths[v] + [e]
                    nxt.append(e.target)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")    # a component always has one


def layer_violations(edges: List[Edge], layers: Dict[str, Sequence[str]]) -> List[Edge]:
    def under(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")
    return [e for e in edges for layer, banned in layers.items()
            if under(e.source, layer) and any(under(e.target, b) for b in banned)]


def check_imports(root: Path, packages: Sequence[str], layers: Dict[str, Sequence[str]]) -> None:
    edges = import_graph(root, packages)
    problems = []
    for cyc in cycles(edges):
        problems.append("import cycle " + " -> ".join([cyc[0].source] + [e.target for e in cyc])
                        + " (" + ", ".join(e.where for e in cyc) + ")")
    for e in layer_violations(edges, layers):
        problems.append(f"{e.where}: {e.source} imports {e.target}, which its layer may not use")
    assert not problems, "\n".join(problems)


def test_package_has_no_cycles_and_respects_layers():
    check_imports(ROOT, PACKAGES, LAYERS)


def test_walker_sees_the_packages_and_function_level_imports():
    modules = module_files(ROOT, PACKAGES)
    assert "ppyolo_slim.utils.io" in modules and "ppyolo_slim.deploy.builder" in modules
    edges = import_graph(ROOT, PACKAGES)
    assert any(e.source == "ppyolo_slim.engine.trainer" and e.target == "ppyolo_slim.data"
               for e in edges), "the trainer's `from ..data import ...` inside _setup_data"


def _write(root: Path, files: Dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_a_cycle_through_a_function_level_relative_import_fails(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "",
                      "pkg/a.py": "from .sub.b import f\n",
                      "pkg/sub/__init__.py": "",
                      "pkg/sub/b.py": "def f():\n    from .. import a\n    return a\n",
                      "pkg/c.py": "import pkg.a\n"})
    edges = import_graph(tmp_path, ["pkg"])
    assert {(e.source, e.target) for e in edges} == {
        ("pkg.a", "pkg.sub.b"), ("pkg.sub.b", "pkg.a"), ("pkg.c", "pkg.a")}
    with pytest.raises(AssertionError, match=r"import cycle pkg\.a -> pkg\.sub\.b -> pkg\.a "
                                             r"\(pkg/a\.py:1, pkg/sub/b\.py:2\)"):
        check_imports(tmp_path, ["pkg"], {})


def test_a_cycle_through_a_lazy_table_fails(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "_LAZY = {'f': 'x'}\n",
                      "pkg/x.py": "from pkg import g\n"})
    with pytest.raises(AssertionError, match=r"import cycle pkg -> pkg\.x -> pkg"):
        check_imports(tmp_path, ["pkg"], {})


def test_a_lower_layer_importing_a_higher_one_fails(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/engine.py": "",
                      "pkg/model/__init__.py": "",
                      "pkg/model/m.py": "import os\n\ndef g():\n    from ..engine import run\n"})
    check_imports(tmp_path, ["pkg"], {"pkg.engine": ("pkg.model",)})     # the allowed way
    with pytest.raises(AssertionError, match=r"pkg/model/m\.py:4: pkg\.model\.m imports pkg\.engine, which"):
        check_imports(tmp_path, ["pkg"], {"pkg.model": ("pkg.engine",)})


def test_every_import_of_the_package_names_a_module_that_exists():
    """A module moved or renamed leaves no import of its old name behind (module-level or inside
    a function), in the package, the tools, the benchmarks or the tests."""
    import importlib.util
    missing = []
    for folder in ("ppyolo_slim", "deploy", "tools", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                for n in names:
                    if n.split(".")[0] == "ppyolo_slim" and importlib.util.find_spec(n) is None:
                        missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {n}")
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)

"""The import graph, read with ``ast`` (nothing is imported): imports flow pages -> ui ->
fer_core with no cycle, fer_core never imports the UI (streamlit, streamlit_webrtc, ui, pages),
and no test module imports another one (tests share builders through tests/factories.py and
fixtures in tests/conftest.py). Imports inside functions count: they are still dependencies."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fer_core", "ui", "pages")
UI_ONLY = ("streamlit", "streamlit_webrtc", "ui", "pages", "streamlit_app")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules=frozenset()) -> set[str]:
    """Every module ``path`` imports, at any depth of the file, as absolute names. ``from a
    import b`` gives ``a.b`` (b may be a module) and ``a`` unless every name is one of
    ``modules``: taking a submodule out of a package is no dependency on its ``__init__``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else \
        _module_name(path).rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = {f"{base}.{alias.name}" for alias in node.names}
            out.update(names)
            if not names <= modules:
                out.add(base)
    return out


def project_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {mod: {m for m in _imports(path, frozenset(files)) if m in files and m != mod}
            for mod, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_project_has_no_import_cycle():
    assert cycles(project_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_imports_flow_pages_ui_core():
    upward = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for name in _imports(path):
                if (pkg == "fer_core" and _top(name) in UI_ONLY) or \
                        (pkg == "ui" and _top(name) in ("pages", "streamlit_app")):
                    upward.append(f"{path.relative_to(ROOT)} imports {name}")
    assert upward == []


def test_no_test_module_imports_another():
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for name in _imports(path):
            leaf = name.split(".")[-1] if _top(name) == "tests" else ""
            if leaf.startswith("test_") or leaf == "conftest":
                offenders.append(f"{path.name} imports {name}")
    assert offenders == []


def test_imports_are_read_from_every_depth(tmp_path, monkeypatch):
    """Function-level and relative imports count (the model <-> runs cycle hid in functions)."""
    pkg = tmp_path / "fer_core"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from fer_core import b\n    from . import c\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    found = _imports(pkg / "a.py")
    assert {"fer_core.b", "fer_core.c"} <= found

"""Typed dependencies in the API (fer_core/api/deps.py): routes declare what they need
(``settings: SettingsDep``, ``service: ModelDep``, ``store: StoreDep`` ...) and never reach into
``app.state``; read with ``ast`` over the routers and the app factory's routes."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUTERS = ROOT / "fer_core" / "api" / "routers"


def state_uses(source: str) -> list[int]:
    """Lines that touch ``<anything>.state`` (``request.app.state``, ``app.state``) or
    ``getattr(x, "state")``; calling a method named ``state`` (a job's ``handle.state()``) is
    something else."""
    tree = ast.parse(source)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "state" and id(node) not in called:
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) > 1 and \
                isinstance(node.args[1], ast.Constant) and node.args[1].value == "state":
            lines.append(node.lineno)
    return sorted(set(lines))


def _routes(tree: ast.AST):
    """Functions decorated with ``@<router or app>.<get|post|...>(...)``."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and \
                        d.func.attr in ("get", "post", "put", "patch", "delete"):
                    yield node


def untyped_depends(source: str) -> list[str]:
    """Route parameters that take a dependency as a default (``x: T = Depends(f)``) instead of
    a typed alias (``x: SettingsDep``)."""
    out = []
    for fn in _routes(ast.parse(source)):
        for default in (*fn.args.defaults, *fn.args.kw_defaults):
            if isinstance(default, ast.Call) and isinstance(default.func, ast.Name) and \
                    default.func.id == "Depends":
                out.append(f"{fn.name} (line {default.lineno})")
    return out


def test_routers_never_touch_app_state():
    offenders = {p.name: state_uses(p.read_text(encoding="utf-8"))
                 for p in sorted(ROUTERS.glob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_routes_take_typed_dependencies():
    files = [*sorted(ROUTERS.glob("*.py")), ROOT / "fer_core" / "api" / "app.py"]
    offenders = {p.name: untyped_depends(p.read_text(encoding="utf-8")) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}
    routes = [fn.name for p in files for fn in _routes(ast.parse(p.read_text(encoding="utf-8")))]
    assert len(routes) >= 18 and "metrics" in routes   # the checks above saw every route


def test_the_checks_find_what_they_forbid():
    bad = '''
@router.get("/x")
async def x(request: Request, service: ModelService = Depends(get_service)):
    s = request.app.state.settings
    return getattr(request.app, "state").store, job.state()
'''
    assert state_uses(bad) == [4, 5]
    assert untyped_depends(bad) == ["x (line 3)"]
    good = '''
@router.get("/x")
async def x(settings: SettingsDep, service: ModelDep):
    return settings.api_key
'''
    assert state_uses(good) == [] and untyped_depends(good) == []


def test_the_dependencies_are_typed_aliases():
    from typing import Annotated, get_args, get_origin

    from fer_core.api import deps
    from fer_core.api.feedback_store import FeedbackStore
    from fer_core.api.service import ModelService
    from fer_core.settings import Settings
    for alias, kind in ((deps.SettingsDep, Settings), (deps.ServiceDep, ModelService),
                        (deps.ModelDep, ModelService), (deps.StoreDep, FeedbackStore)):
        assert get_origin(alias) is Annotated
        kind_, marker = get_args(alias)
        assert kind_ is kind and type(marker).__name__ == "Depends"

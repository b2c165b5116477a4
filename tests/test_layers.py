"""The shape of app/, checked over its import graph (every import, at module level or inside a
function): no two modules import each other; the chat core, the services and the model layer
know neither Sanic's request objects nor the HTTP binding; and outside the WebSocket transport,
code uses `app.websocket` (its package) and never its internal modules."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in APP.rglob("*.py"):
        parts = path.relative_to(APP.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_two_modules_of_app_import_each_other():
    modules = _modules()
    graph = {name: {t for t in _imports(path) if t in modules and t != name}
             for name, path in modules.items()}
    related = {tuple(sorted((a, b))) for a, targets in graph.items() for b in targets
               if a in graph.get(b, ())}
    # A package and its own modules (app.websocket re-exporting its parts) are one unit.
    pairs = sorted((a, b) for a, b in related if not b.startswith(a + "."))
    assert pairs == [], pairs


def test_the_core_knows_no_web_framework_and_no_transport_internals():
    modules = _modules()
    offenders = []
    for name, path in modules.items():
        # Only names that are modules: `from app.websocket import X` names X, not a module.
        imported = {i for i in _imports(path) if i in modules or not i.startswith("app.")}
        if name.startswith(("app.service", "app.chat", "app.model")):
            web = sorted(i for i in imported
                         if i == "sanic" or i.startswith(("sanic.", "app.util.binding")))
            if web:
                offenders.append((name, web))
        if not name.startswith("app.websocket"):
            internals = sorted(i for i in imported if i.startswith("app.websocket."))
            if internals:
                offenders.append((name, internals))
    assert offenders == [], offenders


def test_no_function_under_app_is_longer_than_fifty_lines():
    """Functions small enough to read at once: a longer one is split by what its parts do."""
    long = []
    for path in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 50:
                    long.append((str(path.relative_to(APP.parent)), node.name, lines))
    assert long == [], long

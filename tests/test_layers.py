"""The house rule, checked on the source: each engine package imports only from the packages below it, no
module imports itself back through others (no circles, lazy imports included), and the dashboard reaches the
engine only through ``engine.api``."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

# Bottom to top: a package may import from those before it (and its own modules), never from those after.
LAYERS = ["core", "data", "nn", "search", "train", "deploy", "study", "store", "jobs", "api", "cli"]
DASHBOARD = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")), *sorted((ROOT / "ui").glob("*.py"))]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


KNOWN = {module_name(p) for p in (ROOT / "engine").rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function, as absolute dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {
                f"{node.module}.{alias.name}" for alias in node.names
            } & KNOWN  # ``from engine.nn import fused``
            found |= submodules or {node.module}
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.add(f"relative import in {path.name}")
    return found


def engine_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in (ROOT / "engine").rglob("*.py")}
    return {name: imports(path) & KNOWN for name, path in modules.items()}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_engine_packages_import_only_downwards():
    upward = [
        f"{source} imports {target}"
        for source, targets in engine_graph().items()
        for target in targets
        if layer(source) is not None and layer(target) is not None and layer(target) > layer(source)
    ]
    assert not upward, "\n".join(upward)


def test_no_module_imports_itself_back():
    graph = engine_graph()

    def circle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    circles = {" -> ".join(c) for name in graph if (c := circle_from(name))}
    assert not circles, "\n".join(sorted(circles))


def test_no_relative_imports_anywhere():
    relative = [str(p) for p in (ROOT / "engine").rglob("*.py") if any(i.startswith("relative") for i in imports(p))]
    assert not relative


def test_the_dashboard_reaches_the_engine_only_through_its_api():
    strays = [
        f"{path.relative_to(ROOT)} imports {m}"
        for path in DASHBOARD
        for m in imports(path)
        if m.startswith("engine") and m != "engine" and not (m == "engine.api" or m.startswith("engine.api."))
    ]
    assert not strays, "\n".join(strays)

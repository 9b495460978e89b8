"""The rules of docs/architecture.md that a machine can check, from the `ast` of every file.

- no import cycle among product modules, counting imports inside functions and under
  ``TYPE_CHECKING`` (a lazy import hides a cycle; it does not remove it);
- ``engine`` imports no edge package; the HTTP API and media import nothing from ``gateway``;
  nothing but ``runtime`` imports ``runtime``; the SDK imports only the engine's codec;
- no function longer than 80 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("engine", "gateway", "api", "media", "runtime", "sdk", "web")
EDGES = ("gateway", "api", "media", "runtime", "sdk", "web", "loadtest")
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, ast.Module]:
    out = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = ast.parse(path.read_text(), str(path))
    return out


MODULES = _modules()


def _imports(name: str, tree: ast.Module) -> set[str]:
    """Every product module ``name`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = name.split(".")[: -node.level] if node.level else []
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t.split(".")[0] in PRODUCT:
                while t and t not in MODULES:  # `from engine import keys` -> engine.keys
                    t = t.rpartition(".")[0]
                if t and t != name:
                    found.add(t)
    return found


GRAPH = {name: _imports(name, tree) for name, tree in MODULES.items()}


def test_there_are_modules_to_check() -> None:
    assert len(MODULES) > 40 and "engine.session" in MODULES and "api.app" in MODULES


def test_no_import_cycles() -> None:
    seen: dict[str, int] = {}  # 1 = on the path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(GRAPH.get(node, ())):
            if seen.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[node] = 2

    for name in sorted(GRAPH):
        if name not in seen:
            visit(name, [name])
    assert cycles == []


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.split(".")[0] == package
        for target in targets
        if target.split(".")[0] in forbidden
    )


def test_engine_imports_no_edge() -> None:
    assert _violations("engine", EDGES) == []


def test_api_and_media_import_nothing_from_the_gateway() -> None:
    assert _violations("api", ("gateway", "runtime")) == []
    assert _violations("media", ("gateway", "api", "runtime")) == []


def test_only_runtime_wires_roles_together() -> None:
    for package in ("engine", "gateway", "api", "media", "sdk", "web"):
        assert _violations(package, ("runtime",)) == []
    assert _violations("sdk", ("gateway", "api", "media", "web")) == []


def test_no_function_longer_than_80_lines() -> None:
    long = sorted(
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, tree in MODULES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    )
    assert long == []


def test_engine_never_reads_the_environment() -> None:
    """Settings come in through ``Settings.from_env(environ)`` called at the edge."""
    reads = sorted(
        f"{name}:{node.lineno}"
        for name, tree in MODULES.items()
        if name.split(".")[0] == "engine"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in ("environ", "getenv", "environb")
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )
    assert reads == []

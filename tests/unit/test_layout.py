"""The package's shape: no import cycle between deploysuite's modules (function-level imports
count), no lower layer importing a higher one, and invoke known only to the task edge."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "deploysuite"
# lowest first: a package may import its own layer and the ones before it, never one after
LAYERS = ("core", "config", "images", "edge", "engines", "backup", "monitoring", "deploy", "ci")
EDGE_ONLY = ("invoke",)  # only deploysuite.cli (and tasks/) may import these


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(deploysuite modules, other top-level packages) that `path` imports anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside, outside = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "deploysuite":
                outside.add(name.split(".")[0])
                continue
            # `from deploysuite.backup import dump` names a module; `... import Postgres` does not
            while name not in known:
                name = name.rsplit(".", 1)[0]
            inside.add(name)
    return inside, outside


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    edges = {}
    for name, path in found.items():
        inside, _ = imported(path, known)
        # a package's __init__ is imported on the way to its modules: not an edge of its own
        edges[name] = {m for m in inside if m != name and m != "deploysuite"}
    return edges


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # deploysuite/__init__.py: PROJECT_ROOT only
    if parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return len(LAYERS)  # deploysuite.cli: the task edge, above every domain


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import loop, each as the modules on it (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_loop_through_three_modules():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    assert cycles(graph()) == []


def test_every_module_sits_in_a_layer_package():
    loose = [
        name
        for name, path in modules().items()
        if name.count(".") == 1 and path.name != "__init__.py" and name != "deploysuite.cli"
    ]
    assert loose == [], "put each module in one of: " + ", ".join(LAYERS)


@pytest.mark.parametrize("package", LAYERS)
def test_a_layer_imports_only_itself_and_the_layers_below(package):
    edges = graph()
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in edges.items()
        if source.split(".")[1:2] == [package]
        for target in targets
        if layer(target) > layer(source)
    )
    assert upward == []


def test_only_the_task_edge_knows_invoke():
    found = modules()
    known = set(found)
    users = sorted(
        name
        for name, path in found.items()
        if name != "deploysuite.cli" and set(EDGE_ONLY) & imported(path, known)[1]
    )
    assert users == []


def test_the_backup_image_does_not_ship_invoke():
    requirements = (ROOT / "docker" / "backup" / "requirements.txt").read_text()
    pins = [line.split("==")[0] for line in requirements.splitlines() if "==" in line]
    assert "invoke" not in pins


def test_the_backup_agent_imports_without_the_task_edge_and_ssh():
    """The backup service's image carries boto3 and python-dotenv only: importing its agent must
    not pull in invoke, paramiko, jinja2 or the docker SDK."""
    blocked = ("invoke", "paramiko", "fabric", "jinja2", "docker", "yaml")
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import deploysuite.backup.agent\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]

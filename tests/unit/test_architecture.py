"""The package's shape: one place replies or drops, and imports never go round in a circle.

These read the source (``ast``): the first test would fail the day a module or
the router answers a request by itself again, the second the day a
function-level import hides a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "modules" / "sipshield"
NG_CLIENT = REPO / "rtpengine"
# KSR calls that answer a request, or drop it or its connection.
REPLYING_CALLS = {"send_reply", "sl_send_reply", "sl_reply_error", "send_reply_mhdrs", "drop"}
THE_ONE_PLACE = "sipshield.core.remediation"


def _sources() -> dict[str, Path]:
    """Every module of the package, by its dotted name."""
    sources = {}
    for root, package in ((PACKAGE, "sipshield"), (NG_CLIENT, "sipshield.rtpengine")):
        for path in sorted(root.rglob("*.py")):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            sources[".".join(parts)] = path
    return sources


SOURCES = _sources()


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of the imports under ``if TYPE_CHECKING:`` (never run)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for child in ast.walk(node):
                lines.add(getattr(child, "lineno", 0))
    return lines


def _imports(name: str) -> set[str]:
    """The package modules ``name`` imports when it runs, at any depth of its code."""
    tree = ast.parse(SOURCES[name].read_text())
    skipped = _type_checking_only(tree)
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", 0) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in SOURCES and t != name and t != "sipshield"}
    return found


def test_no_code_but_remediation_replies_to_or_drops_a_request():
    offenders = []
    for name, path in SOURCES.items():
        if name == THE_ONE_PLACE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in REPLYING_CALLS
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)}")
    assert offenders == []


def test_the_import_graph_has_no_cycle_even_through_function_level_imports():
    graph = {name: _imports(name) for name in SOURCES}
    cycles, done, path = [], set(), []

    def visit(name: str) -> None:
        if name in path:
            cycles.append(path[path.index(name) :] + [name])
            return
        if name in done:
            return
        path.append(name)
        for target in sorted(graph[name]):
            visit(target)
        path.pop()
        done.add(name)

    for name in SOURCES:
        visit(name)
    assert cycles == []


def test_every_module_imports_on_its_own():
    # A fresh interpreter, and each module first in an empty package cache:
    # an import that works only after another module was loaded fails here.
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {sorted(SOURCES)!r}:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('sipshield')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {exc!r}')\n"
        "print('\\n'.join(failed))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""

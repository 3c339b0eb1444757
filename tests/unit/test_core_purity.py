"""core/ and ports/ stay pure: no engine SDKs, no processes, sockets or filesystem access.

Checked two ways: statically (the import statements of every source file)
and dynamically (what importing every module drags into ``sys.modules``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PURE_DIRS = ("core", "ports")
FORBIDDEN = frozenset(
    {"docker", "podman", "subprocess", "socket", "mitmproxy", "os", "pathlib", "shutil", "tempfile"}
)
# Packages whose import would mean an engine SDK or the proxy got pulled in.
HEAVY = ("docker", "podman", "mitmproxy")


def pure_sources() -> list[Path]:
    return sorted(p for d in PURE_DIRS for p in (REPO / d).rglob("*.py"))


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level module) of every import, including importlib/__import__ with a literal name."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


def test_there_are_pure_sources_to_check() -> None:
    names = {p.relative_to(REPO).as_posix() for p in pure_sources()}
    assert {"core/identity.py", "core/routing.py", "ports/runtime.py"} <= names


@pytest.mark.parametrize("source", pure_sources(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_forbidden_imports(source: Path) -> None:
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    rel = source.relative_to(REPO)
    bad = [f"{rel}:{line} imports {mod}" for line, mod in imported_modules(tree) if mod in FORBIDDEN]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_every_import_form() -> None:
    tree = ast.parse(
        "import os\nimport docker.errors\nfrom pathlib import Path\nfrom . import x\n"
        "import importlib\nimportlib.import_module('subprocess')\n__import__('socket')\n"
    )
    assert {m for _, m in imported_modules(tree)} == {"os", "docker", "pathlib", "importlib", "subprocess", "socket"}


def test_importing_core_and_ports_loads_no_engine_sdk_or_proxy() -> None:
    script = (
        "import importlib, pkgutil, sys\n"
        "import bottle.core, bottle.ports\n"
        "for pkg in (bottle.core, bottle.ports):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'docker', 'podman', 'mitmproxy', 'subprocess'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    loaded = ast.literal_eval(result.stdout.strip())
    # subprocess may come in through the standard library; only the heavy ones are banned
    assert not [m for m in loaded if m in HEAVY], loaded

"""`bottle --help` and `start --dry-run` load no container SDK, no mitmproxy, no rich."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLAUDE = str(Path(__file__).resolve().parents[2] / "docs" / "examples" / "claude-code.json")
FORBIDDEN = ("docker", "podman", "mitmproxy", "rich")

PROBE = """
import json, sys
from bottle.cli.main import main
sys.argv = ["bottle", *json.loads(sys.argv[1])]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
with open(OUT, "w") as fh:
    json.dump({"code": code, "modules": sorted(sys.modules)}, fh)
"""


def loaded_modules(args: list[str], tmp_path: Path) -> tuple[int, set[str]]:
    out = tmp_path / "modules.json"
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    env.pop("BOTTLE_RUNTIME", None)  # let start probe the engines: probing must not import an SDK either
    script = f"OUT = {str(out)!r}\n" + PROBE
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(args)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert out.exists(), proc.stderr
    data = json.loads(out.read_text())
    return data["code"], set(data["modules"])


def top_levels(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["start", "--help"],
        ["start", "claude", "--dry-run", "--manifest", CLAUDE],
        ["start", "claude", "--dry-run", "--format=json", "--manifest", CLAUDE],
        ["info", "claude", "--manifest", CLAUDE],
    ],
    ids=lambda a: " ".join(a)[:40],
)
def test_no_sdk_is_imported(args: list[str], tmp_path: Path) -> None:
    code, modules = loaded_modules(args, tmp_path)
    assert code == 0
    assert not top_levels(modules) & set(FORBIDDEN), sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)


def test_help_loads_neither_commands_nor_wiring(tmp_path: Path) -> None:
    code, modules = loaded_modules(["--help"], tmp_path)
    assert code == 0
    for name in ("bottle.cli.start", "bottle.cli.info", "bottle.cli.wiring", "dependency_injector", "yaml",
                 "bottle.adapters.local"):
        assert name not in modules, name

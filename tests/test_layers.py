"""Layer 0 is pure: importing (and using) it in a fresh interpreter loads neither psutil, rich nor
asyncio. That is what keeps `revostack check` and `ports` fast and the core testable without a world."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

LAYER0 = ["errors", "dotenv", "interp", "locate", "stackfile", "graph", "plan", "procfile", "render", "reconcile",
          "export"]
HEAVY = ["psutil", "rich", "asyncio"]


def loaded_after(code: str, cwd=REPO) -> list[str]:
    probe = code + f"\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    r = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", LAYER0)
def test_layer0_module_imports_no_heavy_module(module):
    assert loaded_after(f"import revostack.{module}") == []


def test_the_heavy_modules_are_detectable():
    """The probe itself works: importing the edge that uses psutil does load it."""
    assert "psutil" in loaded_after("import psutil")


def test_using_layer0_loads_no_heavy_module(tmp_path):
    (tmp_path / ".env").write_text("A=1\n")
    (tmp_path / "Procfile").write_text("web: python -V\n")
    (tmp_path / "Stackfile.toml").write_text(
        '[services.db]\ncmd = "x"\nport = 5432\n'
        '[services.web]\ncmd = ["x", "${db.port}"]\nport = 8000\ndepends_on = ["db"]\n'
    )
    code = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from revostack import errors, dotenv, interp, locate, stackfile, graph, plan, procfile, render
root = Path({str(tmp_path)!r})
stack = stackfile.load(root / "Stackfile.toml")
class World:
    def is_free(self, port): return True
    def holder(self, port): return None
    def os_port(self): return 40000
names = set(stack.services)
p = plan.build(stack, names, plan.plan_ports(stack, names, World()), {{}})
assert p.by_name()["web.1"].cmd == ("x", "5432"), p
for fmt in ("tree", "dot", "mermaid"):
    render.graph(stack, fmt)
render.stackfile_template("x")
render.stackfile_from_procfile(procfile.parse("web: a"), "x")
procfile.load(root / "Procfile")
try:
    stackfile.loads("[services.a]\\ncmd = ''\\n", root / "S.toml")
except errors.ConfigError:
    pass
"""
    assert loaded_after(code) == []


# What `ports` and `check` on a valid Stackfile with no stack running must not import: the
# runtime's modules and the stdlib ones that cost milliseconds each (docs/performance.md).
NOT_FOR_PORTS = ["asyncio", "rich", "psutil", "tomlkit", "dataclasses", "inspect", "hashlib", "socket", "json",
                 "difflib", "revostack.locate", "textual", "revostack.ui", "docker", "revostack.engine",
                 "revostack.container"]


@pytest.mark.parametrize("command", ["ports", "check"])
def test_ports_and_check_import_only_what_they_need(tmp_path, command):
    (tmp_path / "Stackfile.toml").write_text(
        '[services.db]\ncmd = "x"\nport = 5432\nhealth = { tcp = "${host}:${port}" }\n'
        '[services.web]\ncmd = ["x", "${db.port}"]\nport = 8000\ndepends_on = ["db"]\nwatch = ["*.py"]\n'
    )
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "revostack", command], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # -X importtime writes one line per module imported: "import time: self | cumulative | name"
    loaded = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "revostack.stackfile" in loaded  # the probe sees our own imports
    assert sorted(m for m in NOT_FOR_PORTS if m in loaded) == []


def _start_imports(folder, *args) -> tuple[str, set[str]]:
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "revostack", "start", *args], cwd=folder,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout, {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}


def test_start_imports_neither_asyncio_nor_the_supervisor(tmp_path):
    """`start` runs honcho's contract in a loop of its own (revostack/starter.py): what its
    start-up speed rests on."""
    import socket

    (tmp_path / "Procfile").write_text("once: echo done\n")
    out, loaded = _start_imports(tmp_path)
    assert "once.1 | done" in out
    assert "revostack.starter" in loaded
    assert sorted(m for m in ["asyncio", "rich", "psutil", "tomlkit", "dataclasses", "revostack.supervisor",
                              "revostack.process", "selectors", "subprocess", "textual", "docker",
                              "revostack.engine"] if m in loaded) == []
    with socket.socket() as taken:  # with its port taken, psutil names the holder; still no asyncio
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out, loaded = _start_imports(tmp_path, "-p", str(port))
    assert f"once.1: port {port} is in use by pid {os.getpid()} " in out, out
    assert sorted(m for m in ["asyncio", "revostack.supervisor", "revostack.process"] if m in loaded) == []

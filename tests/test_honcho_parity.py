"""`revostack start`, `run` and `check` side by side with honcho itself: the same arguments, in
every position honcho allows, must mean the same (the Procfile found, the .env files read, the
folder the processes run in, what is printed by the processes, the exit code)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_runtime import PY, clean_env, write

HONCHO = shutil.which("honcho") or (str(Path(sys.executable).parent / "honcho")
                                    if (Path(sys.executable).parent / "honcho").exists() else None)
pytestmark = [pytest.mark.skipif(HONCHO is None, reason="honcho is not installed (pip install honcho)"),
              pytest.mark.timeout(120)]
LINE = re.compile(r"^\d\d:\d\d:\d\d (\S+)\s+\| (.*)$")


@pytest.fixture
def app(tmp_path) -> Path:
    """A folder with a Procfile and .env at the top, another pair in sub/, and other.env."""
    # prints, then stays a moment: the first exit stops the others, and each must have printed
    show = f"{PY} -c \"import os, time; print('cwd=' + os.getcwd(), 'X=' + os.environ.get('X', '-'), " \
           f"'Y=' + os.environ.get('Y', '-'), 'PORT=' + os.environ.get('PORT', '-'), flush=True); time.sleep(1)\""
    write(tmp_path / "Procfile", f"top: {show}\n")
    write(tmp_path / ".env", "X=top-env\n")
    write(tmp_path / "other.env", "Y=other\n")
    write(tmp_path / "sub" / "Procfile", f"web: {show}\nworker: {show}\n")
    write(tmp_path / "sub" / ".env", "X=sub-env\n")
    write(tmp_path / "sub" / "dev.env", "PROCFILE=Procfile\nX=dev-env\n")
    return tmp_path


def run(tool: str, args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    argv = [HONCHO, *args] if tool == "honcho" else [PY, "-m", "revostack", *args]
    return subprocess.run(argv, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def printed(out: str, prefix: bool = True) -> list[str]:
    """What the processes printed, sorted (their order across processes is not fixed)."""
    lines = []
    for line in out.splitlines():
        if not prefix:
            if not line.startswith("cwd="):
                continue
            lines.append(line)
            continue
        m = LINE.match(line)
        if m and m.group(1) != "system":
            lines.append(f"{m.group(1)} {m.group(2)}")
    return sorted(lines)


@pytest.mark.parametrize("args", [
    ["start"],
    ["-f", "sub/Procfile", "start"],
    ["start", "-f", "sub/Procfile"],
    ["--procfile", "sub/Procfile", "start"],
    ["-d", "sub", "start"],
    ["start", "-d", "sub"],
    ["-d", "sub", "-f", "Procfile", "start"],
    ["-d", "sub", "start", "-f", "Procfile"],
    ["-e", "other.env", "start"],
    ["start", "-e", ".env,other.env"],
    ["-e", "other.env", "start", "-e", ".env"],  # after the command wins
    ["-e", "missing.env", "start"],  # skipped, as honcho does
    ["-f", "sub/Procfile", "start", "web"],
    ["-f", "sub/Procfile", "start", "-c", "web=2"],
    ["--no-colour", "start"],
    ["start", "-p", "7000"],
])
def test_start_means_what_honcho_start_means(app, args):
    h, r = run("honcho", args, app), run("revostack", args, app)
    assert h.returncode == r.returncode == 0, (h.stderr, r.stderr)
    assert printed(r.stdout) == printed(h.stdout) != [], (h.stdout, r.stdout)


@pytest.mark.parametrize("args", [["--no-prefix", "start"], ["start", "--no-prefix"]])
def test_no_prefix_in_both_positions(app, args):
    h, r = run("honcho", args, app), run("revostack", args, app)
    assert printed(r.stdout, prefix=False) == printed(h.stdout, prefix=False) != []
    assert not any(LINE.match(line) for line in r.stdout.splitlines())


@pytest.mark.parametrize("where", ["environment", "dotenv"])
def test_procfile_variable_selects_the_procfile(app, where):
    env = clean_env()
    args = ["start"]
    if where == "environment":
        env["PROCFILE"] = "sub/Procfile"
    else:
        args = ["-d", "sub", "-e", "dev.env", "start"]  # PROCFILE=Procfile in sub/dev.env
    h, r = run("honcho", args, app, env), run("revostack", args, app, env)
    assert h.returncode == r.returncode == 0, (h.stderr, r.stderr)
    assert printed(r.stdout) == printed(h.stdout)
    assert any(line.startswith("web.1 ") for line in printed(r.stdout))


SHOW_ENV = ["sh", "-c", "echo X=${X:-unset} Y=${Y:-unset} cwd=$(pwd)"]


@pytest.mark.parametrize("args", [
    ["run", *SHOW_ENV],
    ["run", "--", *SHOW_ENV],
    ["-e", "other.env", "run", *SHOW_ENV],
    ["run", "-e", "other.env,.env", *SHOW_ENV],
    ["-d", "sub", "run", *SHOW_ENV],
    ["run", "-d", "sub", *SHOW_ENV],
])
def test_run_means_what_honcho_run_means(app, args):
    h, r = run("honcho", args, app), run("revostack", args, app)
    assert h.returncode == r.returncode == 0, (h.stderr, r.stderr)
    theirs = h.stdout.strip().splitlines()[-1]
    assert theirs in r.stdout, (h.stdout, r.stdout)


def test_run_needs_no_procfile(tmp_path):
    write(tmp_path / ".env", "X=only-env\n")
    h, r = run("honcho", ["run", *SHOW_ENV], tmp_path), run("revostack", ["run", *SHOW_ENV], tmp_path)
    assert h.returncode == r.returncode == 0, r.stderr
    assert h.stdout == r.stdout and "X=only-env" in r.stdout


def test_run_passes_the_exit_code_and_says_127_for_an_unknown_program(app):
    for args, code in ((["run", "sh", "-c", "exit 7"], 7), (["run", "no-such-program-xyz"], 127)):
        h, r = run("honcho", args, app), run("revostack", args, app)
        assert h.returncode == r.returncode == code, (h.stderr, r.stderr)
    assert r.stderr.strip().splitlines() == ["revostack: run: no-such-program-xyz: command not found"]


@pytest.mark.parametrize("args", [["check"], ["-f", "sub/Procfile", "check"], ["check", "-f", "sub/Procfile"],
                                  ["check", "--procfile", "sub/Procfile"], ["-d", "sub", "check"]])
def test_check_says_what_honcho_check_says(app, args):
    h, r = run("honcho", args, app), run("revostack", args, app)
    assert h.returncode == r.returncode == 0, (h.stderr, r.stderr)
    said = re.search(r"Valid procfile detected \(([^)]*)\)", h.stderr).group(0)
    assert said in r.stderr, (h.stderr, r.stderr)
    assert "valid" in r.stdout  # and revostack's own report


def test_check_without_a_procfile_fails_in_both(tmp_path):
    h, r = run("honcho", ["check"], tmp_path), run("revostack", ["check"], tmp_path)
    assert h.returncode != 0 and r.returncode != 0
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1

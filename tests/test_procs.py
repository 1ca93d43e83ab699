"""revostack.procs: which commands are `exec`'d by `sh -c` (one rule for up, start and the
exports), and spawning with a pipe."""

from __future__ import annotations

import os

import pytest

from revostack import procs
from revostack.export import shell_script


@pytest.mark.parametrize("cmd", ["python3 -m http.server 8000", ".venv/bin/python app.py", "bin/run --port $PORT",
                                 "exec-helper start"])
def test_a_simple_command_is_execd(cmd):
    assert procs.is_simple(cmd)
    assert procs.argv_for(cmd) == ["/bin/sh", "-c", "exec " + cmd]
    assert shell_script(cmd) == "exec " + cmd  # the exports follow the same rule


@pytest.mark.parametrize("cmd", ["a && b", "a | b", "echo 'x y'", "FOO=1 server", ". ./env.sh", "cd web",
                                 "ulimit -n 4096", "eval $CMD", "if true; then x; fi", "run > log", "", "   "])
def test_anything_else_runs_as_written(cmd):
    assert not procs.is_simple(cmd)
    assert procs.argv_for(cmd) == ["/bin/sh", "-c", cmd]
    assert shell_script(cmd) == cmd


def test_an_array_is_execd_as_is():
    assert procs.argv_for(("python3", "-c", "print(1)")) == ["python3", "-c", "print(1)"]


def test_spawn_piped_gives_the_output_and_the_code(tmp_path):
    pid, fd = procs.spawn_piped(["/bin/sh", "-c", "pwd; echo err >&2; exit 3"], str(tmp_path), dict(os.environ))
    try:
        os.set_blocking(fd, True)
        out = b""
        while chunk := os.read(fd, 65536):
            out += chunk
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    procs.spawned.discard(pid)
    assert os.waitstatus_to_exitcode(status) == 3
    assert out.decode().split() == [str(tmp_path), "err"]  # its own cwd; stdout and stderr in one pipe
    assert os.getcwd() != str(tmp_path)  # ours is unchanged


def test_spawn_piped_cannot_start_what_is_not_there(tmp_path):
    with pytest.raises(FileNotFoundError):
        procs.spawn_piped(["/no/such/program"], str(tmp_path), {})

"""A `.revostack/state.json` that cannot be read — garbage, empty, truncated, the wrong shape,
the wrong types, NUL bytes, a directory — is named in one line by every command that reads the
stack's state, with what the command does instead; never a traceback, never a bare "not
running". `down` still finds the stack's processes by their marker."""

from __future__ import annotations

import json
import os
import signal

import pytest

from conftest import cli, wait_for
from helpers_runtime import PY, Run, alive, assert_nothing_left, clean_env, stack_id, write

KINDS = {
    "garbage": (b"xx{{ not json", "is not valid JSON"),
    "empty": (b"", "is empty"),
    "truncated": (b'{"pid": 12, "instances": {"web.1": {"pid"', "is not valid JSON"),
    "shape": (b"[1, 2, 3]", "has the wrong shape"),
    "types": (b'{"pid": 1, "instances": {"web.1": {"pid": "12"}}}', 'has the wrong type for "web.1" pid'),
    "nul": (b'{"pid":\x00 1}', "holds NUL bytes"),
    "directory": (None, "is a directory"),
}
COMMANDS = {
    "ps": (0, "it is not running"),
    "ports": (0, "showing the plan instead"),
    "restart web": (4, "nothing to restart"),
    "logs": (0, "showing the log files as they are"),
    "top --once": (4, "the live view asks the control socket only"),
    "down": (0, "REVOSTACK_STACK marker instead"),
}


def corrupt(folder, kind: str) -> None:
    state = folder / ".revostack" / "state.json"
    state.parent.mkdir(exist_ok=True)
    data = KINDS[kind][0]
    if data is None:
        state.mkdir()
    else:
        state.write_bytes(data)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_names_an_unreadable_state_file(tmp_path, kind, command):
    write(tmp_path / "Stackfile.toml", '[services.web]\ncmd = "sleep 100"\nport = 0\n')
    corrupt(tmp_path, kind)
    r = cli(*command.split(), cwd=tmp_path, env=clean_env())
    code, instead = COMMANDS[command]
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    said = [line for line in r.stderr.splitlines() if "state.json" in line]
    assert len(said) == 1, r.stderr
    assert said[0].startswith(f"revostack: .revostack/state.json {KINDS[kind][1]}")
    assert "cannot be read" in said[0] and instead in said[0], said


@pytest.mark.timeout(60)
def test_a_running_stack_answers_and_down_finds_the_processes_by_their_marker(tmp_path, reaper):
    write(tmp_path / "Stackfile.toml", f"""
        [services.web]
        cmd = ["{PY}", "-c", "import time; print('up', flush=True); time.sleep(600)"]
        """)
    sid = stack_id(tmp_path / "Stackfile.toml")
    reaper.stacks.append(sid)
    run = Run(reaper, ["up", "--no-watch"], tmp_path)
    run.wait_line(r"web\.1 started", 30, system=True)
    state = tmp_path / ".revostack" / "state.json"  # written just after the "started" line: wait for it
    pid = wait_for(lambda: json.loads(state.read_text())["instances"]["web.1"]["pid"], 10, what="the pid recorded")
    corrupt_later = tmp_path / ".revostack" / "state.json"
    corrupt_later.write_text("{oops")
    r = cli("ps", "--json", cwd=tmp_path, env=clean_env())  # the running stack answers on its socket
    assert r.returncode == 0 and json.loads(r.stdout)["instances"][0]["pid"] == pid
    assert "asking the running stack instead" in r.stderr
    os.kill(run.proc.pid, signal.SIGKILL)  # the orchestrator dies; its child lives on
    run.wait(10)
    corrupt_later.write_text("{oops")
    assert alive(pid)
    r = cli("down", cwd=tmp_path, env=clean_env())
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert "REVOSTACK_STACK marker instead" in r.stderr
    assert f"stopped pid {pid}" in r.stdout
    wait_for(lambda: not alive(pid) or None, 10, what="the leftover gone")
    assert_nothing_left(sid)

"""End-to-end tests of `revostack start`, the drop-in for `honcho start`: output format, ports
by foreman's rule, .env files, concurrency, exit codes, signals, quiet and prefix options, and a
taken port moved with a line saying so."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket

import pytest

from conftest import wait_for
from helpers_runtime import PY, Run, assert_nothing_left, clean_env, free_base, stack_id, write

HONCHO_LINE = re.compile(r"^\d\d:\d\d:\d\d (system|[a-z]+\.\d+) +\| (.*)$")

SVC = """
import os, sys, time
name = sys.argv[1]
code = int(sys.argv[2]) if len(sys.argv) > 2 else None
wait = sys.argv[3] if len(sys.argv) > 3 else None
env = os.environ
print(f"{name} PORT={env.get('PORT')} FOO={env.get('FOO')} A={env.get('A')} B={env.get('B')} "
      f"SHARED={env.get('SHARED')} SERVICE={env.get('REVOSTACK_SERVICE')}", flush=True)
open(f"{env['REVOSTACK_SERVICE']}.up", "w").close()
if code is not None:
    # wait for the other process to be up (when told), then exit with that code
    while wait and not os.path.exists(f"{wait}.up"):
        time.sleep(0.02)
    sys.exit(code)
while True:
    time.sleep(3600)
"""


def procfile(folder, *names: str, code: dict | None = None) -> None:
    write(folder / "svc.py", SVC)
    lines = ["# a Procfile, as honcho and foreman read it"]
    for n in names:
        extra = f" {code[n]}" if code and n in code else ""
        lines.append(f"{n}: {shlex.quote(PY)} svc.py {n}{extra}")
    write(folder / "Procfile", "\n".join(lines) + "\n")


def ports_seen(run: Run, instances) -> dict[str, int]:
    out = {}
    for inst in instances:
        m = run.wait_line(rf"PORT=(\d+) .*SERVICE={re.escape(inst)}$", 30)
        out[inst] = int(m.group(1))
    return out


@pytest.mark.timeout(60)
def test_start_format_ports_env_concurrency_and_sigint(tmp_path, reaper):
    procfile(tmp_path, "web", "worker", "clock")
    write(tmp_path / ".env", "FOO=from-dotenv  # a comment\n")
    sid = stack_id(tmp_path / "Procfile")
    reaper.stacks.append(sid)
    base = free_base()
    run = Run(reaper, ["start", "-p", str(base), "-c", "web=2"], tmp_path)
    ports = ports_seen(run, ["web.1", "web.2", "worker.1", "clock.1"])
    # foreman's rule: base + 100 per process type in Procfile order + 1 per instance
    assert ports == {"web.1": base, "web.2": base + 1, "worker.1": base + 100, "clock.1": base + 200}
    assert all("FOO=from-dotenv " in line for line in run.lines() if "PORT=" in line)

    assert run.stop(signal.SIGINT) == 130  # as honcho: SIGINT before any process ended
    lines = run.lines()
    bad = [line for line in lines if not HONCHO_LINE.match(line)]
    assert not bad, bad
    assert len({line.index(" | ") for line in lines}) == 1  # names padded to one width
    assert lines[0][9:].startswith("system   | ")  # "worker.1" is the widest name
    system = run.system()
    for inst in ("web.1", "web.2", "worker.1", "clock.1"):
        assert sum(bool(re.fullmatch(rf"{inst} started \(pid=\d+\)", s)) for s in system) == 1, (inst, system)
        assert sum(bool(re.fullmatch(rf"{inst} stopped \(rc=-?\d+\)", s)) for s in system) == 1, (inst, system)
        assert any(s.startswith(f"sending SIGTERM to {inst} (pid ") for s in system)
    assert "SIGINT received, stopping" in system
    assert_nothing_left(sid)


@pytest.mark.timeout(60)
def test_start_first_exit_stops_the_others_and_gives_its_code(tmp_path, reaper):
    procfile(tmp_path, "quick", "long", code={"quick": "3 long.1"})
    write(tmp_path / "a.env", "A=1\nSHARED=a\n")
    write(tmp_path / "b.env", "B=2\nSHARED=b\n")
    write(tmp_path / ".env", "FOO=not-read-when-e-is-given\n")
    sid = stack_id(tmp_path / "Procfile")
    reaper.stacks.append(sid)
    base = free_base()
    run = Run(reaper, ["start", "-p", str(base), "-e", "a.env,b.env", "-q", "long"], tmp_path)
    assert run.wait(45) == 3  # the code of the first process that exited
    system = run.system()
    long_pid = int(re.search(r"long\.1 started \(pid=(\d+)\)", "\n".join(system)).group(1))
    assert "quick.1 stopped (rc=3)" in system
    assert f"sending SIGTERM to long.1 (pid {long_pid})" in system
    assert any(re.fullmatch(r"long\.1 stopped \(rc=-?\d+\)", s) for s in system), system
    assert system.index("quick.1 stopped (rc=3)") < system.index(f"sending SIGTERM to long.1 (pid {long_pid})")
    # -e a.env,b.env: both read, the later wins; .env is not read
    assert run.of("quick.1") == [f"quick PORT={base} FOO=None A=1 B=2 SHARED=b SERVICE=quick.1"]
    # -q long: its lines are hidden (its system lines are not)
    assert (tmp_path / "long.1.up").exists()
    assert run.of("long.1") == [] and "long PORT=" not in run.text
    assert_nothing_left(sid, [long_pid])


@pytest.mark.timeout(60)
def test_start_subset_taken_port_no_prefix_and_sigterm(tmp_path, reaper):
    procfile(tmp_path, "web", "worker", "clock")
    sid = stack_id(tmp_path / "Procfile")
    reaper.stacks.append(sid)
    base = free_base(offsets=(0, 100, 200, 201))
    with socket.socket() as held:  # another program listens on clock's formula port
        held.bind(("127.0.0.1", base + 200))
        held.listen()
        run = Run(reaper, ["start", "-p", str(base), "--no-prefix", "worker", "clock"], tmp_path,
                  env=clean_env(PORT="7000"))
        wait_for(lambda: sum("PORT=" in line for line in run.lines()) >= 2, 30, what="both processes")
    lines = run.lines()
    # a subset keeps the formula ports (Procfile order), and the taken one is moved, saying so
    assert f"worker PORT={base + 100} FOO=None A=None B=None SHARED=None SERVICE=worker.1" in lines
    assert f"clock PORT={base + 201} FOO=None A=None B=None SHARED=None SERVICE=clock.1" in lines
    assert f"clock.1: port {base + 200} is in use by pid {os.getpid()} " in run.text
    assert re.search(rf"^clock\.1: port {base + 200} is in use by .*: moved to {base + 201}$", run.text, re.M)
    assert run.stop(signal.SIGTERM) == 143  # as honcho: SIGTERM before any process ended
    lines = run.lines()
    # --no-prefix: the bare lines, revostack's own included
    assert not any(HONCHO_LINE.match(line) or " | " in line for line in lines), lines
    assert any(re.fullmatch(r"worker\.1 started \(pid=\d+\)", line) for line in lines)
    assert "SIGTERM received, stopping" in lines
    assert not (tmp_path / "web.1.up").exists()
    assert_nothing_left(sid)


@pytest.mark.timeout(60)
def test_start_base_port_from_dotenv(tmp_path, reaper):
    procfile(tmp_path, "web", "worker", code={"web": "0"})
    base = free_base(offsets=(0, 100))
    write(tmp_path / ".env", f"PORT={base}\nFOO=bar\n")
    sid = stack_id(tmp_path / "Procfile")
    reaper.stacks.append(sid)
    run = Run(reaper, ["start"], tmp_path, env=clean_env(PORT="7000"))
    assert run.wait(45) == 0  # web exited 0 first
    assert run.of("web.1") == [f"web PORT={base} FOO=bar A=None B=None SHARED=None SERVICE=web.1"]
    assert_nothing_left(sid)

"""`revostack start`'s own loop (revostack/starter.py), end to end with real processes: what the
asyncio supervisor used to do for it and the loop must still do — a pipe held open by a
grandchild, a daemonised grandchild swept at the end, a second Ctrl-C, a line without its
newline, signals restored, and nothing left running."""

from __future__ import annotations

import shlex
import signal
import time

import pytest

from conftest import wait_for
from helpers_runtime import PY, Run, alive, assert_nothing_left, free_base, stack_id, write


def start(folder, reaper, **scripts: str) -> tuple[str, Run]:
    """``revostack start`` on a Procfile of these scripts: (the stack id, the run)."""
    sid = procfile(folder, **scripts)
    reaper.stacks.append(sid)
    return sid, Run(reaper, ["start", "-p", str(free_base())], folder)


def procfile(folder, **scripts: str) -> str:
    """A Procfile running each script with this Python; returns the stack id (its marker)."""
    lines = []
    for name, code in scripts.items():
        write(folder / f"{name}.py", code)
        lines.append(f"{name}: {shlex.quote(PY)} -u {name}.py")
    write(folder / "Procfile", "\n".join(lines) + "\n")
    return stack_id(folder / "Procfile")


HOLDER = """
import subprocess, sys, time
# a grandchild in the same group that keeps the pipe open and goes on printing
subprocess.Popen([sys.executable, "-u", "-c",
                  "import time\\nfor i in range(600):\\n    print('tick', i, flush=True); time.sleep(0.1)"])
print("parent exits", flush=True)
time.sleep(0.3)
sys.exit(3)
"""

SLEEPER = """
import time
print("sleeper up", flush=True)
time.sleep(600)
"""


@pytest.mark.timeout(60)
def test_a_pipe_held_by_a_grandchild_does_not_hold_the_exit(tmp_path, reaper):
    sid, run = start(tmp_path, reaper, holder=HOLDER, sleeper=SLEEPER)
    run.wait_line(r"^tick \d+", of="holder.1")
    rc = run.wait(30)
    assert rc == 3, run.text  # the first exit's code, as honcho gives it
    system = run.system()
    assert "holder.1 stopped (rc=3)" in system, system
    # its own last line came before its "stopped" line; the stop went on without waiting for the pipe
    lines = run.lines()
    assert min(i for i, line in enumerate(lines) if "parent exits" in line) < \
        min(i for i, line in enumerate(lines) if "holder.1 stopped (rc=3)" in line)
    assert any(s.startswith("sending SIGTERM to sleeper.1 (pid ") for s in system), system
    assert "sleeper.1 stopped (rc=-15)" in system, system
    assert_nothing_left(sid)


DAEMON = """
import os, sys, time
if os.fork() == 0:
    os.setsid()  # its own session and group: a group signal to us does not reach it
    if os.fork() == 0:
        with open("daemon.pid.tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace("daemon.pid.tmp", "daemon.pid")
        time.sleep(600)
    os._exit(0)
print("daemonised", flush=True)
time.sleep(600)
"""


@pytest.mark.timeout(60)
def test_a_daemonised_grandchild_is_swept_at_the_end(tmp_path, reaper):
    sid, run = start(tmp_path, reaper, app=DAEMON)
    run.wait_line(r"^daemonised$", of="app.1")
    pid = int(wait_for(lambda: (tmp_path / "daemon.pid").exists() and (tmp_path / "daemon.pid").read_text(),
                       20, what="the daemon's pid"))
    assert alive(pid)
    assert run.stop(signal.SIGINT) == 130
    assert any(s.startswith(f"killed pid {pid} ") and s.endswith("left behind by the stack") for s in run.system()), \
        run.text
    wait_for(lambda: not alive(pid), 10, what="the daemon to be gone")
    assert_nothing_left(sid)


STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
time.sleep(600)
"""


@pytest.mark.timeout(60)
def test_a_second_ctrl_c_kills_at_once(tmp_path, reaper):
    sid, run = start(tmp_path, reaper, stubborn=STUBBORN)
    run.wait_line(r"^ignoring SIGTERM$", of="stubborn.1")
    run.send(signal.SIGINT)
    run.wait_line(r"^sending SIGTERM to stubborn\.1 ", system=True)
    t0 = time.monotonic()
    run.send(signal.SIGINT)
    assert run.wait(30) == 130
    assert time.monotonic() - t0 < 4.0, run.text  # not the 5 s stop timeout
    assert "stubborn.1 killed at once (second Ctrl-C)" in run.system(), run.text
    assert "stubborn.1 stopped (rc=-9)" in run.system(), run.text
    assert_nothing_left(sid)


PARTIAL = """
import sys, time
sys.stdout.write("a prompt without its newline")
sys.stdout.flush()
time.sleep(600)
"""

@pytest.mark.timeout(60)
def test_a_partial_line_is_shown_and_children_inherit_no_ignored_signal(tmp_path, reaper):
    sid = procfile(tmp_path, partial=PARTIAL)
    # Python ignores SIGPIPE and SIGXFSZ; a child must start with them at their defaults, as
    # subprocess's restore_signals gives them (a shell child shows its mask of ignored signals)
    with open(tmp_path / "Procfile", "a") as f:
        f.write("sigs: grep SigIgn /proc/self/status; exec sleep 600\n")
    reaper.stacks.append(sid)
    run = Run(reaper, ["start", "-p", str(free_base())], tmp_path)
    run.wait_line(r"^a prompt without its newline$", of="partial.1")  # shown after a short delay
    mask = int(run.wait_line(r"^SigIgn:\s+([0-9a-f]+)$", of="sigs.1").group(1), 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not mask & (1 << (sig - 1)), (sig, hex(mask))
    assert run.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    assert "SIGTERM received, stopping" in run.system()
    assert_nothing_left(sid)

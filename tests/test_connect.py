"""`revostack connect` (issue 21): a terminal into one running instance — a real debugger behind a
real pseudo-terminal, Ctrl-C and the window size passed through, line mode into a stdin pipe,
several connections, restarts while connected, and the errors."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest

from conftest import cli, wait_for
from helpers_runtime import PY, clean_env, stack_id, write
from revostack.connect import Console

pytestmark = pytest.mark.timeout(150)

# stops at a breakpoint once the file "go" exists; then a loop that reports Ctrl-C (as
# KeyboardInterrupt) and its window size on SIGWINCH, and keeps running
DEBUGGEE = r'''
import os, signal, sys, time
print("debuggee up", flush=True)
x = 42
while not os.path.exists("go"):
    time.sleep(0.05)
breakpoint()
print("after the breakpoint", flush=True)
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGWINCH, lambda *_: print("size %dx%d" % os.get_terminal_size()[::-1], flush=True))
while True:
    try:
        time.sleep(0.05)
    except KeyboardInterrupt:
        print("caught KeyboardInterrupt", flush=True)
'''

# echoes every line of its standard input; says so if that input ever ends
ECHO = r'''
import os, sys
print("echo ready pid=%d" % os.getpid(), flush=True)
for line in sys.stdin:
    print("echo: " + line.strip(), flush=True)
print("stdin closed", flush=True)
'''


@pytest.fixture
def folder(tmp_path, reaper):
    write(tmp_path / "debuggee.py", DEBUGGEE)
    write(tmp_path / "echo.py", ECHO)
    sf = write(tmp_path / "Stackfile.toml", f'''
[services.dbg]
cmd = ["{PY}", "debuggee.py"]
pty = true

[services.echo]
cmd = ["{PY}", "echo.py"]
''')
    reaper.stacks.append(stack_id(sf))
    r = cli("up", "-d", cwd=tmp_path, env=clean_env(), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    yield tmp_path
    cli("down", cwd=tmp_path, env=clean_env(), timeout=60)


class Terminal:
    """`revostack connect ...` in a pseudo-terminal of the test's own (its controlling terminal, so
    a resize sends it SIGWINCH), with what it shows collected."""

    def __init__(self, reaper, cwd: Path, *args: str, rows: int = 24, cols: int = 80):
        self.master, slave = os.openpty()
        self.resize(rows, cols, fd=slave)
        self.before = termios.tcgetattr(slave)
        self.slave_name = os.ttyname(slave)
        self.proc = reaper.popen([PY, "-m", "revostack", *args], stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                                 env=clean_env(), preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        self.slave = slave  # kept open: its settings are read after the client left
        self.out = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.out += data

    def resize(self, rows: int, cols: int, fd: int | None = None) -> None:
        fcntl.ioctl(self.master if fd is None else fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    @property
    def text(self) -> str:
        with self.lock:
            return self.out.decode("utf-8", "replace")

    def wait(self, needle: str, after: int = 0, timeout: float = 30.0) -> int:
        """Where ``needle`` appears (searching from ``after``)."""
        def seen():
            i = self.text.find(needle, after)
            return i + 1 if i >= 0 else None
        try:
            return wait_for(seen, timeout, what=repr(needle)) - 1
        except AssertionError:
            raise AssertionError(f"{needle!r} not shown; the terminal shows:\n{self.text}") from None


def ps(folder: Path) -> dict:
    import json

    r = cli("ps", "--json", cwd=folder, env=clean_env())
    return {i["instance"]: i for i in json.loads(r.stdout)["instances"]}


def test_a_debugger_through_connect(folder, reaper):
    term = Terminal(reaper, folder, "connect", "dbg", rows=30, cols=100)
    term.wait("connected to dbg.1")
    term.wait("debuggee up")  # the recent output, shown first
    (folder / "go").touch()
    at = term.wait("(Pdb) ")
    term.type(b"p x\r")
    at = term.wait("42", at)
    term.type(b"c\r")
    at = term.wait("after the breakpoint", at)
    term.type(b"\x03")  # Ctrl-C, through the service's terminal to its process group
    at = term.wait("caught KeyboardInterrupt", at)
    term.resize(33, 101)  # the connecting terminal's size follows to the service's
    at = term.wait("size 33x101", at)
    term.type(b"\x1d")  # Ctrl-]
    assert term.proc.wait(20) == 0
    term.wait("left dbg.1; it keeps running")
    after = termios.tcgetattr(term.slave)
    assert after == term.before, "the terminal was not restored"
    rows = ps(folder)
    assert rows["dbg.1"]["state"] == "running" and rows["dbg.1"]["restarts"] == 0
    log = (folder / ".revostack" / "logs" / "dbg.1.log").read_text()
    assert "caught KeyboardInterrupt" in log and "(Pdb)" in log  # the log files get it all, as always


def test_line_mode_several_connections_and_a_restart(folder, reaper):
    def connect():
        p = reaper.popen([PY, "-m", "revostack", "connect", "echo"], cwd=folder, env=clean_env(),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = bytearray(), bytearray()
        for pipe, buf in ((p.stdout, out), (p.stderr, err)):
            threading.Thread(target=lambda pipe=pipe, buf=buf: [buf.extend(c) for c in iter(lambda: pipe.read1(4096), b"")],
                             daemon=True).start()
        return p, out, err

    a, a_out, a_err = connect()
    b, b_out, b_err = connect()
    wait_for(lambda: b"echo ready" in a_out and b"echo ready" in b_out, 30, what="the recent output")
    a.stdin.write(b"from a\n")
    a.stdin.flush()
    wait_for(lambda: b"echo: from a" in a_out and b"echo: from a" in b_out, 30, what="the echo in both")
    old = ps(folder)["echo.1"]["pid"]
    r = cli("restart", "echo", cwd=folder, env=clean_env())
    assert r.returncode == 0, r.stderr
    wait_for(lambda: b"echo.1 started (pid" in a_err and b"echo.1 started (pid" in b_err, 30, what="the restart notice")
    wait_for(lambda: ps(folder)["echo.1"]["pid"] not in (None, old), 30, what="the new pid")
    wait_for(lambda: a_out.count(b"echo ready") >= 2, 30, what="the new instance's output")
    b.stdin.write(b"from b\n")
    b.stdin.flush()
    wait_for(lambda: b"echo: from b" in a_out and b"echo: from b" in b_out, 30, what="the second echo in both")
    a.stdin.close()  # piped input ended: it leaves once the output is quiet
    assert a.wait(20) == 0
    r = cli("stop", "echo", cwd=folder, env=clean_env())
    assert r.returncode == 0, r.stderr
    assert b.wait(20) == 1  # the instance is gone for good: it says so and leaves
    wait_for(lambda: b"echo.1 stopped on request" in b_err, 10, what="the end line")
    log = (folder / ".revostack" / "logs" / "echo.1.log").read_text()
    assert "echo: from a" in log and "echo: from b" in log
    assert "stdin closed" not in log  # nobody connected never means end-of-file


def test_piped_input_and_the_errors(folder):
    r = cli("connect", "echo.1", cwd=folder, env=clean_env(), input="one\ntwo\n", timeout=30)
    assert r.returncode == 0, r.stderr
    assert "echo: one\necho: two\n" in r.stdout
    r = cli("connect", "ehco", cwd=folder, env=clean_env())
    assert r.returncode == 2 and 'unknown service "ehco" (did you mean "echo"?)' in r.stderr
    r = cli("connect", "echo.2", cwd=folder, env=clean_env())
    assert r.returncode == 2 and r.stderr.strip() == "revostack: connect: echo.2 is not running (echo runs echo.1)"
    assert cli("stop", "echo", cwd=folder, env=clean_env()).returncode == 0
    r = cli("connect", "echo", cwd=folder, env=clean_env())
    assert r.returncode == 2 and r.stderr.strip() == "revostack: connect: echo.1 is not running (stopped)"
    assert cli("down", cwd=folder, env=clean_env()).returncode == 0
    r = cli("connect", "echo", cwd=folder, env=clean_env())
    assert r.returncode == 4 and "is not running" in r.stderr and "Traceback" not in r.stderr


def test_the_screenful_shown_first():
    c = Console()
    assert c.screen(5) == b""
    c.output(b"a\nb\nc\n")
    assert c.screen(2) == b"b\nc\n"
    c.output(b"(Pdb) ")  # an unfinished line (a prompt) is part of the screen
    assert c.screen(2) == b"c\n(Pdb) "
    assert c.screen(100) == b"a\nb\nc\n(Pdb) "
    c.output(b"x" * 100_000)  # only the recent output is kept
    assert len(c.recent) <= 2 * 16 * 1024

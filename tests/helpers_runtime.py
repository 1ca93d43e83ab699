"""Helpers for the end-to-end runtime tests: run `revostack up/start` as a real subprocess,
collect its output in a background thread, wait on it with deadlines, and prove afterwards
that nothing of the stack is left running."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psutil

from conftest import wait_for

PY = sys.executable
LINE_RE = re.compile(r"^(\d\d:\d\d:\d\d) (\S+) +\| (.*)$")


def clean_env(**extra: str | None) -> dict[str, str]:
    """This environment without colour or port variables that would change what revostack
    does; ``extra`` adds (or, with None, removes) variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "NO_COLOR", "CLICOLOR_FORCE", "PORT", "REVOSTACK_STACK", "REVOSTACK_SERVICE")}
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def stack_id(stackfile: Path) -> str:
    """The id revostack gives a stack (the REVOSTACK_STACK marker its children carry)."""
    from revostack import procfile, stackfile as sf

    if stackfile.name == "Procfile":
        return procfile.load(stackfile).id
    return sf.load(stackfile).id


def marked(stack: str) -> list[str]:
    """Living processes whose environment carries REVOSTACK_STACK=stack."""
    found = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            if p.pid == os.getpid() or p.status() == psutil.STATUS_ZOMBIE:
                continue
            if p.environ().get("REVOSTACK_STACK") == stack:
                found.append(f"{p.pid} {' '.join(p.info['cmdline'] or [p.info['name']])}")
        except (psutil.Error, OSError):
            continue
    return found


def assert_nothing_left(stack: str, pids: list[int] = (), timeout: float = 5.0) -> None:
    """No process with the stack's marker, and none of ``pids``, is alive (zombies aside)."""
    def clean():
        left = marked(stack) + [f"{pid} (recorded)" for pid in pids if alive(pid)]
        return not left or None

    try:
        wait_for(clean, timeout, interval=0.1, what="the stack's processes to be gone")
    except AssertionError:
        raise AssertionError(f"left running: {marked(stack) + [p for p in pids if alive(p)]}") from None


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _ephemeral_low() -> int:
    """The first port the kernel hands out as a connection's source port."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_base(offsets=(0, 1, 100, 101, 200), lo: int = 20000, hi: int | None = None) -> int:
    """A base port where base+offset is free for every offset (checked by binding, as
    revostack does); random, so parallel runs rarely meet. Below the kernel's ephemeral range:
    there, any passing connection (a health check, a test's client) may take a port as its
    source for a moment, and a port the test expects free would then be busy."""
    if hi is None:
        hi = _ephemeral_low() - max(offsets) - 600  # the scan test also looks 500 ports around
    rnd = random.Random()
    for _ in range(200):
        base = rnd.randrange(lo, hi, 10)
        if all(_bindable(base + o) for o in offsets):
            return base
    raise RuntimeError("no free port range found")


def _bindable(port: int) -> bool:
    for host in ("127.0.0.1", "0.0.0.0"):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


class Run:
    """A `python -m revostack ...` subprocess in its own session, its output collected line by
    line (bytes) by a background thread."""

    def __init__(self, reaper, args: list[str], cwd: Path, env: dict | None = None):
        self.args = args
        self.proc = reaper.popen([PY, "-m", "revostack", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd,
                                 env=env if env is not None else clean_env())
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in iter(self.proc.stdout.readline, b""):
            with self._lock:
                self.raw.append(line)
        self.proc.stdout.close()

    # -- what it printed ---------------------------------------------------------------------------
    def lines(self) -> list[str]:
        with self._lock:
            raw = list(self.raw)
        return [b.decode("utf-8", "replace").rstrip("\n") for b in raw]

    @property
    def text(self) -> str:
        return "\n".join(self.lines())

    def system(self) -> list[str]:
        """The text of revostack's own ``system`` lines."""
        out = []
        for line in self.lines():
            m = LINE_RE.match(line)
            if m and m.group(2) == "system":
                out.append(m.group(3))
        return out

    def of(self, name: str) -> list[str]:
        """The text of the lines of one instance (``web.1``)."""
        out = []
        for line in self.lines():
            m = LINE_RE.match(line)
            if m and m.group(2) == name:
                out.append(m.group(3))
        return out

    def wait_line(self, pattern: str, timeout: float = 30.0, *, system: bool = False,
                  of: str | None = None) -> re.Match:
        """The first line that ``pattern`` searches successfully: among all lines, the text of
        the ``system`` lines, or the text of the lines of instance ``of``."""
        rx = re.compile(pattern)

        def seen():
            if self.proc.poll() is not None:
                self.thread.join(2)
            for line in (self.system() if system else self.of(of) if of else self.lines()):
                m = rx.search(line)
                if m:
                    return m
            if self.proc.poll() is not None and not self.thread.is_alive():
                raise AssertionError(f"revostack exited ({self.proc.returncode}) before printing {pattern!r}:\n{self.text}")
            return None

        try:
            return wait_for(seen, timeout, interval=0.05, what=pattern)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- output so far ---\n{self.text}") from None

    def started(self, instance: str, timeout: float = 30.0) -> tuple[int, int | None]:
        """(pid, port) from the ``NAME started (pid=N, port P)`` line."""
        m = self.wait_line(rf"^{re.escape(instance)} started \(pid=(\d+)(?:, port (\d+))?\)", timeout, system=True)
        return int(m.group(1)), (int(m.group(2)) if m.group(2) else None)

    # -- driving it ----------------------------------------------------------------------------------
    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"revostack {' '.join(self.args)} did not exit within {timeout}s:\n{self.text}") from None
        self.thread.join(10)
        return rc

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        self.send(sig)
        return self.wait(timeout)


def read_float(path: Path, timeout: float = 20.0) -> float:
    """A time a fake service wrote to a file (waits for the file to be complete)."""
    def value():
        try:
            text = path.read_text()
        except OSError:
            return None
        return float(text) if text.endswith("\n") else None

    return wait_for(value, timeout, interval=0.05, what=f"{path.name} to be written")


FAKE = r'''
"""A fake service for revostack's tests: fake.py NAME MODE [DELAY].

Writes NAME.start (the time it started), prints its environment markers, waits DELAY seconds,
writes NAME.ready and becomes ready the way MODE says: tcp (listen on $PORT), http (answer
200 on /health), flag (create NAME.flag), log (print READY), job (exit 0), sleep (nothing)."""
import os
import socket
import sys
import time

name, mode = sys.argv[1], sys.argv[2]
delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0


def stamp(suffix):
    tmp = f"{name}.{suffix}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{time.time():.6f}\n")
    os.replace(tmp, f"{name}.{suffix}")


stamp("start")
shared = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.endswith("_PORT"))
print(f"env PORT={os.environ.get('PORT', '-')} STACK={os.environ.get('REVOSTACK_STACK')} "
      f"SERVICE={os.environ.get('REVOSTACK_SERVICE')} CWD={os.getcwd()} {shared}", flush=True)
time.sleep(delay)
stamp("ready")
if mode == "tcp":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(os.environ["PORT"])))
    s.listen(16)
    while True:
        c, _ = s.accept()
        c.close()
elif mode == "http":
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
elif mode == "flag":
    open(f"{name}.flag", "w").close()
elif mode == "log":
    print("READY now", flush=True)
elif mode == "job":
    print("job done", flush=True)
    sys.exit(0)
while True:
    time.sleep(3600)
'''


def install_fake(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fake.py"
    path.write_text(FAKE)
    return path


def fake_cmd(folder: Path, name: str, mode: str, delay: float = 0.0) -> str:
    """A TOML array for ``cmd`` that runs the fake service."""
    import json

    return json.dumps([PY, str(folder / "fake.py"), name, mode, str(delay)])

"""Helpers for the end-to-end tests of the second terminal (state, control) and of port
conflicts: a tiny listening service / port holder, a leftover of a SIGKILLed `up`, and a count
of the bystander processes a test started that must survive whatever revostack does."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import psutil

from conftest import cli, wait_for
from helpers_runtime import PY, Run, alive, clean_env, free_base, stack_id, write

# A service and a port holder in one: `listen.py [PORT] [--wait] [--grandchild]`.
# PORT defaults to $PORT. It binds 127.0.0.1:PORT with SO_REUSEADDR, listens and prints
# "LISTENING <port> pid=<pid> stack=<marker> <every *_PORT variable>". When the port is taken it
# prints the error as Python servers do and exits 1 (with --wait it retries for 30 s first).
# --grandchild: also starts a long-lived grandchild in its own session (it inherits the
# environment, so it carries the stack marker) and writes its pid to grandchild.pid.
# A file named crash.<service> (<service> = $REVOSTACK_SERVICE) makes it close its socket,
# print "CLOSED", wait for the file grabbed.<service>, and exit 1 (a crash while its port is
# taken by someone else).
LISTEN = r'''
import os, socket, subprocess, sys, threading, time

args = [a for a in sys.argv[1:] if not a.startswith("--")]
port = int(args[0]) if args else int(os.environ["PORT"])
me = os.environ.get("REVOSTACK_SERVICE", "")
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
deadline = time.time() + 30
while True:
    try:
        s.bind(("127.0.0.1", port))
        break
    except OSError as e:
        if "--wait" not in sys.argv or time.time() > deadline:
            print(f"OSError: [Errno {e.errno}] {e.strerror}", flush=True)
            sys.exit(1)
        time.sleep(0.02)
s.listen(64)
ports = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.endswith("_PORT"))
print(f"LISTENING {s.getsockname()[1]} pid={os.getpid()} stack={os.environ.get('REVOSTACK_STACK')} {ports}",
      flush=True)
if "--grandchild" in sys.argv:
    gc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True,
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open("grandchild.pid.tmp", "w") as f:
        f.write(str(gc.pid))
    os.replace("grandchild.pid.tmp", "grandchild.pid")


def accept():
    while True:
        try:
            c, _ = s.accept()
            c.close()
        except OSError:
            return


threading.Thread(target=accept, daemon=True).start()
while True:
    time.sleep(0.02)
    if me and os.path.exists(f"crash.{me}"):
        os.unlink(f"crash.{me}")
        s.close()
        print("CLOSED", flush=True)
        while not os.path.exists(f"grabbed.{me}"):
            time.sleep(0.02)
        os.unlink(f"grabbed.{me}")
        print(f"OSError: [Errno 98] Address already in use", flush=True)
        sys.exit(1)
'''


def install(folder: Path) -> None:
    """listen.py, and other.py (the same code under another name: another program)."""
    (folder / "listen.py").write_text(LISTEN)
    (folder / "other.py").write_text(LISTEN)


def listen_cmd(folder: Path, *extra: str, script: str = "listen.py") -> str:
    """A TOML array for ``cmd`` that runs listen.py on $PORT."""
    return json.dumps([PY, str(folder / script), *extra])


class Holder:
    """A process that is not any stack's, listening on a port (the test's bystander)."""

    def __init__(self, reaper, folder: Path, port: int, script: str = "listen.py", wait: bool = False,
                 env: dict | None = None):
        args = [PY, script, str(port)] + (["--wait"] if wait else [])
        self.proc = reaper.popen(args, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env or clean_env())
        self.pid = self.proc.pid
        self.create_time = psutil.Process(self.pid).create_time()
        self.first = ""
        done = threading.Event()

        def read():
            self.first = self.proc.stdout.readline().decode()
            done.set()

        threading.Thread(target=read, daemon=True).start()
        if not done.wait(30):
            raise AssertionError(f"holder on {port} did not start listening")
        if not self.first.startswith("LISTENING"):
            raise AssertionError(f"holder on {port} failed: {self.first!r}")
        self.port = int(self.first.split()[1])

    def alive(self) -> bool:
        try:
            p = psutil.Process(self.pid)
            return p.status() != psutil.STATUS_ZOMBIE and abs(p.create_time() - self.create_time) < 0.05
        except psutil.Error:
            return False


class Bystanders:
    """Processes a test started that are not the stack's: none may die (but the allowed ones)."""

    def __init__(self, *procs):
        self.procs: list[tuple[int, float, str]] = []
        for p in procs:
            self.add(p)

    def add(self, p) -> None:
        pid = p if isinstance(p, int) else p.pid
        proc = psutil.Process(pid)
        self.procs.append((pid, proc.create_time(), " ".join(proc.cmdline())))

    def died(self, allowed: tuple[int, ...] = ()) -> list[str]:
        out = []
        for pid, ct, cmd in self.procs:
            if pid in allowed:
                continue
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE and abs(p.create_time() - ct) < 0.05:
                    continue
            except psutil.Error:
                pass
            out.append(f"{pid} {cmd}")
        return out


def stack_up(reaper, folder: Path, *args: str, env: dict | None = None) -> Run:
    """`revostack up --no-watch ARGS` in ``folder``; the stack's marker goes to the reaper."""
    sid = stack_id(folder / "Stackfile.toml")
    if sid not in reaper.stacks:
        reaper.stacks.append(sid)
    return Run(reaper, ["up", "--no-watch", *args], folder, env=env)


def sigkill_up(run: Run) -> None:
    """SIGKILL the `up` process only (its children live on in their own sessions)."""
    os.kill(run.proc.pid, signal.SIGKILL)
    run.wait(15)


def leave_stale(reaper, folder: Path, *services: str) -> dict[str, int]:
    """Run `up SERVICES`, wait until each listens, then SIGKILL the `up`: its children live on
    as leftovers of this stack. Returns {service: pid}."""
    up = stack_up(reaper, folder, *services)
    pids = {}
    for s in services:
        pids[s] = up.started(f"{s}.1")[0]
        up.wait_line(rf"^\d\d:\d\d:\d\d {re.escape(s)}\.1 +\| (LISTENING|worker up)")
    wait_for(lambda: all((read_state(folder) or {}).get("instances", {}).get(f"{s}.1", {}).get("pid") == pid
                         for s, pid in pids.items()), 15, what="state.json to record the pids")
    sigkill_up(up)
    assert all(alive(pid) for pid in pids.values())
    return pids


def read_state(folder: Path) -> dict | None:
    try:
        return json.loads((folder / ".revostack" / "state.json").read_text())
    except (OSError, ValueError):
        return None


def history(folder: Path) -> list[dict]:
    r = cli("history", "--json", cwd=folder, timeout=30, env=clean_env())
    assert r.returncode == 0, r
    return json.loads(r.stdout)


def rc(r: subprocess.CompletedProcess) -> str:
    """A compact view of a CompletedProcess for assertion messages."""
    return f"rc={r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"


__all__ = ["LISTEN", "install", "listen_cmd", "Holder", "Bystanders", "stack_up", "sigkill_up", "read_state",
           "history", "rc", "leave_stale", "free_base", "write", "stack_id", "alive", "clean_env", "PY", "Run", "wait_for", "cli",
           "re"]

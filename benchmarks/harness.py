"""The plumbing every workload shares: tools, launching, watching an output file, stopping,
and proving that nothing was left running.

Every process the harness starts leads its own session (so a whole tree can be signalled) and
carries ``REVOSTACK_BENCH=<token>`` in its environment, inherited by everything below it. After
each measurement the harness looks for any process with that token, reports it as a leftover of
the variant that was measured, and kills it.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

CHILD = Path(__file__).resolve().parent / "child.py"
MARKER = "REVOSTACK_BENCH"

# Set by the runner: where every launched interpreter keeps its bytecode. The environment may
# say PYTHONDONTWRITEBYTECODE=1 and revostack is an editable install without __pycache__, so
# without this every `revostack` start would compile revostack from source (~100 ms) while
# honcho, installed with its .pyc files, would not. None: leave the environment as it is.
PYCACHE: Path | None = None


class BenchError(Exception):
    """A measurement could not be made (timeout, a broken run). The message says what was seen."""


# -- the tools --------------------------------------------------------------------------------

@dataclass
class Tools:
    """How to run each orchestrator: the console scripts next to this interpreter (not a pyenv
    shim, which would add its own start-up to every number)."""

    python: str = sys.executable
    revostack: list[str] = field(default_factory=list)
    honcho: list[str] | None = None

    @classmethod
    def find(cls, with_honcho: bool = True) -> Tools:
        bindir = Path(sys.executable).parent
        script = bindir / "revostack"
        revostack = [str(script)] if script.is_file() else [sys.executable, "-m", "revostack"]
        honcho = None
        if with_honcho and honcho_available():
            h = bindir / "honcho"
            honcho = [str(h)] if h.is_file() else [sys.executable, "-m", "honcho"]
        return cls(sys.executable, revostack, honcho)

    def child(self, *args: object) -> str:
        """A child's command line as a shell string (Procfile / Stackfile / bash). ``-S``: no
        site-packages, so a child starts in ~20 ms instead of ~100 ms here (this machine's
        site runs .pth hooks); the children's own start-up would otherwise hide the
        orchestrators' differences. child.py needs only the standard library."""
        return " ".join(shlex.quote(str(a)) for a in (self.python, "-S", CHILD, *args))


def honcho_available() -> bool:
    import importlib

    try:
        importlib.import_module("honcho")
    except ImportError:
        return False
    return True


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("revostack", "honcho", "psutil", "watchfiles"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


# -- the world: temporary folders, ports --------------------------------------------------------

def free_ports(count: int, lo: int = 20000, hi: int = 32000, avoid: set[int] | None = None) -> list[int]:
    """``count`` loopback ports that nobody holds right now, below the ephemeral range,
    spread apart so that fallbacks (port+1...) stay free too. Checked by binding."""
    avoid = set(avoid or ())
    out: list[int] = []
    for _ in range(20 * count + 100):
        if len(out) == count:
            return out
        p = random.randrange(lo, hi)
        if p in avoid or any(abs(p - q) < 3 for q in out):
            continue
        if port_free(p):
            out.append(p)
    raise BenchError(f"could not find {count} free ports in {lo}-{hi}")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_range(size: int, lo: int = 20000, hi: int = 32000) -> tuple[int, int]:
    """A run of ``size`` ports somewhere in lo..hi (free or not: a scan only looks)."""
    start = random.randrange(lo, hi - size)
    return start, start + size - 1


# -- launching and watching ---------------------------------------------------------------------

class Session:
    """One run of one variant: a temporary output file, the token, the processes started."""

    def __init__(self, folder: Path, name: str):
        self.folder = folder
        self.name = name
        self.token = uuid.uuid4().hex
        self.out = folder / f"{name}.{self.token[:8]}.out"
        self.err = folder / f"{name}.{self.token[:8]}.err"
        self.popens: list[subprocess.Popen] = []

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = bench_env()
        env[MARKER] = self.token
        env["NO_COLOR"] = "1"
        env.update(extra or {})
        return env

    def launch(self, argv: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``argv`` in a new session, stdout to the output file, stderr to its own file."""
        with open(self.out, "ab") as out, open(self.err, "ab") as err:
            p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 env=self.env(extra_env), start_new_session=True)
        self.popens.append(p)
        return p

    def stderr_text(self) -> str:
        try:
            return self.err.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def normal_signals() -> None:
    """Ctrl-C must mean Ctrl-C for everything launched. A process started in the background by
    a non-interactive shell (``cmd &``, nohup) inherits SIGINT *ignored*; its children would too,
    and bash cannot trap a signal ignored at entry, so the floor could not be stopped. SIGTERM
    unwinds the harness like Ctrl-C, so every workload's cleanup still runs."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def bench_env() -> dict[str, str]:
    """The environment every launched process gets (before the session's token)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "PYTHONUNBUFFERED", MARKER)}
    if PYCACHE is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


WARM_MODULES = ("revostack.cli", "revostack.runtime", "revostack.supervisor", "revostack.process", "revostack.sink",
                "revostack.probe", "revostack.health", "revostack.watch", "revostack.control", "revostack.output",
                "revostack.procfile", "revostack.rundir", "revostack.conflicts", "revostack.stats", "psutil",
                "revostack.generations", "revostack.handoff",
                "asyncio", "concurrent.futures.thread", "queue", "watchfiles", "tomlkit", "json", "argparse", "ctypes",
                "socket", "selectors", "subprocess", "multiprocessing", "multiprocessing.queues", "datetime", "signal",
                "honcho.command", "honcho.manager", "honcho.printer", "honcho.process", "honcho.environ", "rich.console")


def warm_up(tools: Tools) -> None:
    """Fill the bytecode cache: import what the orchestrators import and run each once."""
    code = ("import importlib\nfor m in %r:\n    try:\n        importlib.import_module(m)\n"
            "    except Exception:\n        pass\n" % (WARM_MODULES,))
    subprocess.run([tools.python, "-c", code], env=bench_env(), stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False)
    for argv in ([*tools.revostack, "--version"], [*(tools.honcho or []), "version"]):
        if len(argv) > 1:
            subprocess.run(argv, env=bench_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=120, check=False)


class Tail:
    """Follows a growing output file. Counts patterns and collects regex matches over complete
    lines only, reading each byte once (the file may grow to tens of MB)."""

    def __init__(self, path: Path, patterns: tuple[bytes, ...] = (), regex: bytes | None = None):
        self.path = path
        self.f = None
        self.carry = b""
        self.counts = {p: 0 for p in patterns}
        self.first_seen: dict[bytes, float] = {}
        self.regex = re.compile(regex) if regex else None
        self.matches: list[tuple] = []
        self.size = 0
        self.on_first: dict[bytes, Callable[[], None]] = {}  # called once, when a pattern first shows

    def poll(self) -> None:
        if self.f is None:
            try:
                self.f = open(self.path, "rb")
            except FileNotFoundError:
                return
        data = self.f.read()
        if not data:
            return
        self.size += len(data)
        data = self.carry + data
        cut = data.rfind(b"\n") + 1
        region, self.carry = data[:cut], data[cut:]
        if not region:
            return
        now = time.perf_counter()
        for p in self.counts:
            n = region.count(p)
            if n:
                self.counts[p] += n
                if p not in self.first_seen:
                    self.first_seen[p] = now
                    if p in self.on_first:
                        self.on_first[p]()
        if self.regex is not None:
            self.matches.extend(self.regex.findall(region))

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.001,
               what: str = "condition", before: Callable[[], None] | None = None) -> float:
    """Poll until ``predicate()`` is truthy; return perf_counter() at that moment.
    ``before`` runs before each check (e.g. ``tail.poll``). Raises BenchError on timeout."""
    deadline = time.perf_counter() + timeout
    last = None
    while True:
        if before is not None:
            before()
        last = predicate()
        now = time.perf_counter()
        if last:
            return now
        if now > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


# -- processes ------------------------------------------------------------------------------------

def is_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat[stat.rfind(")") + 2] != "Z"
    except OSError:
        return False


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants that exist now."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def orchestrator_tree(pid: int, child_pids: set[int]) -> list[psutil.Process]:
    """The orchestrator and its own helpers: every descendant except the measured children and
    what runs below them. (A ``sh -c`` wrapper the orchestrator keeps above a child counts as
    the orchestrator's.)"""
    out = []
    for p in tree(pid):
        try:
            if p.pid in child_pids or any(a.pid in child_pids for a in p.parents()):
                continue
        except psutil.Error:
            continue
        out.append(p)
    return out


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def memory(procs: list[psutil.Process]) -> dict[str, float]:
    """RSS, PSS and USS in bytes summed over ``procs`` (PSS/USS need /proc/PID/smaps)."""
    rss = pss = uss = 0.0
    for p in procs:
        try:
            m = p.memory_full_info()
        except psutil.AccessDenied:
            m = p.memory_info()
        except psutil.Error:
            continue
        rss += m.rss
        pss += getattr(m, "pss", 0.0)
        uss += getattr(m, "uss", 0.0)
    return {"rss": rss, "pss": pss, "uss": uss}


def with_token(token: str) -> list[psutil.Process]:
    """Every live process of ours whose environment carries this session's token."""
    me = os.getpid()
    uid = os.getuid()
    found = []
    for p in psutil.process_iter(["uids"]):
        try:
            if p.pid == me or p.info["uids"] is None or p.info["uids"].real != uid:
                continue
            if p.environ().get(MARKER) == token and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def stop(session: Session, sig: int = signal.SIGINT, grace: float = 15.0) -> None:
    """Ask every launched process group to stop (``sig``), then SIGKILL what is left."""
    for p in session.popens:
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + grace
    for p in session.popens:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    kill_groups(session)


def kill_groups(session: Session) -> None:
    for p in session.popens:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass


def finish(session: Session, grace: float = 0.5) -> int:
    """After the orchestrators are gone: count the session's processes still alive (give them
    ``grace`` seconds to go), kill them, and return how many there were. Never leaves one."""
    kill_groups(session)
    left = with_token(session.token)
    deadline = time.monotonic() + grace
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if is_alive(p.pid)]
    count = len(left)
    for _ in range(3):
        for p in left:
            try:
                os.killpg(p.pid, signal.SIGKILL) if _leads_group(p.pid) else None
                p.kill()
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)
        left = with_token(session.token)
        if not left:
            break
    if left:
        raise BenchError(f"could not kill leftovers {[p.pid for p in left]}")
    return count


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


# -- the machine -----------------------------------------------------------------------------------

def machine() -> dict[str, object]:
    import platform

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.release()}",
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg": [round(x, 2) for x in load],
        "versions": versions(),
        "bash": shutil.which("bash") or "-",
    }

"""The world outside: which ports are free, who holds them, which processes are ours.

The only module that uses psutil. Everything that signals a process goes through
``may_signal`` first: never pid 1, never revostack itself or its ancestors, never another
user's process, and only processes proven ours (pid + create time, or the stack marker).
"""

from __future__ import annotations

import _socket  # the C module: probing needs only bind(); socket.py's enums cost ~4 ms per command
import errno
import os
from typing import TYPE_CHECKING, Iterable, Mapping

from revostack.plan import Holder
from revostack.record import record

if TYPE_CHECKING:
    import socket

    import psutil

# psutil is imported where it is used, so that `revostack ports` on a free machine stays fast.

MARKER = "REVOSTACK_STACK"


def can_bind(port: int, host: str) -> bool:
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    try:
        s = _socket.socket(family, _socket.SOCK_STREAM)
    except OSError:
        return True  # no such address family here: nothing can hold it
    try:
        s.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError as e:
        if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            return True  # the address does not exist on this machine
        return False
    finally:
        s.close()


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Free as servers see it: bindable with SO_REUSEADDR on the stack's host and on 0.0.0.0.
    For an IPv4 host one test says both: the wildcard conflicts with every holder that a
    specific address conflicts with (listening, or bound without SO_REUSEADDR, on that address
    or on the wildcard), so a bind on 0.0.0.0 that succeeds implies one on the host would
    (tests/test_conflicts.py checks it for each kind of holder). 200 services: 400 binds -> 200."""
    if ":" not in host:
        return can_bind(port, "0.0.0.0")
    return can_bind(port, host) and can_bind(port, "0.0.0.0")


def os_port(host: str = "127.0.0.1") -> int:
    s = _socket.socket(_socket.AF_INET6 if ":" in host else _socket.AF_INET, _socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def listeners() -> dict[int, list[tuple[str, int | None]]]:
    """Every listening TCP socket, by port: [(address, pid or None)]. One pass over the system
    (without the right to see every process, one pass over the processes we may see)."""
    import psutil

    try:
        found = [(c.laddr, c.status, c.pid) for c in psutil.net_connections(kind="tcp")]
    except (psutil.AccessDenied, PermissionError):
        found = []
        for p in psutil.process_iter():
            try:
                found.extend((c.laddr, c.status, p.pid) for c in p.net_connections(kind="tcp"))
            except (psutil.Error, OSError):
                pass
    out: dict[int, list[tuple[str, int | None]]] = {}
    for laddr, status, pid in found:
        if status == psutil.CONN_LISTEN and laddr:
            out.setdefault(laddr.port, []).append((laddr.ip, pid))
    return out


def conflicts(listen_ip: str, host: str) -> bool:
    """Whether a listener on ``listen_ip`` stops us binding ``host``."""
    wild = ("0.0.0.0", "::", "")
    return listen_ip in wild or host in wild or listen_ip == host or (host == "127.0.0.1" and listen_ip == "::ffff:127.0.0.1")


def ancestors() -> set[int]:
    import psutil
    out = {os.getpid()}
    try:
        p = psutil.Process()
        out.update(a.pid for a in p.parents())
    except psutil.Error:
        pass
    return out


@record(frozen=False)
class Ownership:
    """What proves a process is this stack's: its id, the pids recorded in state.json with their
    create times, and whether that stack's ``up`` is alive right now."""

    stack_id: str
    recorded: Mapping[int, float]
    running: bool = False

    def owns(self, proc: psutil.Process) -> bool:
        import psutil
        try:
            ct = proc.create_time()
            if self.recorded.get(proc.pid) is not None and abs(self.recorded[proc.pid] - ct) < 0.05:
                return True
            return proc.environ().get(MARKER) == self.stack_id
        except (psutil.Error, OSError):
            return False


def describe(pid: int | None, ownership: Ownership | None = None) -> Holder:
    import psutil
    if pid is None:
        return Holder(None, cls="unknown")
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            name = proc.name()
            try:
                user = proc.username()
            except (psutil.Error, KeyError):
                user = str(proc.uids().real)
            uid = proc.uids().real
            try:
                cmdline = " ".join(proc.cmdline())
            except psutil.Error:
                cmdline = None
            create = proc.create_time()
    except psutil.NoSuchProcess:
        return Holder(None, cls="unknown")
    except psutil.Error:
        return Holder(pid, cls="unknown")
    same = uid == os.getuid()
    protected = pid == 1 or pid in ancestors()
    cls = "external"
    if ownership is not None and same and ownership.owns(proc):
        cls = "ours-running" if ownership.running else "ours-stale"
    return Holder(pid, user, name, cmdline, cls, create, same, protected)


class ProbeWorld:
    """The real ``PortWorld`` for the planner: bind tests, and holders from one socket pass."""

    def __init__(self, host: str, ownership: Ownership | None = None):
        self.host = host
        self.ownership = ownership
        self._listeners: dict[int, list[tuple[str, int | None]]] | None = None

    def is_free(self, port: int) -> bool:
        return is_free(port, self.host)

    def os_port(self) -> int:
        return os_port(self.host if self.host not in ("0.0.0.0", "") else "127.0.0.1")

    def holder(self, port: int) -> Holder | None:
        if self._listeners is None:
            self._listeners = listeners()
        entries = self._listeners.get(port, [])
        pids = [pid for ip, pid in entries if conflicts(ip, self.host)] or [pid for _, pid in entries]
        pid = next((p for p in pids if p is not None), None)
        holder = describe(pid, self.ownership)
        return container_holder(holder, port, self.ownership)


_engine: list = []  # a Docker client once one was asked for (or None: no engine answers)


def container_holder(holder: Holder, port: int, ownership: Ownership | None) -> Holder:
    """A port held by the engine's proxy is held by a container: the holder is that container
    (name, image; ours only by this stack's label), and it is never signalled, only ever removed
    through the engine by whoever owns it."""
    from revostack import engine
    from revostack.record import replace

    if holder.name not in engine.PROXY_NAMES:
        return holder
    if not _engine:
        try:
            _engine.append(engine.connect(timeout=2.0))
        except engine.Unavailable:
            _engine.append(None)
    found = engine.by_published_port(_engine[0], port) if _engine[0] is not None else None
    if found is None:
        return replace(holder, protected=True)
    cls = "external"
    if ownership is not None and found["labels"].get(engine.LABEL_STACK) == ownership.stack_id:
        cls = "ours-running" if ownership.running else "ours-stale"
    return replace(holder, cls=cls, protected=True,
                   container={"id": found["id"], "name": found["name"], "image": found["image"]})


def may_signal(pid: int, create_time: float | None, ownership: Ownership | None) -> bool:
    """The absolute rule: only our own, living, same-user processes that are not protected."""
    import psutil
    if pid <= 1 or pid in ancestors():
        return False
    try:
        proc = psutil.Process(pid)
        if proc.uids().real != os.getuid():
            return False
        if create_time is not None and abs(proc.create_time() - create_time) < 0.05:
            return True
        return ownership is not None and ownership.owns(proc)
    except (psutil.Error, OSError):
        return False


def _proc_table(stack_id: str) -> tuple[dict[int, int], dict[int, str], set[int]]:
    """One pass over /proc: every live process's parent and name, and which of our user's
    processes carry ``REVOSTACK_STACK=stack_id``. A few ms, where psutil objects cost tens."""
    uid = os.getuid()
    needle = f"\0{MARKER}={stack_id}\0".encode()
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    found: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            close = stat.rfind(b")")
            state, ppid = stat[close + 2:].split(None, 2)[:2]
            if state == b"Z":
                continue
            parents[pid] = int(ppid)
            names[pid] = stat[stat.find(b"(") + 1:close].decode("utf-8", "replace")
            if entry.stat().st_uid == uid:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if needle in b"\0" + f.read():
                        found.add(pid)
        except (OSError, ValueError):
            continue
    return parents, names, found


def marked(stack_id: str, exclude: Iterable[int] = ()) -> list[psutil.Process]:
    """Every living process of this user carrying ``REVOSTACK_STACK=stack_id``."""
    import psutil

    skip = set(exclude) | ancestors()
    out = []
    for pid in sorted(_proc_table(stack_id)[2] - skip):
        if pid <= 1:
            continue
        try:
            out.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return out


def descendants_and_marked(stack_id: str) -> list[tuple[int, str]]:
    """For the end of ``up``: our live descendants (we are a subreaper, so daemonised
    grandchildren are among them) and every live process carrying this stack's marker."""
    me = os.getpid()
    parents, names, found = _proc_table(stack_id)
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    todo, seen = [me], {me}
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    found |= seen
    found.discard(me)
    return sorted((pid, names[pid]) for pid in found if pid in names)


def kill_escaped(stack_id: str) -> list[tuple[int, str]]:
    """SIGKILL to whatever escaped its group at the end of a run (``descendants_and_marked``):
    the (pid, name) of each one killed."""
    from _signal import SIGKILL  # the C module: signal.py's enums cost ~2 ms of a Ctrl-C

    killed = []
    for pid, name in descendants_and_marked(stack_id):
        try:
            os.kill(pid, SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed.append((pid, name))
    return killed


def alive(pid: int, create_time: float | None = None) -> bool:
    import psutil
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 0.05
    except (psutil.Error, OSError):
        return False


@record(frozen=False)
class Leftover:
    pid: int
    name: str
    cmdline: str
    why: str  # "recorded in state.json" | "carries the stack marker"


def leftovers(ownership: Ownership, exclude: Iterable[int] = ()) -> tuple[list[Leftover], list[str]]:
    """Processes a dead ``up`` of this stack left: recorded ones whose create time still matches,
    and every process carrying the marker. Also returns notes on recorded pids left alone."""
    import psutil

    found: dict[int, Leftover] = {}
    notes: list[str] = []
    skip = set(exclude) | ancestors()
    for pid, ct in ownership.recorded.items():
        if pid in skip:
            continue
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if abs(proc.create_time() - ct) < 0.05 and proc.uids().real == os.getuid():
                found[pid] = Leftover(pid, proc.name(), " ".join(proc.cmdline()), "recorded in state.json")
            elif not ownership.owns(proc):
                notes.append(f"pid {pid} ({proc.name()}) now belongs to another program: left alone")
        except (psutil.Error, OSError):
            continue
    for proc in marked(ownership.stack_id, exclude=skip | set(found)):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            found[proc.pid] = Leftover(proc.pid, proc.name(), " ".join(proc.cmdline()), "carries the stack marker")
        except (psutil.Error, OSError):
            continue
    return sorted(found.values(), key=lambda x: x.pid), notes


def terminate(pids: Iterable[int], sig: int, timeout: float, group: bool = True) -> list[tuple[int, bool]]:
    """Send ``sig`` to each process (and, with ``group``, its group when it leads one), SIGKILL
    whatever is left after ``timeout``. Callers pass only pids proven ours.
    Returns [(pid, had_to_be_killed)]."""
    import signal as _signal

    import psutil

    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs.append(p)
            if group and os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                p.send_signal(sig)
        except (psutil.Error, OSError):
            continue
    gone, alive_ = wait_gone(procs, timeout)
    for p in alive_:
        try:
            if group and os.getpgid(p.pid) == p.pid:
                os.killpg(p.pid, _signal.SIGKILL)
            else:
                p.kill()
        except (psutil.Error, OSError):
            pass
    wait_gone(alive_, 5)
    killed = {p.pid for p in alive_}
    return [(p.pid, p.pid in killed) for p in procs]


def wait_gone(procs, timeout: float):
    """(gone, alive) once every process has exited or ``timeout`` passed. A zombie counts as gone:
    unlike ``psutil.wait_procs`` this does not wait for a parent that is not us to reap it."""
    import time

    import psutil

    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        left = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
            except psutil.Error:
                pass
        if not left or time.monotonic() >= deadline:
            return [p for p in procs if p not in left], left
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def stop_holder(holder: Holder, ownership: Ownership | None, external: bool, timeout: float) -> bool:
    """Stop the process holding a port, if the rules allow it. ``external`` is the aggressive
    strategy's case (same user, not protected, same create time as when it was seen); otherwise
    it must be proven ours. Returns whether it is gone."""
    import psutil

    pid = holder.pid
    if pid is None or pid <= 1 or pid in ancestors():
        return False
    try:
        proc = psutil.Process(pid)
        if proc.uids().real != os.getuid():
            return False
        if holder.create_time is not None and abs(proc.create_time() - holder.create_time) >= 0.05:
            return False  # the pid was reused since we looked: not the holder we judged
    except (psutil.Error, OSError):
        return True
    if not external and not may_signal(pid, holder.create_time, ownership):
        return False
    import signal as _signal

    own_group = not external
    try:
        if own_group and os.getpgid(pid) == pid:
            os.killpg(pid, _signal.SIGTERM)
        else:
            proc.terminate()
        _, alive_ = wait_gone([proc], timeout)
        if alive_:
            if own_group and os.getpgid(pid) == pid:
                os.killpg(pid, _signal.SIGKILL)
            else:
                proc.kill()
            wait_gone([proc], 5)
    except (psutil.Error, OSError):
        pass
    return not alive(pid)


def established(pid: int, port: int) -> int:
    """How many connections to local ``port`` the process and its descendants have open (a
    socket-activated generation's own connections, for draining it)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0
    seen = set()
    for p in procs:
        try:
            conns = p.net_connections("tcp") if hasattr(p, "net_connections") else p.connections("tcp")
        except psutil.Error:
            continue
        for c in conns:
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED:
                seen.add((c.laddr, c.raddr))
    return len(seen)


class Reservations:
    """Ports held by listening sockets from planning until each instance is spawned, so nothing
    else can take them in between. A listening socket blocks every other bind of the port."""

    def __init__(self, host: str):
        self.host = host if host not in ("", "::") else "0.0.0.0"
        self.sockets: dict[int, socket.socket] = {}

    def reserve(self, port: int) -> bool:
        if port in self.sockets:
            return True
        import socket  # a socket object: a handoff's public port is handed to the event loop

        s = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.host, port))
            s.listen(1)
        except OSError:
            s.close()
            return False
        s.set_inheritable(False)
        self.sockets[port] = s
        return True

    def take(self, port: int) -> socket.socket | None:
        """The reserved listening socket itself, handed over (a handoff's public port)."""
        return self.sockets.pop(port, None)

    def release(self, port: int | None) -> None:
        s = self.sockets.pop(port, None) if port is not None else None
        if s is not None:
            s.close()

    def release_all(self) -> None:
        for port in list(self.sockets):
            self.release(port)

"""Spawning children in their own sessions, reading their output in chunks, signalling groups."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Mapping

_SHELL_META = re.compile(r"[;&|<>()`\n\\*?\[\]{}!#~'\"]|^\s*(if|for|while|until|case|cd|export|exec|set|trap|\.|source)\b")


def argv_for(cmd: str | tuple[str, ...]) -> list[str]:
    """A string runs through ``/bin/sh -c``; a single simple command is ``exec``'d so that the
    pid we track is the program itself. An array is exec'd as is."""
    if not isinstance(cmd, str):
        return list(cmd)
    first = cmd.split(None, 1)[0] if cmd.split() else ""
    if _SHELL_META.search(cmd) or "=" in first:
        return ["/bin/sh", "-c", cmd]
    return ["/bin/sh", "-c", "exec " + cmd]


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, on_data: Callable[[bytes], None], pty: bool):
        self.on_data = on_data
        self.pty = pty
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.output_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.SubprocessTransport | None = None
        self.open_pipes = 0 if pty else 1

    def connection_made(self, transport):
        self.transport = transport  # with a pty, the pty reader signals output_done itself

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.on_data(data)

    def pipe_connection_lost(self, fd: int, exc) -> None:
        if fd == 1:
            self.open_pipes -= 1
            if self.open_pipes <= 0 and not self.output_done.done():
                self.output_done.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(self.transport.get_returncode())


class _PtyReader(asyncio.Protocol):
    def __init__(self, on_data: Callable[[bytes], None], done: asyncio.Future):
        self.on_data = on_data
        self.done = done

    def data_received(self, data: bytes) -> None:
        self.on_data(data.replace(b"\r\n", b"\n"))

    def connection_lost(self, exc) -> None:  # EIO when the last writer closes the terminal
        if not self.done.done():
            self.done.set_result(None)


@dataclass
class Child:
    pid: int
    create_time: float | None
    protocol: _Protocol
    transport: asyncio.SubprocessTransport
    pty_transport: asyncio.BaseTransport | None = field(default=None)

    @property
    def pgid(self) -> int:
        return self.pid  # every child leads its own session and group

    async def wait(self) -> int:
        """The exit code once the process has exited and its output is drained."""
        code = await asyncio.shield(self.protocol.exited)  # a cancelled waiter must not cancel the exit
        try:
            await asyncio.wait_for(asyncio.shield(self.protocol.output_done), 0.5)
        except asyncio.TimeoutError:
            pass  # a grandchild keeps the pipe open: do not wait for it
        return code

    def close(self) -> None:
        self.transport.close()
        if self.pty_transport is not None:
            self.pty_transport.close()


def socket_activated(argv: list[str]) -> list[str]:
    """The command run so that ``LISTEN_PID`` is the pid of the process that receives fd 3: the
    shell exports its own pid, then execs the program (a string cmd ends in ``exec`` already
    when it is a single command; a compound one must exec its server itself)."""
    if argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3:
        return ["/bin/sh", "-c", "LISTEN_PID=$$; export LISTEN_PID; " + argv[2]]
    return ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"', *argv]


async def spawn(argv: list[str], cwd: str, env: Mapping[str, str], on_data: Callable[[bytes], None],
                pty: bool = False, listen_fd: int | None = None) -> Child:
    """Start a child in its own session. With ``listen_fd``, that socket becomes the child's fd 3
    (socket activation: every other descriptor of ours is closed on exec, as always)."""
    loop = asyncio.get_running_loop()
    extra: dict = {}
    if listen_fd is not None:
        argv = socket_activated(argv)
        env = {**env, "LISTEN_FDS": "1"}
        # fd 3 is made in the child between fork and exec; our own descriptors are all
        # close-on-exec (PEP 446), so nothing else is inherited without close_fds
        extra = {"preexec_fn": lambda: os.dup2(listen_fd, 3), "close_fds": False}
    if pty:
        master, slave = os.openpty()
        try:
            transport, proto = await loop.subprocess_exec(
                lambda: _Protocol(on_data, True), *argv, cwd=cwd, env=dict(env), stdin=slave, stdout=slave,
                stderr=slave, start_new_session=True, **extra)
        finally:
            os.close(slave)
        reader, _ = await loop.connect_read_pipe(lambda: _PtyReader(on_data, proto.output_done),
                                                 os.fdopen(master, "rb", buffering=0))
        child = Child(transport.get_pid(), None, proto, transport, reader)
    else:
        transport, proto = await loop.subprocess_exec(
            lambda: _Protocol(on_data, False), *argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **extra)
        child = Child(transport.get_pid(), None, proto, transport)
    child.create_time = create_time(child.pid)
    asyncio_children.add(child.pid)
    proto.exited.add_done_callback(lambda _f, pid=child.pid: asyncio_children.discard(pid))
    return child


# pids of children that asyncio spawned and will reap itself; any other zombie child of ours is
# an orphaned grandchild re-parented to us (we are a subreaper) and is ours to reap.
asyncio_children: set[int] = set()


def reap_orphans() -> None:
    """Reap zombies re-parented to us. Never ``waitpid(-1)``: asyncio reaps its own children."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            pids = [int(p) for p in f.read().split()]
    except OSError:
        return
    for pid in pids:
        if pid in asyncio_children or is_alive(pid):
            continue
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def is_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat[stat.rfind(")") + 2] != "Z"
    except OSError:
        return False


def create_time(pid: int) -> float | None:
    """Process start time as psutil reports it (seconds since the epoch): /proc/PID/stat's
    starttime in clock ticks + /proc/stat's btime, psutil's own arithmetic. Read directly
    because this runs on every spawn, and importing psutil for it cost the first spawn ~30 ms
    (and `start`, which needs psutil for nothing else, its memory)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        ticks = float(stat[stat.rfind(b")") + 2:].split()[19])
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime"):
                    return ticks / _CLOCK_TICKS + float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:  # no /proc (not Linux)
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


try:
    _CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
except (ValueError, OSError, AttributeError):
    _CLOCK_TICKS = 100


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False when it is gone. ESRCH/EPERM races are ignored."""
    if pgid <= 1:
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of the group lives (zombies count until they are reaped)."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def group_stopped(pgid: int) -> bool:
    """Whether every process of the group is stopped (or gone): /proc state T, t, Z or X."""
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"T", b"t", b"Z", b"X"):
            return False
    return True


def become_subreaper() -> bool:
    """Make orphaned descendants ours (Linux), so a daemonising grandchild can still be found
    and stopped. Returns whether it worked."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:
        return False


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)

"""Spawning children in their own sessions, reading their output in chunks, signalling groups."""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Mapping

from revostack.procs import create_time, spawned


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
    spawned.add(child.pid)
    proto.exited.add_done_callback(lambda _f, pid=child.pid: spawned.discard(pid))
    return child

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
    def __init__(self, on_data: Callable[[bytes], None], done: asyncio.Future,
                 on_raw: Callable[[bytes], None] | None):
        self.on_data = on_data
        self.on_raw = on_raw
        self.done = done

    def data_received(self, data: bytes) -> None:
        if self.on_raw is not None:
            self.on_raw(data)  # the terminal's own bytes, for `revostack connect`
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
    # what is typed into the child goes here: its stdin pipe, or its terminal's master side
    input: asyncio.WriteTransport | None = field(default=None)
    master: int | None = field(default=None)  # the terminal's master side, with ``pty``

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

    def write_input(self, data: bytes) -> bool:
        """Type ``data`` into the child (False when its input is closed or too far behind)."""
        if self.input is None or self.input.is_closing() or self.input.get_write_buffer_size() > INPUT_BACKLOG:
            return False
        self.input.write(data)
        return True

    def set_winsize(self, rows: int, cols: int) -> None:
        """The terminal's window size (the kernel tells its foreground group with SIGWINCH)."""
        if self.master is not None and self.pty_transport is not None and not self.pty_transport.is_closing():
            set_winsize(self.master, rows, cols)

    def close(self) -> None:
        self.transport.close()
        if self.master is not None and self.input is not None:
            self.input.close()  # the master side's second descriptor (a stdin pipe closes with the transport)
        if self.pty_transport is not None:
            self.pty_transport.close()


INPUT_BACKLOG = 1024 * 1024  # bytes typed but not read yet; past this, input is refused


def set_winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    except OSError:
        pass


def _child_setup(listen_fd: int | None, ctty: bool):
    """What runs in the child between fork and exec (after its new session began): socket
    activation's fd 3, and the terminal made the session's controlling terminal, so Ctrl-C
    typed into it signals the child's group as in any terminal."""
    import fcntl
    import termios

    def setup() -> None:
        if listen_fd is not None:
            os.dup2(listen_fd, 3)
        if ctty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    return setup


def _both(on_data: Callable[[bytes], None], on_raw: Callable[[bytes], None] | None) -> Callable[[bytes], None]:
    if on_raw is None:
        return on_data

    def feed(data: bytes) -> None:
        on_raw(data)
        on_data(data)

    return feed


def socket_activated(argv: list[str]) -> list[str]:
    """The command run so that ``LISTEN_PID`` is the pid of the process that receives fd 3: the
    shell exports its own pid, then execs the program (a string cmd ends in ``exec`` already
    when it is a single command; a compound one must exec its server itself)."""
    if argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3:
        return ["/bin/sh", "-c", "LISTEN_PID=$$; export LISTEN_PID; " + argv[2]]
    return ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"', *argv]


async def spawn(argv: list[str], cwd: str, env: Mapping[str, str], on_data: Callable[[bytes], None],
                pty: bool = False, listen_fd: int | None = None, on_raw: Callable[[bytes], None] | None = None,
                winsize: tuple[int, int] | None = None) -> Child:
    """Start a child in its own session. With ``listen_fd``, that socket becomes the child's fd 3
    (socket activation: every other descriptor of ours is closed on exec, as always).
    ``on_data`` gets its output with lines ending in ``\\n``; ``on_raw``, with ``pty``, the
    terminal's bytes as they are. Its input is a pipe (or its terminal) kept open until it exits,
    so a program that reads it waits, as in a terminal nobody types in."""
    loop = asyncio.get_running_loop()
    extra: dict = {}
    if listen_fd is not None:
        argv = socket_activated(argv)
        env = {**env, "LISTEN_FDS": "1"}
        # our own descriptors are all close-on-exec (PEP 446): nothing else is inherited
        extra["close_fds"] = False
    if listen_fd is not None or pty:
        extra["preexec_fn"] = _child_setup(listen_fd, pty)
    if pty:
        master, slave = os.openpty()
        if winsize:
            set_winsize(master, *winsize)
        try:
            transport, proto = await loop.subprocess_exec(
                lambda: _Protocol(on_data, True), *argv, cwd=cwd, env=dict(env), stdin=slave, stdout=slave,
                stderr=slave, start_new_session=True, **extra)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        # typing goes through a second descriptor of the master side, with a buffer of its own
        writer, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(os.dup(master), "wb", buffering=0))
        reader, _ = await loop.connect_read_pipe(lambda: _PtyReader(on_data, proto.output_done, on_raw),
                                                 os.fdopen(master, "rb", buffering=0))
        child = Child(transport.get_pid(), None, proto, transport, reader, input=writer, master=master)
    else:
        transport, proto = await loop.subprocess_exec(
            lambda: _Protocol(_both(on_data, on_raw), False), *argv, cwd=cwd, env=dict(env), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **extra)
        child = Child(transport.get_pid(), None, proto, transport, input=transport.get_pipe_transport(0))
    child.create_time = create_time(child.pid)
    spawned.add(child.pid)
    proto.exited.add_done_callback(lambda _f, pid=child.pid: spawned.discard(pid))
    return child

"""Zero-downtime handoff: the public port of a service, held by revostack for the life of ``up``.

``proxy``: a listener on the public port forwards each connection, bytes both ways, to a ready
backend — one generation of one instance, listening on its private port. Two protocols per
connection (the client side and the upstream side) pass bytes with backpressure both ways: when
one side's write buffer passes ``HIGH_WATER`` the other side stops reading. A half-close passes
through; a reset on either side resets both. While no backend is ready a connection is accepted
and held (up to the service's ``start_period``). What a client sent before its backend answered
a single byte is kept (up to ``REPLAY_LIMIT``), so a connection whose backend refuses it or dies
before answering is replayed on another ready backend.

``socket``: the listening socket is passed to each generation as fd 3; revostack only keeps it
open (connections wait in its backlog while no generation accepts).

Everything runs on the supervisor's event loop.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import socket
import struct
from dataclasses import dataclass, field

from revostack.stackfile import Handoff, Service

HIGH_WATER = 256 * 1024  # bytes buffered per direction before the other side stops reading (one read
# of up to 1 MiB may land on top: what a connection holds stays under 1.25 MiB each way)
REPLAY_LIMIT = 64 * 1024  # what a client sends before its first answer, kept for a replay
MAX_REPLAYS = 3
BACKLOG = 1024
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(eq=False)
class Backend:
    """One generation of one instance, as the public port sees it."""

    instance: str
    host: str
    port: int | None  # the private port (proxy); None with socket activation
    ready: bool = False
    connections: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def opened(self) -> None:
        self.connections += 1
        self.idle.clear()

    def closed(self) -> None:
        self.connections -= 1
        if self.connections <= 0:
            self.idle.set()


class PublicPort:
    """The one public port of a service with a handoff, and the backends behind it."""

    def __init__(self, service: Service, sock: socket.socket, host: str, hold: float):
        self.service = service
        self.mode = service.handoff
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.backend_host = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
        self.hold = hold  # how long a connection waits for a ready backend
        self.backends: list[Backend] = []
        self.clients: set[_Client] = set()
        self._changed = asyncio.Event()
        self._turn = itertools.count()
        self.accepting = False

    async def open(self) -> None:
        self.sock.listen(BACKLOG)
        if self.mode is not Handoff.PROXY:
            return
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)  # accepted by hand: no task per connection (see _transport)
        loop.add_reader(self.sock.fileno(), self._accept, loop)
        self.accepting = True

    def _accept(self, loop) -> None:
        for _ in range(64):  # a burst at once, then back to the loop
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, or the listener closed: try again on the next wake
                return
            conn.setblocking(False)
            client = _Client(self)
            client.start(_transport(loop, conn, client, extra={"peername": peer}))

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- the backends ----------------------------------------------------------------------
    def add(self, backend: Backend) -> None:
        self.backends.append(backend)
        self._notify()

    def set_ready(self, backend: Backend, ready: bool) -> None:
        backend.ready = ready
        self._notify()

    def remove(self, backend: Backend | None) -> None:
        if backend is not None and backend in self.backends:
            backend.ready = False
            self.backends.remove(backend)
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def connections(self, instance: str) -> int:
        return sum(b.connections for b in self.backends if b.instance == instance)

    def pick(self, exclude: set[Backend]) -> Backend | None:
        """The next ready backend in turn, skipping those this connection already failed on."""
        ready = [b for b in self.backends if b.ready and b not in exclude]
        if not ready:
            return None
        return ready[next(self._turn) % len(ready)]

    async def backend_for(self, exclude: set[Backend], deadline: float) -> Backend | None:
        """A ready backend, waiting (the connection held) until ``deadline`` for one."""
        loop = asyncio.get_running_loop()
        while True:
            b = self.pick(exclude)
            if b is not None:
                return b
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            changed = self._changed
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return None

    # -- closing ----------------------------------------------------------------------------
    def close_listener(self) -> None:
        """Stop accepting (the first step of stopping the stack)."""
        if self.accepting:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.accepting = False
        try:
            self.sock.close()
        except OSError:
            pass

    def close(self) -> None:
        self.close_listener()
        for c in list(self.clients):
            c.abort()


# Every read lands in this one buffer and is written to the other side before the next read (all
# on the loop thread): no bytes object per chunk. A transport keeps a copy only of what the
# socket would not take at once.
_CHUNK = memoryview(bytearray(1024 * 1024))


class _Client(asyncio.BufferedProtocol):
    """The public side of one proxied connection."""

    def __init__(self, public: PublicPort):
        self.public = public
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.sent: bytearray | None = bytearray()  # what the client sent before any answer
        self.eof = False  # the client half-closed
        self.upstream_eof = False
        self.closed = False
        self.replays = 0
        self.tried: set[Backend] = set()
        self.task: asyncio.Task | None = None
        self.dialing: socket.socket | None = None
        self.deadline = 0.0

    def connection_made(self, transport) -> None:
        pass  # started at once by start(), before the transport's own start is run

    def start(self, transport) -> None:
        """Begin at once, dialling the backend while the transport's own start is still queued."""
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER)
        self.public.clients.add(self)
        self.deadline = asyncio.get_running_loop().time() + self.public.hold
        self.dial()

    def dial(self) -> None:
        """Connect to a ready backend — without a task in the common case: a non-blocking
        connect, and a writer callback when it completes."""
        backend = self.public.pick(self.tried)
        if backend is None:  # none ready: hold the connection until one is (or the deadline)
            self.task = asyncio.get_running_loop().create_task(self.wait_and_dial())
            return
        sock = socket.socket(socket.AF_INET6 if ":" in backend.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex((backend.host, backend.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._refused(backend)
            return
        self.dialing = sock
        # by descriptor: with a socket object the selector would format its repr on every lookup
        asyncio.get_running_loop().add_writer(sock.fileno(), self._dialed, sock, backend)

    async def wait_and_dial(self) -> None:
        backend = await self.public.backend_for(self.tried, self.deadline)
        if self.closed:
            return
        if backend is None:
            self.abort()
            return
        self.dial()

    def _dialed(self, sock: socket.socket, backend: Backend) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_writer(sock.fileno())
        self.dialing = None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err or self.closed:
            sock.close()
            if not self.closed:
                self._refused(backend)
            return
        up = _Upstream(self, backend)
        self.upstream = up
        up.transport = _transport(loop, sock, up)
        if self.sent:
            up.transport.write(bytes(self.sent))
        if self.eof:
            up.transport.write_eof()
        self.transport.resume_reading()

    def _refused(self, backend: Backend) -> None:
        self.tried.add(backend)  # refused before any byte: another ready backend, or wait for one
        self.dial()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _CHUNK

    def buffer_updated(self, nbytes: int) -> None:
        data = _CHUNK[:nbytes]
        up = self.upstream
        if self.sent is not None:
            if up is None or len(self.sent) + len(data) <= REPLAY_LIMIT:
                self.sent += data
            else:
                self.sent = None  # too much to replay: this connection rides on its backend
        if up is not None:
            up.transport.write(data)
        elif len(self.sent or b"") > HIGH_WATER:
            self.transport.pause_reading()  # no backend yet: hold the client back

    def eof_received(self) -> bool:
        self.eof = True
        if self.upstream_eof:  # both ways done: close (no half-close to pass on)
            self._maybe_close()
        elif self.upstream is not None and not self.upstream.transport.is_closing():
            self.upstream.transport.write_eof()
        return True

    def _maybe_close(self) -> None:
        if self.eof and self.upstream_eof:
            self.transport.close()
            if self.upstream is not None:
                self.upstream.transport.close()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.public.clients.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.dialing is not None:
            asyncio.get_running_loop().remove_writer(self.dialing.fileno())
            self.dialing.close()
            self.dialing = None
        up = self.upstream
        if up is not None:
            if exc is not None:
                _reset(up.transport)
            else:
                up.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            _reset(self.transport)

    # -- from the upstream side ------------------------------------------------------------
    def upstream_lost(self, up: _Upstream, exc) -> None:
        if up is not self.upstream or self.closed:
            return
        self.upstream = None
        if not up.answered and self.sent is not None and self.replays < MAX_REPLAYS and not self.upstream_eof:
            # the backend went away before answering a byte: replay on another ready one
            self.replays += 1
            self.tried.add(up.backend)
            self.transport.pause_reading()
            self.deadline = asyncio.get_running_loop().time() + self.public.hold
            self.dial()
            return
        if exc is not None:
            _reset(self.transport)
        else:
            self.transport.close()


class _Upstream(asyncio.BufferedProtocol):
    """The backend side of one proxied connection."""

    def __init__(self, client: _Client, backend: Backend):
        self.client = client
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.answered = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER)
        self.backend.opened()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _CHUNK

    def buffer_updated(self, nbytes: int) -> None:
        data = _CHUNK[:nbytes]
        if not self.answered:
            self.answered = True
            self.client.sent = None  # answered: nothing will be replayed
        self.client.transport.write(data)

    def eof_received(self) -> bool:
        c = self.client
        if not self.answered:
            return False  # closed without a byte: connection_lost decides about a replay
        c.upstream_eof = True
        if c.eof:
            c._maybe_close()
        elif not c.transport.is_closing():
            c.transport.write_eof()
        return True

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self.backend.closed()
        self.client.upstream_lost(self, exc)


def _transport(loop, sock: socket.socket, protocol: asyncio.BaseProtocol, extra: dict | None = None):
    """A transport around a connected socket, usable at once (its ``connection_made`` follows on
    the next turn). ``create_server`` and ``create_connection`` would cost a task and three more
    turns of the loop per connection, a third of the proxy's latency; the selector event loop's
    own factory does the same work synchronously. revostack runs only that loop (asyncio.run's
    default on Linux)."""
    return loop._make_socket_transport(sock, protocol, extra=extra)


def _reset(transport: asyncio.BaseTransport) -> None:
    """Close with a RST (SO_LINGER 0), so the peer learns of the reset."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
    transport.abort()

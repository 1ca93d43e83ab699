"""`revostack connect`: a terminal into one running instance, through the control socket.

The supervisor keeps a ``Console`` per instance: the last ``SCREEN`` bytes of its output as the
child wrote them (a terminal's own bytes with ``pty``), and the clients connected to it. After
the ``{"cmd": "connect", "instance": ..., "rows": R, "cols": C}`` request and its one-line JSON
reply, both sides send frames — a kind byte, a 4-byte big-endian length, the payload:

- client → stack: ``i`` bytes typed (to the instance's terminal, or its stdin pipe);
  ``w`` the window size (two big-endian shorts, rows and columns);
- stack → client: ``o`` output; ``n`` a notice (its instance exited, started again, was
  replaced); ``e`` the end (the instance is gone for good, or the stack stopped), then it closes.

The client side (``session``) is plain blocking code over ``select``, so the interactive view
can run the same loop, or speak the same frames from its own loop.
"""

from __future__ import annotations

import json
import os
import struct
import sys

FRAME = struct.Struct("!cI")
WINSIZE = struct.Struct("!HH")
SCREEN = 16 * 1024  # bytes of recent output kept per instance, for the screenful shown on connect
BACKLOG = 4 * 1024 * 1024  # a client this far behind is dropped: it never slows the stack
LEAVE = b"\x1d"  # Ctrl-], as telnet
LINGER = 1.0  # seconds of quiet output after the end of piped input before leaving
MAX_FRAME = 1024 * 1024  # the largest frame a client may send (a paste); more ends the connection
ENDED = {"completed", "failed", "stopped"}


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return FRAME.pack(kind, len(payload)) + payload


# -- the stack's side (on the event loop) --------------------------------------------------------

class _Client:
    __slots__ = ("writer", "gone")

    def __init__(self, writer):
        import asyncio

        self.writer = writer
        self.gone = asyncio.Event()

    def send(self, kind: bytes, payload: bytes) -> None:
        if self.gone.is_set():
            return
        if self.writer.transport.get_write_buffer_size() > BACKLOG:
            self.writer.write(frame(b"e", b"this connection fell too far behind; dropped"))
            self.gone.set()
            return
        self.writer.write(frame(kind, payload))


class Console:
    """One instance's terminal as `connect` sees it."""

    __slots__ = ("recent", "clients", "winsize")

    def __init__(self):
        self.recent = bytearray()
        self.clients: set[_Client] = set()
        self.winsize: tuple[int, int] | None = None  # the last size a connection asked for

    def output(self, data: bytes) -> None:
        recent = self.recent
        recent += data
        if len(recent) > 2 * SCREEN:
            del recent[:-SCREEN]
        for c in self.clients:
            c.send(b"o", data)

    def screen(self, rows: int) -> bytes:
        """The last ``rows`` lines (the last one possibly unfinished, as a prompt is)."""
        data = bytes(self.recent[-SCREEN:])
        cut = len(data) - data.endswith(b"\n")
        for _ in range(max(1, rows)):
            cut = data.rfind(b"\n", 0, cut)
            if cut < 0:
                return data
        return data[cut + 1:]

    def notice(self, text: str) -> None:
        for c in self.clients:
            c.send(b"n", text.encode("utf-8", "replace"))

    def end(self, text: str) -> None:
        """The instance is gone for good (or the stack stops): every connection is told and closed."""
        for c in self.clients:
            c.send(b"e", text.encode("utf-8", "replace"))
            c.gone.set()
        self.clients.clear()


def service_of(name: str) -> tuple[str, int | None]:
    """``web.2`` -> ("web", 2); ``web`` -> ("web", None)."""
    service, dot, idx = name.rpartition(".")
    return (service, int(idx)) if dot and service and idx.isdigit() else (name, None)


def target(sup, name: str):
    """(the instance state, None) or (None, the error) for ``SERVICE`` or ``SERVICE.N``."""
    from revostack.errors import did_you_mean

    name = str(name or "")
    if name in sup.instances:
        st = sup.instances[name]
    else:
        service, index = service_of(name)
        if service not in sup.stack.services:
            return None, f'unknown service "{service}"{did_you_mean(service, sup.stack.services)}'
        mine = sorted((st for st in sup.instances.values() if st.service == service), key=lambda st: st.inst.index)
        if not mine:
            return None, f'{service} is not part of the running stack'
        if index is not None:
            return None, f"{name} is not running ({service} runs {', '.join(st.name for st in mine)})"
        st = next((s for s in mine if s.child is not None), mine[0])
    if st.child is None and st.state.value in ENDED:
        return None, f"{st.name} is not running ({st.state.value})"
    return st, None


async def serve(sup, req: dict, reader, writer) -> None:
    """One connection, from its request to its end."""
    import asyncio

    st, error = target(sup, req.get("instance"))
    if st is None:
        writer.write(json.dumps({"ok": False, "error": error}).encode() + b"\n")
        await writer.drain()
        return
    rows, cols = _size(req.get("rows")), _size(req.get("cols"))
    pty = st.inst.service.pty
    console = st.console
    if pty and rows and cols:
        console.winsize = (rows, cols)
        if st.child is not None:
            st.child.set_winsize(rows, cols)
    writer.write(json.dumps({"ok": True, "instance": st.name, "pty": pty, "state": st.state.value,
                             "pid": st.child.pid if st.child is not None else None}).encode() + b"\n")
    client = _Client(writer)
    client.send(b"o", console.screen(rows or 24))
    console.clients.add(client)
    reading = asyncio.ensure_future(_read_frames(sup, st, reader, client))
    gone = asyncio.ensure_future(client.gone.wait())
    try:
        await asyncio.wait({reading, gone}, return_when=asyncio.FIRST_COMPLETED)
        if gone.done():
            await asyncio.wait_for(writer.drain(), 2.0)  # the end frame reaches the client
    except (asyncio.TimeoutError, OSError):
        pass
    finally:
        for t in (reading, gone):
            t.cancel()
        console.clients.discard(client)


async def _read_frames(sup, st, reader, client: _Client) -> None:
    import asyncio

    try:
        while True:
            kind, size = FRAME.unpack(await reader.readexactly(FRAME.size))
            if size > MAX_FRAME:
                return  # not a client of ours
            payload = await reader.readexactly(size) if size else b""
            child = st.child
            if kind == b"i":
                if child is None or not child.write_input(payload):
                    client.send(b"n", f"{st.name} is not reading its input now: typed input dropped".encode())
            elif kind == b"w" and size == WINSIZE.size and st.inst.service.pty:
                rows, cols = WINSIZE.unpack(payload)
                if rows and cols:
                    st.console.winsize = (rows, cols)
                    if child is not None:
                        child.set_winsize(rows, cols)
    except (asyncio.IncompleteReadError, OSError, struct.error):
        return  # the client left


def _size(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 10000 else None


# -- the client's side -----------------------------------------------------------------------------

def terminal_size(fd: int) -> tuple[int, int] | None:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return (size.lines, size.columns) if size.lines and size.columns else None


def session(path, name: str) -> int:
    """Connect to instance ``name`` of the stack listening on ``path``: its last screenful, then
    its live output; what is typed goes to it. 0 when the user leaves (or piped input ended),
    1 when the instance ended for good or the stack stopped, 2 when it was refused."""
    from revostack import control

    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    tty = os.isatty(stdin)
    size = terminal_size(stdin) or terminal_size(stdout) if tty else None
    msg = {"cmd": "connect", "instance": name}
    if size:
        msg["rows"], msg["cols"] = size
    sock, reply, rest = control.connect(path, msg)
    try:
        if not reply.get("ok"):
            print(f"revostack: connect: {reply.get('error') or 'refused'}", file=sys.stderr)
            return 2
        raw = tty and bool(reply.get("pty"))
        who = f"{reply.get('instance')}" + (f" (pid {reply['pid']})" if reply.get("pid") else f" ({reply.get('state')})")
        how = ("its terminal; Ctrl-] leaves" if raw else
               "lines go to its standard input; Ctrl-] then Enter, Ctrl-D or Ctrl-C leaves" if tty else
               "piped input goes to it")
        print(f"revostack: connected to {who}: {how}", file=sys.stderr, flush=True)
        code = _Session(sock, rest, raw, tty).run()
        if code == 0 and tty:
            print(f"\nrevostack: left {reply.get('instance')}; it keeps running", file=sys.stderr)
        return code
    finally:
        sock.close()


class _Session:
    def __init__(self, sock, pending: bytes, raw: bool, tty: bool):
        self.sock = sock
        self.buf = bytearray(pending)
        self.raw = raw
        self.tty = tty
        self.stdin = sys.stdin.fileno()
        self.stdout = sys.stdout.fileno()

    def say(self, text: str) -> None:
        end = "\r\n" if self.raw else "\n"
        sys.stderr.write(f"{end if self.raw else ''}revostack: {text}{end}")
        sys.stderr.flush()

    def run(self) -> int:
        import select
        import signal
        import time

        saved = None
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        handled = (signal.SIGWINCH, signal.SIGTERM, signal.SIGHUP)
        old_handlers = {s: signal.signal(s, lambda *_: None) for s in handled}
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        reading_input = True
        linger_until = None
        try:
            if self.raw:
                import termios
                import tty

                saved = termios.tcgetattr(self.stdin)
                tty.setraw(self.stdin)
            self.sock.setblocking(False)
            if self.frames() is not None:  # what came with the reply
                return self.ended
            while True:
                watched = [self.sock, wake_r] + ([self.stdin] if reading_input else [])
                timeout = None if linger_until is None else max(0.0, linger_until - time.monotonic())
                ready, _, _ = select.select(watched, [], [], timeout)
                if not ready and linger_until is not None:
                    return 0  # piped input ended and the output has been quiet since
                if wake_r in ready:
                    got = os.read(wake_r, 64)
                    if signal.SIGTERM in got or signal.SIGHUP in got:
                        return 0
                    if signal.SIGWINCH in got and self.raw:
                        size = terminal_size(self.stdin)
                        if size:
                            self.send(b"w", WINSIZE.pack(*size))
                if self.sock in ready:
                    try:
                        data = self.sock.recv(65536)
                    except BlockingIOError:
                        data = None
                    if data == b"":
                        self.say("the stack closed the connection")
                        return 1
                    if data:
                        self.buf += data
                        if self.frames() is not None:
                            return self.ended
                        if linger_until is not None:
                            linger_until = time.monotonic() + LINGER
                if reading_input and self.stdin in ready:
                    data = os.read(self.stdin, 65536)
                    if self.tty and LEAVE in data:
                        self.send(b"i", data[:data.index(LEAVE)])
                        return 0
                    if not data:
                        if self.tty:
                            return 0  # Ctrl-D on an empty line
                        reading_input = False
                        linger_until = time.monotonic() + LINGER
                        continue
                    self.send(b"i", data)
        except KeyboardInterrupt:  # line mode: Ctrl-C leaves
            return 0
        except (BrokenPipeError, ConnectionResetError):
            self.say("the stack closed the connection")
            return 1
        finally:
            if saved is not None:
                import termios

                termios.tcsetattr(self.stdin, termios.TCSADRAIN, saved)
            signal.set_wakeup_fd(old_wakeup)
            for s, h in old_handlers.items():
                signal.signal(s, h)
            os.close(wake_r)
            os.close(wake_w)

    ended = 1

    def send(self, kind: bytes, payload: bytes) -> None:
        data = frame(kind, payload)
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def frames(self) -> int | None:
        """Handle the whole frames received; the exit code once an end frame came."""
        buf = self.buf
        while len(buf) >= FRAME.size:
            kind, size = FRAME.unpack_from(buf)
            if len(buf) < FRAME.size + size:
                break
            payload = bytes(buf[FRAME.size:FRAME.size + size])
            del buf[:FRAME.size + size]
            if kind == b"o":
                _write_all(self.stdout, payload)
            elif kind == b"n":
                self.say(payload.decode("utf-8", "replace"))
            elif kind == b"e":
                self.say(payload.decode("utf-8", "replace"))
                return self.ended
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [])
            continue
        view = view[n:]

"""The output sink: children's bytes in, prefixed coloured lines out, in batches.

Hot path: a chunk (up to 256 KiB) of complete lines is prefixed with one ``bytes.replace``
and queued; everything queued during one turn of the event loop is written with one
``write`` per destination. A partial last line waits for its newline, or is flushed after
``PARTIAL_DELAY`` (``PARTIAL_DELAY_BULK`` when it came at the end of a big read). Lines never
mix between services because only whole lines are queued.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable

if TYPE_CHECKING:
    import asyncio

COLORS = (36, 33, 32, 35, 34, 31, 96, 93, 92, 95, 94, 91)  # ANSI foregrounds, honcho's order first
SYSTEM_COLOR = 1  # bold
PARTIAL_DELAY = 0.1  # seconds before a line with no newline is shown anyway
BULK_READ = 4096  # a read this big means the child is mid-flood: more is coming, so wait longer
PARTIAL_DELAY_BULK = 1.0  # ... this long, so a busy machine does not cut lines at pipe boundaries
MAX_LINE = 64 * 1024  # a longer line is cut into pieces of this size
TAIL = 2048  # bytes of recent output kept per instance
LOG_ROTATE = 10 * 1024 * 1024  # bytes; one previous file is kept as NAME.log.1


class _Stream:
    __slots__ = ("name", "partial", "timer", "log", "log_size", "log_path", "tail")

    def __init__(self, name: str):
        self.name = name
        self.partial = b""
        self.timer: asyncio.TimerHandle | None = None
        self.log: BinaryIO | None = None
        self.log_size = 0
        self.log_path: Path | None = None
        self.tail = b""  # the last bytes of output, to read an exit's cause (e.g. address in use)


class Tap:
    """One attached client: which instances (None: all, system lines included), with colour or
    not, and where its batches go (``write`` must not block: it drops a client that lags)."""

    def __init__(self, names: set[str] | None, color: bool, write: Callable[[bytes], None]):
        self.names = names
        self.color = color
        self.write = write
        self.queue: list[bytes] = []


class Sink:
    def __init__(self, out: BinaryIO | None = None, *, color: bool = False, timestamps: bool = True,
                 prefix: bool = True, log_dir: Path | None = None, quiet: set[str] | None = None,
                 echo: bool = True):
        self.out = out if out is not None else sys.stdout.buffer
        self.color = color
        self.timestamps = timestamps
        self.prefix = prefix
        self.log_dir = log_dir
        self.quiet = quiet or set()
        self.echo = echo  # False while a dashboard owns the terminal: logs only
        self.width = len("system")
        self.streams: dict[str, _Stream] = {}
        self.colors: dict[str, int] = {}
        self.queue: list[bytes] = []
        self.log_queue: dict[_Stream, list[bytes]] = {}
        self.scheduled = False
        self._clock = (-1, b"", b"")  # (second, "HH:MM:SS ", "YYYY-MM-DDTHH:MM:SS ")
        # what schedules the flushes and partial-line timers: the running asyncio loop, or
        # any object with its call_soon and call_later (`revostack start`'s own loop)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.taps: list[Tap] = []  # `revostack attach` clients: the same lines, fanned out per flush
        self._system = _Stream("system")  # revostack's own lines, logged too (what `up -d` says)
        if log_dir is not None:
            self._system.log_path = log_dir / "system.log"

    # -- set-up ------------------------------------------------------------------------------
    def add(self, name: str, service: str | None = None) -> None:
        """Declare an instance (before its output arrives) so names line up."""
        if name in self.streams:
            return
        self.width = max(self.width, len(name))
        key = service or name
        if key not in self.colors:
            self.colors[key] = COLORS[len(self.colors) % len(COLORS)]
        self.colors[name] = self.colors[key]
        s = _Stream(name)
        if self.log_dir is not None:
            s.log_path = self.log_dir / f"{name}.log"
        self.streams[name] = s

    # -- prefixes ----------------------------------------------------------------------------
    def _now(self) -> tuple[bytes, bytes]:
        t = time.time()
        sec = int(t)
        if sec != self._clock[0]:
            lt = time.localtime(sec)
            self._clock = (sec, time.strftime("%H:%M:%S ", lt).encode(), time.strftime("%Y-%m-%dT%H:%M:%S", lt).encode())
        ms = int((t - sec) * 1000)
        return self._clock[1], self._clock[2] + b".%03d " % ms

    def _prefix(self, name: str, clock: bytes, color: bool | None = None) -> bytes:
        if not self.prefix:
            return b""
        head = (clock if self.timestamps else b"") + name.ljust(self.width).encode() + b" |"
        if self.color if color is None else color:
            code = SYSTEM_COLOR if name == "system" else self.colors.get(name, 0)
            return b"\x1b[%dm" % code + head + b"\x1b[0m "
        return head + b" "

    # -- input -------------------------------------------------------------------------------
    def feed(self, name: str, data: bytes) -> None:
        """Bytes from a child. Complete lines are queued now; the rest waits for its newline."""
        s = self.streams.get(name)
        if s is None:
            self.add(name)
            s = self.streams[name]
        bulk = len(data) >= BULK_READ
        if s.partial:
            data = s.partial + data
            s.partial = b""
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            rest = data[cut:]
            data = data[:cut]
            if len(rest) >= MAX_LINE:
                data += rest + b"\n"
            else:
                if cut and s.timer is not None:  # the held line is complete; a new one waits its own delay
                    s.timer.cancel()
                    s.timer = None
                s.partial = rest
                if s.timer is None:
                    loop = self.loop or _running_loop()
                    s.timer = loop.call_later(PARTIAL_DELAY_BULK if bulk else PARTIAL_DELAY, self._flush_partial, s)
        if s.timer is not None and not s.partial:
            s.timer.cancel()
            s.timer = None
        if data:
            self._emit(s, data)

    def _flush_partial(self, s: _Stream) -> None:
        s.timer = None
        if s.partial:
            data, s.partial = s.partial + b"\n", b""
            self._emit(s, data)

    def tail(self, name: str) -> bytes:
        s = self.streams.get(name)
        return s.tail if s is not None else b""

    def end(self, name: str) -> None:
        """The child's output closed: emit a last line without a newline at once."""
        s = self.streams.get(name)
        if s is not None:
            if s.timer is not None:
                s.timer.cancel()
            self._flush_partial(s)

    def _emit(self, s: _Stream, data: bytes) -> None:
        """``data`` is one or more whole lines ending in b"\\n"."""
        if not data.isascii():  # the common case (ASCII) is valid as it is, checked without decoding
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                data = data.decode("utf-8", "replace").encode("utf-8")
        if len(data) > MAX_LINE and _may_hold_long_line(data):  # any line may be the long one
            data = _cut_long_lines(data)
        s.tail = data[-TAIL:] if len(data) >= TAIL else (s.tail + data)[-TAIL:]
        short, full = self._now()
        if self.echo and s.name not in self.quiet:
            p = self._prefix(s.name, short)
            self.queue.append(_prefixed(p, data))
        if s.log_path is not None:
            self.log_queue.setdefault(s, []).append(_prefixed(full, data))
        if self.taps:
            self._tap(s.name, data, short)
        self._schedule()

    def _tap(self, name: str, data: bytes, clock: bytes) -> None:
        for tap in self.taps:
            if tap.names is None or name in tap.names or name.split(".")[0] in tap.names:
                tap.queue.append(_prefixed(self._prefix(name, clock, tap.color), data))

    def system(self, text: str, name: str = "system") -> None:
        """A line of revostack's own: starts, exits, health, moves, restarts."""
        short, full = self._now()
        line = text.encode("utf-8", "replace") + b"\n"
        if self.echo:
            self.queue.append(self._prefix(name, short) + line)
        if self.taps:
            self._tap(name, line, short)
        if self._system.log_path is not None and name == "system":
            self.log_queue.setdefault(self._system, []).append(full + line)
        self._schedule()

    def _schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            try:
                (self.loop or _running_loop()).call_soon(self.flush)
            except RuntimeError:  # no loop: write now
                self.flush()

    # -- output ------------------------------------------------------------------------------
    def flush(self) -> None:
        self.scheduled = False
        if self.queue:
            data = b"".join(self.queue)
            self.queue.clear()
            try:
                self.out.write(data)
                self.out.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.echo = False
        if self.log_queue:
            for s, chunks in self.log_queue.items():
                self._write_log(s, b"".join(chunks))
            self.log_queue.clear()
        for tap in self.taps:
            if tap.queue:
                data = b"".join(tap.queue)
                tap.queue.clear()
                tap.write(data)

    def _write_log(self, s: _Stream, data: bytes) -> None:
        try:
            if s.log is None:
                s.log_path.parent.mkdir(parents=True, exist_ok=True)
                s.log = open(s.log_path, "ab", buffering=0)
                s.log_size = s.log.tell()
            if s.log_size + len(data) > LOG_ROTATE and s.log_size > 0:
                s.log.close()
                os.replace(s.log_path, s.log_path.with_name(s.log_path.name + ".1"))
                s.log = open(s.log_path, "ab", buffering=0)
                s.log_size = 0
            s.log.write(data)
            s.log_size += len(data)
        except OSError:
            s.log_path = None

    def close(self) -> None:
        for s in self.streams.values():
            if s.timer is not None:
                s.timer.cancel()
                s.timer = None
            if s.partial:
                self._flush_partial(s)
        self.flush()
        for s in (*self.streams.values(), self._system):
            if s.log is not None:
                s.log.close()
                s.log = None


def announce_moves(sink: Sink, plan) -> None:
    """A ``system`` line for every instance that got another port than it asked for."""
    from revostack.plan import Action

    for inst in plan.instances:
        c = inst.port
        if c.action == Action.MOVED and c.port is not None and c.preferred and c.port != c.preferred:
            who = c.holder.describe() if c.holder is not None else "another process"
            sink.system(f"{inst.name}: port {c.preferred} is in use by {who}: moved to {c.port}")


def _prefixed(prefix: bytes, data: bytes) -> bytes:
    """Whole lines ``data`` with ``prefix`` before each: one ``replace`` for the whole chunk."""
    return prefix + data[:-1].replace(b"\n", b"\n" + prefix) + b"\n" if prefix else data


def _running_loop():
    """The running asyncio loop (RuntimeError when none). Without asyncio imported there is
    none, and asyncio is not imported to say so (`start` runs without it)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        raise RuntimeError("no running event loop")
    return asyncio.get_running_loop()


_HALF = MAX_LINE // 2


def _may_hold_long_line(data: bytes) -> bool:
    """Cheap test: a line over MAX_LINE bytes spans a whole half-window without a newline.
    A few ``find`` calls per 256 KiB chunk, each stopping at its first newline."""
    return any(data.find(b"\n", k, k + _HALF) < 0 for k in range(0, len(data) - _HALF, _HALF))


def _cut_long_lines(data: bytes) -> bytes:
    """Cut lines longer than MAX_LINE into pieces, so no line holds unbounded memory downstream."""
    return b"\n".join(
        line if len(line) <= MAX_LINE else b"\n".join(line[i:i + MAX_LINE] for i in range(0, len(line), MAX_LINE))
        for line in data.split(b"\n")
    )


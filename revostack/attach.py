"""`revostack attach`: the running stack's live output, through its control socket.

The supervisor side registers a tap in the sink: every batch the sink writes is also written,
prefixed for that client, to its connection. A client that cannot keep up (more than
``BACKLOG`` bytes waiting) is dropped with a note, so it never slows the stack.
"""

from __future__ import annotations

import asyncio
import sys

BACKLOG = 4 * 1024 * 1024


async def stream(sup, req: dict, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    from revostack.sink import Tap

    names = set(req.get("services") or []) or None
    gone = asyncio.Event()

    def write(data: bytes) -> None:
        if gone.is_set():
            return
        if writer.transport.get_write_buffer_size() > BACKLOG:
            writer.write(b"revostack: attach: this client fell too far behind; dropped\n")
            gone.set()
            return
        writer.write(data)

    tap = Tap(names, bool(req.get("color")), write)
    sup.sink.taps.append(tap)
    reader_done = asyncio.ensure_future(reader.read())  # b"" when the client leaves
    stopping = asyncio.ensure_future(sup.stop_event.wait())
    lost = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait({reader_done, stopping, lost}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (reader_done, stopping, lost):
            t.cancel()
        sup.sink.taps.remove(tap)
        if stopping.done() and tap.queue and not gone.is_set():
            writer.write(b"".join(tap.queue))  # the last lines before the stack stopped


def follow(path, msg: dict) -> int:
    """The client: send the request, then copy the stream to stdout until it ends or Ctrl-C."""
    from revostack import control

    s, reply, data = control.connect(path, msg, 3.0)
    try:
        if not reply.get("ok"):
            print(f"revostack: {reply.get('error') or 'attach refused'}", file=sys.stderr)
            return 2
        out = sys.stdout.buffer
        while True:
            if data:
                out.write(data)
                out.flush()
            data = s.recv(65536)
            if not data:
                return 0
    except (KeyboardInterrupt, BrokenPipeError):  # Ctrl-C, or `attach | head`: leave quietly
        return 0
    finally:
        s.close()

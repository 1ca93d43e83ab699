"""The control socket: how other commands talk to a running ``up``.

Protocol: the client connects to ``.revostack/control.sock`` (mode 0600), sends one JSON
object on one line, and reads one JSON object on one line back. Requests:
``{"cmd": "ping"}``, ``{"cmd": "ps"}``, ``{"cmd": "ports"}``,
``{"cmd": "restart", "services": [...], "deps": false}``, ``{"cmd": "stop"}`` (the whole stack;
with ``"wait": true`` a second line follows once it stopped: what was stopped, forced, swept),
``{"cmd": "stop-services", "services": [...], "deps": false}``, ``{"cmd": "scale", "scale":
{"web": 3}}``, ``{"cmd": "reload"}``. Every reply has ``"ok"``; errors carry ``"error"``. Every
client call has a timeout. ``{"cmd": "attach", "services": [...], "color": bool}`` is answered
by one line (``{"ok": true}``) and then the live output, until either side closes.
``{"cmd": "connect", "instance": "web.1", "rows": R, "cols": C}`` is answered by one line and
then frames both ways (see ``revostack.connect``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from revostack.errors import StateError

TIMEOUT = 3.0


# -- server side (runs inside `up`, on the event loop) -------------------------------------------

async def serve(sup, path: Path):
    import asyncio

    try:
        path.unlink()
    except FileNotFoundError:
        pass
    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(lambda r, w: _handle(sup, r, w), path=str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return server


async def _handle(sup, reader, writer) -> None:
    import asyncio
    import json

    try:
        async with asyncio.timeout(TIMEOUT):
            line = await reader.readline()
        try:
            req = json.loads(line)
            req = req if isinstance(req, dict) else {}
        except ValueError:
            req = None
        if req is not None and req.get("cmd") == "connect":
            from revostack import connect

            await connect.serve(sup, req, reader, writer)  # its reply, then its frames
            return
        if req is None:
            reply = {"ok": False, "error": "bad request: not JSON"}
        elif req.get("cmd") == "stop" and req.get("wait"):  # at once that it stops; once stopped, what it did
            writer.write(json.dumps({"ok": True, "pid": os.getpid(), "stopping": True}).encode() + b"\n")
            await writer.drain()
            reply = {"ok": True, **await sup.stop_and_wait("revostack down")}
        elif req.get("cmd") in CHANGES:
            reply = checked(sup, req) or await change(sup, req)
        else:
            reply = answer(sup, req)
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
        if req is not None and req.get("cmd") == "attach" and reply.get("ok"):
            from revostack import attach

            await attach.stream(sup, req, reader, writer)
    except (asyncio.TimeoutError, OSError):
        pass
    finally:
        writer.close()


def answer(sup, req: dict[str, Any]) -> dict[str, Any]:
    cmd = req.get("cmd")
    snap = sup.snapshot()
    if cmd == "ping":
        return {"ok": True, "pid": snap["pid"], "stack": snap["name"]}
    if cmd == "ps":
        return {"ok": True, **snap}
    if cmd == "ports":
        return {"ok": True, "stack": snap["name"], "instances": ports_rows(snap)}
    if cmd == "restart":
        names = req.get("services") or []
        refused = checked(sup, req)
        if refused:
            return refused
        running = {st.service for st in sup.instances.values()}
        missing = [n for n in names if n not in running]
        if missing:
            return {"ok": False, "error": f"not part of the running stack: {', '.join(missing)}"}
        return {"ok": True, "restarted": sup.restart(names, bool(req.get("deps")))}
    if cmd == "stop":
        sup.request_stop("revostack down")
        return {"ok": True, "pid": snap["pid"]}
    return {"ok": False, "error": f"unknown request {cmd!r}"}


CHANGES = {"stop-services", "scale", "reload", "attach"}


def checked(sup, req: dict[str, Any]) -> dict[str, Any] | None:
    """An error reply for a change that names what is not there (nothing is changed then)."""
    from revostack.errors import did_you_mean

    names = list(req.get("services") or []) + list((req.get("scale") or {}).keys())
    unknown = [n for n in names if n not in sup.stack.services]
    if unknown:
        return {"ok": False, "error": "; ".join(f'unknown service "{n}"{did_you_mean(n, sup.stack.services)}'
                                                for n in unknown)}
    for name, n in (req.get("scale") or {}).items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return {"ok": False, "error": f"{name}: the number of instances must be 0 or more, not {n!r}"}
    return None


async def change(sup, req: dict[str, Any]) -> dict[str, Any]:
    from revostack import operate

    cmd = req["cmd"]
    if cmd == "stop-services":
        return {"ok": True, "stopped": await operate.stop_services(sup, list(req.get("services") or []),
                                                                   bool(req.get("deps")))}
    if cmd == "scale":
        return {"ok": True, **await operate.scale(sup, dict(req.get("scale") or {}))}
    if cmd == "reload":
        return await operate.reload(sup)
    return {"ok": True}  # attach: the stream follows


def ports_rows(snap: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, i in snap["instances"].items():
        if i.get("port") is None:
            continue
        reason = i.get("reason")
        row = {"instance": name, "service": i["service"], "env": i.get("env", "PORT"), "preferred": i.get("preferred"),
               "assigned": i["port"], "reason": reason, "holder": i.get("holder")}
        if i.get("image"):
            row["container_port"] = i.get("container_port")
        if i.get("handoff"):
            row["handoff"] = i["handoff"]
            if i["handoff"] == "proxy":
                row["private"] = i.get("private_port")
        rows.append(row)
    return rows


# -- client side -------------------------------------------------------------------------------

class NoAnswer(Exception):
    """The socket exists but nothing (or nothing sensible) answers on it."""


def request(path: Path, msg: dict[str, Any], timeout: float = TIMEOUT, then: float | None = None) -> dict[str, Any]:
    """One request. FileNotFoundError/ConnectionRefusedError when no ``up`` listens;
    NoAnswer when it does not answer in time. ``then``: wait up to that long for a second
    line (an answer that comes once the work is done), returned as ``reply["then"]`` (None
    when the connection closed or the time ran out first)."""
    s, reply, rest = connect(path, msg, timeout)
    try:
        if then is not None and reply.get("ok"):
            reply["then"] = _line(s, rest, then)
    finally:
        s.close()
    return reply


def stop_and_wait(path: Path, timeout: float) -> dict[str, Any] | None:
    """Ask the stack to stop and wait (at most ``timeout``) until it says it has: what it
    stopped, or None when nothing answers."""
    try:
        return request(path, {"cmd": "stop", "wait": True}, then=timeout).get("then")
    except (OSError, NoAnswer):
        return None


def _line(s, data: bytes, timeout: float) -> dict[str, Any] | None:
    import json
    import socket

    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in data:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                return None
            data += chunk
        line = json.loads(data.partition(b"\n")[0])
    except (OSError, socket.timeout, ValueError):
        return None
    return line if isinstance(line, dict) else None


def connect(path: Path, msg: dict[str, Any], timeout: float = TIMEOUT):
    """Send one request on a new connection and read its one-line reply: (the socket, still
    open for what follows, as after ``attach``; the reply; the bytes already read after it)."""
    import json
    import socket  # here, not above: `ports` with no stack running needs neither (~7 ms)

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        s.sendall(json.dumps(msg).encode() + b"\n")
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\n")
        try:
            reply = json.loads(head)
        except ValueError:
            raise NoAnswer(f"{path} gave no valid answer") from None
        if not isinstance(reply, dict):
            raise NoAnswer(f"{path} gave no valid answer")
    except socket.timeout:
        s.close()
        raise NoAnswer(f"{path} did not answer within {timeout:g}s") from None
    except BaseException:
        s.close()
        raise
    s.settimeout(None)
    return s, reply, rest


def request_if_running(stack, msg: dict[str, Any], timeout: float = TIMEOUT,
                       then: float | None = None) -> dict[str, Any] | None:
    """The reply of the running ``up`` of this stack, or None when it is not running.
    A socket that does not answer is reported on stderr and treated as not running."""
    import sys

    from revostack.rundir import RunDir

    rd = RunDir(stack)
    if not rd.socket_path.exists():
        return None
    try:
        reply = request(rd.socket_path, msg, timeout, then)
    except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        return None
    except NoAnswer as e:
        print(f"revostack: warning: {e}; treating the stack as not running", file=sys.stderr)
        return None
    except OSError as e:
        print(f"revostack: warning: control socket: {e.strerror or e}; treating the stack as not running", file=sys.stderr)
        return None
    if not reply.get("ok"):
        raise StateError(reply.get("error") or "the running stack refused the request")
    return reply

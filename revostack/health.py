"""Health checks: http (2xx), tcp (connect), cmd (exit 0), log (a regex seen in the output).

Each check is one async attempt bounded by the check's timeout; it returns (ok, detail).
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import socket
from typing import Mapping
from urllib.parse import urlsplit

from revostack.procs import spawned
from revostack.stackfile import Health, HealthKind


def _host_port(target: str) -> tuple[str, str]:
    """``HOST:PORT`` of a tcp check: a wildcard address (or none) is checked on loopback."""
    host, _, port = target.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    return ("127.0.0.1" if host in ("0.0.0.0", "::") else host), port


async def _tcp(target: str, timeout: float) -> tuple[bool, str]:
    """A non-blocking connect on a bare socket, closed at once: no transport, stream, task or
    timer when it completes within the call, as it does on loopback (with 200 services checked
    every second, asyncio's streams cost ~2 % of a core here; this, a third of it)."""
    host, port = _host_port(target)
    why = "no address"
    try:
        addresses = _resolved.get((host, int(port))) or await _addresses(host, int(port))
        for family, addr in addresses:  # a name's addresses in turn
            sock, why = _connect(family, addr)
            if sock is not None:  # still in progress: wait for it
                try:
                    async with asyncio.timeout(timeout):
                        await _writable(sock)
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    why = os.strerror(err) if err else None
                finally:
                    sock.close()
            if why is None:
                return True, f"tcp {target}: connected"
    except (OSError, ValueError, asyncio.TimeoutError) as e:
        why = _why(e)
    return False, f"tcp {target}: {why}"


SETTLE = 0.3  # seconds a connection through a container's published port must stay open


async def _tcp_published(target: str, timeout: float) -> tuple[bool, str]:
    """A TCP check through a port the engine publishes: its proxy accepts every connection at
    once and closes it when nothing listens inside the container yet, so a connect alone proves
    nothing. Ready when the connection stays open (or the server speaks first)."""
    host, port = _host_port(target)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, int(port))
    except (OSError, ValueError, asyncio.TimeoutError) as e:
        return False, f"tcp {target}: {_why(e)}"
    try:
        try:
            data = await asyncio.wait_for(reader.read(1), min(SETTLE, timeout))
        except asyncio.TimeoutError:
            return True, f"tcp {target}: connected"
        except OSError as e:
            return False, f"tcp {target}: {_why(e)} (nothing listens inside the container yet)"
        if data:
            return True, f"tcp {target}: connected"
        return False, f"tcp {target}: closed at once (nothing listens inside the container yet)"
    finally:
        writer.close()


def _connect(family: int, addr: tuple) -> tuple[socket.socket | None, str | None]:
    """Start a connection: (None, None) made, (None, why) refused, (the socket, None) pending."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        err = sock.connect_ex(addr)
        if err in (errno.EINPROGRESS, errno.EAGAIN):
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if not err:
                try:
                    sock.getpeername()  # connected already: on loopback the handshake is done within connect
                except OSError:
                    pending, sock = sock, None
                    return pending, None
        return None, (os.strerror(err) if err else None)
    finally:
        if sock is not None:
            sock.close()


async def _writable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    writable = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, lambda: writable.done() or writable.set_result(None))
    try:
        await writable
    finally:
        loop.remove_writer(fd)


_resolved: dict[tuple[str, int], list[tuple[int, tuple]]] = {}


async def _addresses(host: str, port: int) -> list[tuple[int, tuple]]:
    """[(family, address)] of a check's target: a numeric address as it is, a name resolved
    once (in a thread) for the life of the stack."""
    key = (host, port)
    hit = _resolved.get(key)
    if hit is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            socket.inet_pton(family, host)
            hit = [(family, (host, port))]
        except OSError:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            hit = [(info[0], info[4]) for info in infos]
        _resolved[key] = hit
    return hit


async def _http(url: str, timeout: float) -> tuple[bool, str]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        async with asyncio.timeout(timeout):
            ssl_ctx = None
            if tls:
                import ssl

                ssl_ctx = ssl.create_default_context()
                ssl_ctx.check_hostname = False
                ssl_ctx.verify_mode = ssl.CERT_NONE
            reader, writer = await asyncio.open_connection(host, port, ssl=ssl_ctx)
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: revostack-health\r\n"
                             f"Connection: close\r\n\r\n".encode())
                await writer.drain()
                status = await reader.readline()
            finally:
                writer.close()
    except (OSError, asyncio.TimeoutError, ValueError) as e:
        return False, f"GET {url}: {_why(e)}"
    m = re.match(rb"HTTP/\d(?:\.\d)? (\d{3})", status)
    if not m:
        return False, f"GET {url}: not an HTTP answer"
    code = int(m.group(1))
    return 200 <= code < 300, f"GET {url}: {code}"


async def _cmd(command: str, cwd: str, env: Mapping[str, str], timeout: float) -> tuple[bool, str]:
    try:
        proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", command, cwd=cwd, env=dict(env),
                                                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    except OSError as e:
        return False, f"{command}: {e.strerror}"
    spawned.add(proc.pid)
    try:
        async with asyncio.timeout(timeout):
            code = await proc.wait()
    except asyncio.TimeoutError:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        await proc.wait()
        return False, f"{command}: timed out after {timeout:g}s"
    except asyncio.CancelledError:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        raise
    finally:
        spawned.discard(proc.pid)
    return code == 0, f"{command}: exit {code}"


def _why(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    if isinstance(e, OSError):
        return os.strerror(e.errno) if e.errno else (e.strerror or str(e))  # asyncio's strerror names the address
    return str(e)


class Checker:
    """One instance's check. ``log`` checks are fed the output by the sink."""

    def __init__(self, health: Health, cwd: str, env: Mapping[str, str], published: bool = False):
        self.health = health
        self.published = published  # its port is a container's, published by the engine
        self.cwd = cwd
        self.env = env
        self.seen = False
        self._pattern = re.compile(health.target, re.M) if health.kind is HealthKind.LOG else None

    def feed(self, text: str) -> None:
        if not self.seen and self._pattern is not None and self._pattern.search(text):
            self.seen = True

    async def check(self) -> tuple[bool, str]:
        h = self.health
        if h.kind is HealthKind.TCP:
            return await (_tcp_published if self.published else _tcp)(h.target, h.timeout)
        if h.kind is HealthKind.HTTP:
            return await _http(h.target, h.timeout)
        if h.kind is HealthKind.CMD:
            return await _cmd(h.target, self.cwd, self.env, h.timeout)
        return self.seen, f"log /{h.target}/: " + ("seen" if self.seen else "not seen yet")

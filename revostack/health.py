"""Health checks: http (2xx), tcp (connect), cmd (exit 0), log (a regex seen in the output).

Each check is one async attempt bounded by the check's timeout; it returns (ok, detail).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from typing import Mapping
from urllib.parse import urlsplit

from revostack.procs import spawned
from revostack.stackfile import Health, HealthKind


async def _tcp(target: str, timeout: float) -> tuple[bool, str]:
    host, _, port = target.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, int(port))
    except (OSError, asyncio.TimeoutError, ValueError) as e:
        return False, f"tcp {target}: {_why(e)}"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True, f"tcp {target}: connected"


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
        return e.strerror or str(e)
    return str(e)


class Checker:
    """One instance's check. ``log`` checks are fed the output by the sink."""

    def __init__(self, health: Health, cwd: str, env: Mapping[str, str]):
        self.health = health
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
            return await _tcp(h.target, h.timeout)
        if h.kind is HealthKind.HTTP:
            return await _http(h.target, h.timeout)
        if h.kind is HealthKind.CMD:
            return await _cmd(h.target, self.cwd, self.env, h.timeout)
        return self.seen, f"log /{h.target}/: " + ("seen" if self.seen else "not seen yet")

"""A steady load of small HTTP GETs, each on a fresh connection (as a browser reload makes),
counting what succeeded and what failed, and timing each request. Threads, stdlib only."""

from __future__ import annotations

import socket
import threading
import time


def get(host: str, port: int, path: str = "/", timeout: float = 10.0) -> bytes:
    """One GET on a fresh connection; the whole response (raises on any failure)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    resp = b"".join(chunks)
    if not resp.startswith(b"HTTP/1.") or b" 200 " not in resp.split(b"\r\n", 1)[0]:
        raise OSError(f"bad response: {resp[:60]!r}")
    head, _, body = resp.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and len(body) < int(value):
            raise OSError(f"truncated response: {len(body)} of {int(value)} bytes")
    return resp


class Load:
    """``workers`` threads requesting in a loop until ``stop()``."""

    def __init__(self, host: str, port: int, workers: int = 2, path: str = "/", pause: float = 0.0):
        self.host, self.port, self.path, self.pause = host, port, path, pause
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.bodies: set[bytes] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                body = get(self.host, self.port, self.path).split(b"\r\n\r\n", 1)[-1]
            except OSError as e:
                with self._lock:
                    self.failed += 1
                    if len(self.errors) < 20:
                        self.errors.append(f"{type(e).__name__}: {e}")
            else:
                with self._lock:
                    self.ok += 1
                    self.latencies.append(time.perf_counter() - t0)
                    self.bodies.add(body)
            if self.pause:
                time.sleep(self.pause)

    @property
    def total(self) -> int:
        return self.ok + self.failed

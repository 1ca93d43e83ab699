"""Shared test helpers: run the CLI, wait with deadlines, and never leave a process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _own_cache_folder(tmp_path_factory):
    """The parse cache (revostack/parsecache.py) of every revostack the tests start goes to a
    folder of the run's own, not to the user's ~/.cache."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last saw: {last!r}")


def cli(*args: str, cwd: Path | str | None = None, env: dict | None = None, timeout: float = 60,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m revostack ARGS`` as a user would, capturing its output."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("FORCE_COLOR", None) if env is None or "FORCE_COLOR" not in env else None
    return subprocess.run([sys.executable, "-m", "revostack", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout, input=input)


class Reaper:
    """Remembers process groups and pids a test started and kills whatever is left of them."""

    def __init__(self):
        self.groups: set[int] = set()
        self.popens: list[subprocess.Popen] = []
        self.stacks: list[str] = []

    def popen(self, args, **kw) -> subprocess.Popen:
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(args, **kw)
        self.popens.append(p)
        self.groups.add(p.pid)
        return p

    def cleanup(self) -> None:
        for pgid in self.groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p in self.popens:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.stacks:
            import psutil

            for proc in psutil.process_iter():
                try:
                    if proc.environ().get("REVOSTACK_STACK") in self.stacks:
                        proc.kill()
                except (psutil.Error, OSError):
                    pass


@pytest.fixture
def reaper():
    r = Reaper()
    try:
        yield r
    finally:
        r.cleanup()

"""``.revostack/`` next to the Stackfile: state.json (atomic), the lock, logs, history.

Every read tolerates a missing, half-written or garbage file: it is treated as absent.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Any

from revostack.errors import StateError

STATE_VERSION = 1


_STATE_TYPES = {"pid": int, "pgid": int, "create_time": (int, float), "port": int, "restarts": int,
                "service": str, "state": str, "started_at": (int, float)}


def _state_shape(data: Any) -> str | None:
    """What is wrong with a parsed state (None when nothing): its shape and its field types."""
    if not isinstance(data, dict):
        return f"has the wrong shape (a JSON {type(data).__name__}, not an object)"
    for key, kind in (("pid", int), ("create_time", (int, float)), ("instances", dict)):
        if key in data and not (isinstance(data[key], kind) and not isinstance(data[key], bool)):
            return f'has the wrong type for "{key}"'
    for name, entry in data.get("instances", {}).items():
        if not isinstance(entry, dict):
            return f'has the wrong shape for instance "{name}"'
        for key, kind in _STATE_TYPES.items():
            v = entry.get(key)
            if v is not None and (not isinstance(v, kind) or isinstance(v, bool)):
                return f'has the wrong type for "{name}" {key}'
    return None


class RunDir:
    def __init__(self, stack):
        self.stack = stack
        self.path = Path(stack.root) / ".revostack"
        self._lock_fd: int | None = None

    # -- layout ----------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def socket_path(self) -> Path:
        return self.path / "control.sock"

    @property
    def lock_file(self) -> Path:
        return self.path / "lock"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def history_file(self) -> Path:
        return self.path / "history.jsonl"

    def log_file(self, instance: str) -> Path:
        return self.logs / f"{instance}.log"

    def ensure(self) -> None:
        self.path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.path, 0o700)
        self.logs.mkdir(mode=0o700, exist_ok=True)

    # -- state -----------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any] | None:
        """The state, or None when it is missing, unreadable or not ours (``state_problem``
        says which)."""
        data, _ = self._load_state()
        return data

    def state_problem(self) -> str | None:
        """Why an existing state file cannot be used (None when it is fine, or absent)."""
        return self._load_state()[1]

    def _load_state(self) -> tuple[dict[str, Any] | None, str | None]:
        path = self.state_file
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None, None
        except IsADirectoryError:
            return None, "is a directory"
        except OSError as e:
            return None, f"cannot be opened: {e.strerror or e}"
        if not raw.strip():
            return None, "is empty"
        if b"\0" in raw:
            return None, "holds NUL bytes"
        import json

        try:
            data = json.loads(raw)
        except UnicodeDecodeError:
            return None, "is not UTF-8 text"
        except ValueError as e:
            return None, f"is not valid JSON ({e.msg} at line {e.lineno}; truncated?)"
        why = _state_shape(data)
        return (None, why) if why else (data, None)

    def write_state(self, data: dict[str, Any]) -> None:
        import json

        self.ensure()
        tmp = self.state_file.with_name(f"state.json.{os.getpid()}.tmp")
        payload = json.dumps({"version": STATE_VERSION, **data}, indent=1).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.state_file)

    def clear_state(self) -> None:
        """Forget a run: the state file, and the socket unless a living ``up`` holds the lock."""
        paths = [self.state_file] + ([] if self.is_locked() else [self.socket_path])
        for p in paths:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                pass

    def recorded(self) -> dict[int, float]:
        """pid -> create time of every process the state file names (instances and ``up``)."""
        state = self.read_state() or {}
        out: dict[int, float] = {}
        for entry in state.get("instances", {}).values():
            if isinstance(entry, dict) and isinstance(entry.get("pid"), int) and isinstance(entry.get("create_time"), (int, float)):
                out[entry["pid"]] = float(entry["create_time"])
        return out

    def ownership(self, running: bool = False):
        from revostack.probe import Ownership

        return Ownership(self.stack.id, self.recorded(), running)

    # -- the lock ----------------------------------------------------------------------------
    def acquire(self) -> None:
        """Hold the lock for the life of this process; StateError (exit 4) when another ``up`` has it.
        A lock left by a dead process is released by the kernel, so it never blocks."""
        self.ensure()
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                pid = self.lock_holder()
                deadline = time.monotonic() + 1.0
                while pid is None and time.monotonic() < deadline:
                    time.sleep(0.01)  # the winner of a simultaneous start writes its pid just after flock
                    pid = self.lock_holder()
                raise StateError(f"already running, pid {pid if pid else '?'}; use `revostack down`") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.set_inheritable(fd, False)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            try:
                os.ftruncate(self._lock_fd, 0)
            except OSError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None

    def lock_holder(self) -> int | None:
        try:
            text = self.lock_file.read_text().strip()
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    def is_locked(self) -> bool:
        """Whether a living ``up`` holds the lock (without taking it)."""
        try:
            fd = os.open(self.lock_file, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    # -- history -----------------------------------------------------------------------------
    def append_history(self, entry: dict[str, Any]) -> None:
        import json

        self.ensure()
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry}
        with open(self.history_file, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def read_history(self) -> list[dict[str, Any]]:
        import json

        out = []
        try:
            with open(self.history_file) as f:
                for line in f:
                    try:
                        item = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(item, dict):
                        out.append(item)
        except OSError:
            pass
        return out

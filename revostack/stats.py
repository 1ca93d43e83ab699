"""CPU and memory of each instance's whole process tree (psutil), for `ps` and `top`.

Sampled in the client, never in the supervisor, so a slow /proc never stalls the stack.
"""

from __future__ import annotations

import time
from typing import Any


def _tree(pid: int):
    import psutil

    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return []


def _cpu_total(procs) -> float:
    import psutil

    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _memory(procs) -> int:
    import psutil

    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


class Sampler:
    """CPU % of each instance's tree between two calls, memory (RSS) now."""

    def __init__(self):
        self.last: dict[str, tuple[float, float]] = {}  # instance -> (monotonic time, cpu seconds)

    def sample(self, snapshot: dict[str, Any]) -> list[dict[str, Any]]:
        now_wall = time.time()
        now = time.monotonic()
        out = []
        for name, i in snapshot.get("instances", {}).items():
            tree = _tree(i["pid"]) if i.get("pid") else []
            cpu_pct = None
            mem = None
            if tree:
                cpu = _cpu_total(tree)
                mem = _memory(tree)
                prev = self.last.get(name)
                if prev is not None and now > prev[0]:
                    cpu_pct = round(max((cpu - prev[1]) / (now - prev[0]) * 100, 0.0), 1)
                self.last[name] = (now, cpu)
            else:
                self.last.pop(name, None)
            out.append({
                "instance": name,
                "service": i.get("service"),
                "state": i.get("state"),
                "pid": i.get("pid"),
                "port": i.get("port"),
                "health": i.get("health"),
                "restarts": i.get("restarts", 0),
                "uptime_s": round(now_wall - i["started_at"], 1) if i.get("started_at") and i.get("pid") else None,
                "cpu_percent": cpu_pct,
                "memory_bytes": mem,
                **{k: i.get(k) for k in ("handoff", "private_port", "connections") if "handoff" in i},
            })
        return out


def rows(snapshot: dict[str, Any], interval: float = 0.2) -> list[dict[str, Any]]:
    """One row per instance, keys as `ps --json` documents (two samples ``interval`` apart)."""
    sampler = Sampler()
    first = sampler.sample(snapshot)
    if not any(r["pid"] for r in first):
        return first
    time.sleep(interval)
    return sampler.sample(snapshot)

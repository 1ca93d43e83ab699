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


def rows(snapshot: dict[str, Any], interval: float = 0.2) -> list[dict[str, Any]]:
    """One row per instance, keys as `ps --json` documents."""
    now = time.time()
    instances = snapshot.get("instances", {})
    trees = {name: _tree(i["pid"]) if i.get("pid") else [] for name, i in instances.items()}
    before = {name: _cpu_total(t) for name, t in trees.items()}
    t0 = time.monotonic()
    if any(trees.values()):
        time.sleep(interval)
    elapsed = max(time.monotonic() - t0, 1e-6)
    out = []
    for name, i in instances.items():
        tree = trees[name]
        cpu = (_cpu_total(tree) - before[name]) / elapsed * 100 if tree else None
        out.append({
            "instance": name,
            "service": i.get("service"),
            "state": i.get("state"),
            "pid": i.get("pid"),
            "port": i.get("port"),
            "health": i.get("health"),
            "restarts": i.get("restarts", 0),
            "uptime_s": round(now - i["started_at"], 1) if i.get("started_at") and i.get("pid") else None,
            "cpu_percent": None if cpu is None else round(max(cpu, 0.0), 1),
            "memory_bytes": _memory(tree) if tree else None,
        })
    return out

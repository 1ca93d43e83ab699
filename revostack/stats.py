"""CPU and memory of each instance's whole process tree, for `ps`, `top` and the dashboard.

One pass over the machine's process table per sample (``/proc/PID/stat``: parent, group, CPU
times and RSS in one read per process), from which every instance's tree is built: the cost
grows with the processes on the machine, not with instances × processes. Sampled in the
client, never in the supervisor, so a slow /proc never stalls the stack.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterable, NamedTuple


class Proc(NamedTuple):
    ppid: int
    pgid: int
    cpu: float  # user + system seconds
    rss: int  # bytes


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def table() -> dict[int, Proc]:
    """Every live process of the machine (zombies left out)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return _table_psutil()
    out: dict[int, Proc] = {}
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone since the listing
        f = stat[stat.rfind(b")") + 2:].split()
        if len(f) < 22 or f[0] == b"Z":
            continue
        out[int(name)] = Proc(int(f[1]), int(f[2]), (int(f[11]) + int(f[12])) / _TICK, int(f[21]) * _PAGE)
    return out


def _table_psutil() -> dict[int, Proc]:  # where there is no /proc
    import psutil

    out = {}
    for p in psutil.process_iter(["ppid", "cpu_times", "memory_info", "status"]):
        i = p.info
        if i["status"] == psutil.STATUS_ZOMBIE or i["cpu_times"] is None or i["memory_info"] is None:
            continue
        try:
            pgid = os.getpgid(p.pid)
        except OSError:
            continue
        out[p.pid] = Proc(i["ppid"], pgid, i["cpu_times"].user + i["cpu_times"].system, i["memory_info"].rss)
    return out


def trees(procs: dict[int, Proc], roots: Iterable[tuple[int, int | None]]) -> list[list[int]]:
    """For each (pid, process group) root: the pid, its descendants, and whatever else is still in
    its group (a grandchild re-parented to the supervisor, which is a subreaper) — from one table."""
    children: dict[int, list[int]] = {}
    groups: dict[int, list[int]] = {}
    for pid, p in procs.items():
        children.setdefault(p.ppid, []).append(pid)
        groups.setdefault(p.pgid, []).append(pid)
    out = []
    for pid, pgid in roots:
        if pid not in procs:
            out.append([])
            continue
        seen = {pid}
        todo = [pid, *groups.get(pgid, ())] if pgid else [pid]
        seen.update(todo)
        while todo:
            for c in children.get(todo.pop(), ()):
                if c not in seen:
                    seen.add(c)
                    todo.append(c)
        out.append(sorted(seen))
    return out


class Sampler:
    """CPU % of each instance's tree between two calls, memory (RSS) now."""

    def __init__(self):
        self.last: dict[str, tuple[float, float]] = {}  # instance -> (monotonic time, cpu seconds)

    def sample(self, snapshot: dict[str, Any]) -> list[dict[str, Any]]:
        now_wall = time.time()
        instances = snapshot.get("instances", {})
        running = [(name, i) for name, i in instances.items() if i.get("pid")]
        procs = table() if running else {}
        now = time.monotonic()
        usage: dict[str, tuple[float, int]] = {}
        roots = [(i["container_pid"], None) if i.get("container_pid") else (i["pid"], i.get("pgid")) for _, i in running]
        for (name, i), tree in zip(running, trees(procs, roots)):
            if tree:
                usage[name] = (sum(procs[p].cpu for p in tree), sum(procs[p].rss for p in tree))
        out = []
        for name, i in instances.items():
            cpu_pct = mem = None
            if name in usage:
                cpu, mem = usage[name]
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
                "pid": i.get("container_pid") or i.get("pid"),
                "port": i.get("port"),
                "health": i.get("health"),
                "restarts": i.get("restarts", 0),
                "uptime_s": round(now_wall - i["started_at"], 1) if i.get("started_at") and i.get("pid") else None,
                "cpu_percent": cpu_pct,
                "memory_bytes": mem,
                **{k: i.get(k) for k in ("handoff", "private_port", "connections") if "handoff" in i},
                **{k: i.get(k) for k in ("image", "container") if "image" in i},
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

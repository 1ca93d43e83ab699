"""Restart on file change: one watcher for the whole stack (watchfiles), debounced."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

ALWAYS_IGNORED = {".git", "__pycache__", "node_modules", ".revostack"}
STEP_MS = 100  # a burst of saves with gaps shorter than this gives one restart
DEBOUNCE_MS = 1000  # the longest a burst is grouped before restarting anyway


@lru_cache(maxsize=256)
def _glob_re(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c)))
        i += 1
    return re.compile("".join(out) + r"\Z")


def matches(rel: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """gitignore-like: a pattern with a "/" matches the path from the cwd; one without
    matches the file's name at any depth. ``**`` spans folders."""
    name = rel.rsplit("/", 1)[-1]
    for p in patterns:
        p = p.lstrip("./") if p.startswith("./") else p
        if _glob_re(p).match(rel) or ("/" not in p and _glob_re(p).match(name)):
            return True
        if p.endswith("/**") and (rel == p[:-3] or rel.startswith(p[:-2])):
            return True
    return False


def services_for(changed: list[str], services) -> dict[str, str]:
    """service name -> the first changed file (relative to its cwd) that its globs match."""
    out: dict[str, str] = {}
    for svc in services:
        if not svc.watch:
            continue
        root = str(svc.cwd.resolve())
        for path in changed:
            if not path.startswith(root + os.sep):
                continue
            rel = path[len(root) + 1:]
            parts = rel.split("/")
            if ALWAYS_IGNORED.intersection(parts):
                continue
            if matches(rel, svc.watch) and not matches(rel, svc.watch_ignore):
                out[svc.name] = rel
                break
    return out


def _filter(change, path: str) -> bool:
    return not ALWAYS_IGNORED.intersection(Path(path).parts)


async def run(sup) -> None:
    """Watch the services' globs and the stack's own files (the Stackfile, its env files): a
    saved Stackfile is reloaded. The watched set follows the stack: every change applied to it
    (``operate.apply``: a reload, from here or from `revostack reload`, or a scale) sets
    ``sup.watch_changed``, and when what must be watched is no longer the same, the watch
    starts again on what the stack is now. (Only then: a new watch misses what is saved while
    it starts.)"""
    import asyncio

    sup.watch_changed = asyncio.Event()
    while not sup.stop_event.is_set():
        targets = _targets(sup)
        stop = asyncio.Event()
        relay = asyncio.ensure_future(_until_changed(sup, targets, stop))
        try:
            await _watch(sup, targets, stop)
        finally:
            relay.cancel()


async def _until_changed(sup, targets, out) -> None:
    """Set ``out`` when the stack stops, or when it needs other things watched than ``targets``."""
    import asyncio

    stopping = asyncio.ensure_future(sup.stop_event.wait())
    try:
        while not stopping.done():
            changed = asyncio.ensure_future(sup.watch_changed.wait())
            try:
                await asyncio.wait({stopping, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
            sup.watch_changed.clear()
            if _targets(sup) != targets:
                break
    finally:
        stopping.cancel()
    out.set()


def _targets(sup) -> tuple[list, set[str], list[str]]:
    """(services with globs, the stack's own files, the paths to watch)."""
    services = [sup.stack.services[n] for n in {st.service for st in sup.instances.values()}]
    watched = [s for s in services if s.watch]
    own = {str(f) for f in sup.stack.files if f.exists()}
    roots = sorted({str(s.cwd.resolve()) for s in watched})
    # a root inside another is covered by it
    roots = [r for r in roots if not any(r != o and r.startswith(o + os.sep) for o in roots)]
    roots += sorted(f for f in own if not any(f.startswith(r + os.sep) for r in roots))
    return watched, own, roots


async def _watch(sup, targets, stop) -> None:
    from watchfiles import awatch

    watched, own, roots = targets
    if not roots:
        await stop.wait()
        return
    async for changes in awatch(*roots, watch_filter=_filter, debounce=DEBOUNCE_MS, step=STEP_MS,
                                stop_event=stop, recursive=True, raise_interrupt=False):
        paths = sorted(p for _, p in changes)
        if own.intersection(paths):
            from revostack import operate

            sup.sink.system(f"{os.path.basename(sorted(own.intersection(paths))[0])} changed: reloading")
            reply = await operate.reload(sup)
            if reply.get("invalid"):
                for problem in reply.get("problems", []):
                    sup.sink.system(f"reload: {problem}")
                sup.sink.system("reload: the Stackfile is not valid; nothing changed")
            elif not reply.get("ok"):
                sup.sink.system(f"reload: {reply.get('error')}; nothing changed")
            continue
        hit = services_for(paths, watched)
        for name, rel in hit.items():
            sup.sink.system(f"{rel} changed: restarting {name}")
            sup.restart([name], reason=f"{rel} changed")

"""The live view: `revostack top` (attached through the control socket) and `up --dashboard`.

rich draws it; ``Live`` with ``auto_refresh=False``, refreshed about once a second.
"""

from __future__ import annotations

import asyncio
import os
import select
import sys
import time
from typing import Any

from revostack.output import human_bytes, human_duration, port_cell
from revostack.stats import Sampler

STATE_STYLE = {"healthy": "green", "running": "green", "completed": "blue", "starting": "yellow",
               "waiting": "yellow", "restarting": "yellow", "unhealthy": "red", "failed": "bold red", "stopped": "dim"}


def render(stack_name: str, rows: list[dict[str, Any]], footer: str = ""):
    from rich.table import Table

    t = Table(title=f"revostack · {stack_name}", caption=footer or None, expand=False)
    for col, just in (("instance", "left"), ("state", "left"), ("health", "left"), ("port", "right"), ("pid", "right"),
                      ("restarts", "right"), ("uptime", "right"), ("cpu", "right"), ("memory", "right")):
        t.add_column(col.upper(), justify=just)
    for r in rows:
        state = r["state"] or "-"
        t.add_row(r["instance"], f"[{STATE_STYLE.get(state, '')}]{state}[/]" if STATE_STYLE.get(state) else state,
                  r["health"] or "-", port_cell(r), str(r["pid"] or "-"), str(r["restarts"]),
                  human_duration(r["uptime_s"]), "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.1f}%",
                  human_bytes(r["memory_bytes"]))
    return t


class _Keys:
    """Single keys from a terminal's stdin without Enter (cbreak mode), restored on exit."""

    def __init__(self):
        self.fd = sys.stdin.fileno() if sys.stdin and sys.stdin.isatty() else None
        self.saved = None

    def __enter__(self):
        if self.fd is not None:
            import termios
            import tty

            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def pressed(self, timeout: float) -> str:
        if self.fd is None:
            time.sleep(timeout)
            return ""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        return os.read(self.fd, 16).decode(errors="ignore") if ready else ""


def top(stack, once: bool = False) -> int:
    """Attach to the running stack; q or Ctrl-C leaves (the stack keeps running)."""
    from rich.console import Console
    from rich.live import Live

    from revostack import control
    from revostack.errors import StateError

    def snapshot():
        reply = control.request_if_running(stack, {"cmd": "ps"})
        if reply is None:
            raise StateError(f"stack \"{stack.name}\" is not running")
        return reply

    sampler = Sampler()
    sampler.sample(snapshot())
    console = Console() if sys.stdout.isatty() else Console(width=120)
    if once:
        time.sleep(0.2)
        console.print(render(stack.name, sampler.sample(snapshot())))
        return 0
    try:
        with _Keys() as keys, Live(render(stack.name, sampler.sample(snapshot()), "q: quit"), console=console,
                                   auto_refresh=False, screen=False) as live:
            while True:
                if "q" in keys.pressed(1.0).lower():
                    return 0
                try:
                    rows = sampler.sample(snapshot())
                except StateError:
                    live.update(render(stack.name, [], "the stack stopped"), refresh=True)
                    return 0
                live.update(render(stack.name, rows, "q: quit · the stack keeps running"), refresh=True)
    except KeyboardInterrupt:
        return 0


async def run_with(sup) -> int:
    """``up --dashboard``: the supervisor runs; the view replaces the scrolling log (the log files
    still get every line). q or Ctrl-C stops the stack, as Ctrl-C does for ``up``."""
    from rich.console import Console
    from rich.live import Live

    sampler = Sampler()
    console = Console()
    run = asyncio.create_task(sup.run())
    loop = asyncio.get_running_loop()
    keys = _Keys()
    with keys:
        if keys.fd is not None:
            loop.add_reader(keys.fd, lambda: "q" in os.read(keys.fd, 16).decode(errors="ignore").lower()
                            and sup.request_stop("q pressed"))
        try:
            with Live(render(sup.stack.name, []), console=console, auto_refresh=False, transient=False) as live:
                while not run.done():
                    rows = await asyncio.to_thread(sampler.sample, sup.snapshot())
                    live.update(render(sup.stack.name, rows, "q or Ctrl-C: stop the stack · logs: revostack logs -f"),
                                refresh=True)
                    try:
                        await asyncio.wait_for(asyncio.shield(run), 1.0)
                    except asyncio.TimeoutError:
                        pass
        finally:
            if keys.fd is not None:
                loop.remove_reader(keys.fd)
    return await run

"""What revostack prints: plain tables (fast, no rich), and colour decisions.

The log sink used by ``up`` lives in ``sink.py``; rich is imported only by what draws with it.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence, TextIO


def color_enabled(stream: TextIO | None = None, no_color: bool = False) -> bool:
    """Colour only on a TTY, unless FORCE_COLOR is set; NO_COLOR or --no-color turn it off."""
    if no_color or os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    lines = ["  ".join(h.upper().ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return "\n".join(lines)


def port_cell(row) -> str:
    """A row's port for tables: the public port, and behind a proxy the private one and the
    open connections (``8000 -> 41234, 3 conn``)."""
    port = row.get("port")
    if port is None:
        return "-"
    if row.get("handoff") == "proxy":
        private = row.get("private_port") or "-"
        return f"{port} -> {private}, {row.get('connections') or 0} conn"
    if row.get("handoff") == "socket":
        return f"{port} (fd 3)"
    return str(port)


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


LIST_LIMIT = 6  # names listed in a human line before "and N more" (-v lists them all)


def names(items: Sequence[str], verbose: bool = False, limit: int = LIST_LIMIT) -> str:
    """``a.1, b.1, c.1``, or past ``limit`` the first ones and ``and 194 more``."""
    items = list(items)
    if verbose or len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f" and {len(items) - limit} more"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

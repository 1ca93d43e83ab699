"""`revostack logs`: the per-instance files of `.revostack/logs/`, interleaved by time."""

from __future__ import annotations

import heapq
import sys
import time
from pathlib import Path

from revostack.errors import UsageError
from revostack.sink import COLORS


def _files(rundir, stack, names: list[str]) -> dict[str, Path]:
    found = {p.stem: p for p in sorted(rundir.logs.glob("*.log")) if p.stem not in ("revostack", "up")}
    if not names:  # revostack's own lines (system.log) only when asked for: `revostack logs system`
        return {k: v for k, v in found.items() if k != "system"}
    out = {}
    for n in names:
        hits = {k: v for k, v in found.items() if k == n or k.rsplit(".", 1)[0] == n}
        if not hits:
            if n not in stack.services and n != "system":
                from revostack.errors import did_you_mean

                raise UsageError(f'unknown service "{n}"{did_you_mean(n, stack.services)}')
        out.update(hits)
    return out


def _parse(line: bytes) -> tuple[bytes, bytes]:
    """A log line is ``YYYY-MM-DDTHH:MM:SS.mmm text``: (timestamp, text)."""
    ts, _, text = line.partition(b" ")
    return ts, text


def show(rundir, stack, names: list[str], lines: int | None, follow: bool, color: bool = False) -> int:
    files = _files(rundir, stack, names)
    if not files:
        print(f"no logs yet for stack \"{stack.name}\" (they are written by `revostack up`)", file=sys.stderr)
        return 0
    width = max(len(n) for n in files)
    colors = {n: COLORS[i % len(COLORS)] for i, n in enumerate(sorted({n.rsplit(".", 1)[0] for n in files}))}
    out = sys.stdout.buffer

    def render(name: str, line: bytes) -> bytes:
        ts, text = _parse(line)
        head = ts[11:19] + b" " + name.ljust(width).encode() + b" |"
        if color:
            head = b"\x1b[%dm" % colors[name.rsplit(".", 1)[0]] + head + b"\x1b[0m"
        return head + b" " + text

    def stream(name: str, path: Path):
        with open(path, "rb") as f:
            for line in f:
                yield _parse(line)[0], name, line

    merged = list(heapq.merge(*(stream(n, p) for n, p in files.items()), key=lambda x: x[0]))
    if lines is not None:
        merged = merged[-lines:] if lines > 0 else []
    out.write(b"".join(render(n, l if l.endswith(b"\n") else l + b"\n") for _, n, l in merged))
    out.flush()
    if not follow:
        return 0
    offsets = {n: p.stat().st_size for n, p in files.items()}
    partial = {n: b"" for n in files}
    try:
        while True:
            time.sleep(0.2)
            for n, p in list(_files(rundir, stack, names).items()):
                try:
                    size = p.stat().st_size
                except OSError:
                    continue
                off = offsets.get(n, 0)
                if size < off:  # rotated
                    off = 0
                if size == off:
                    continue
                with open(p, "rb") as f:
                    f.seek(off)
                    data = partial.get(n, b"") + f.read()
                offsets[n] = size
                cut = data.rfind(b"\n") + 1
                partial[n] = data[cut:]
                if cut:
                    width = max(width, len(n))
                    colors.setdefault(n.rsplit(".", 1)[0], COLORS[len(colors) % len(COLORS)])
                    out.write(b"".join(render(n, l + b"\n") for l in data[:cut - 1].split(b"\n")))
                    out.flush()
    except KeyboardInterrupt:
        return 0

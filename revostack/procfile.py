"""Procfiles (``name: command``) as stacks, with foreman's port rule. Pure."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

from revostack import dotenv
from revostack.errors import ConfigError, Problem
from revostack.stackfile import Restart, Service, Stack, _display, read_text

_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


def parse(text: str, source: str = "Procfile") -> list[tuple[str, str]]:
    """``[(name, command)]`` in file order; bad lines are reported with their numbers."""
    out: list[tuple[str, str]] = []
    problems = []
    seen: set[str] = set()
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            problems.append(Problem(source, "expected \"name: command\"", no, 1))
            continue
        name, cmd = m.group(1), m.group(2).strip()
        if name in seen:
            problems.append(Problem(source, f'process type "{name}" is declared twice', no, 1))
            continue
        seen.add(name)
        out.append((name, cmd))
    if problems:
        raise ConfigError(problems)
    if not out:
        raise ConfigError([Problem(source, "no processes: add lines like \"web: python app.py\"")])
    return out


def foreman_port(base: int, type_index: int, instance: int) -> int:
    """foreman: base + 100 per process type (file order) + 1 per instance (1-based)."""
    return base + 100 * type_index + (instance - 1)


def load(
    path: Path,
    *,
    base_port: int | None = None,
    concurrency: Mapping[str, int] | None = None,
    env_files: list[Path] | None = None,
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Stack:
    """A Procfile as a Stack: no dependencies, no health checks, ``restart = "no"``, ports by
    foreman's rule (each instance's formula port; fallbacks only when it is taken)."""
    text = read_text(path)
    entries = parse(text, _display(path))  # named like Stackfile problems: relative under the cwd
    root = root or path.parent
    merged: dict[str, str] = {}
    files = env_files if env_files is not None else ([root / ".env"] if (root / ".env").is_file() else [])
    for f in files:
        merged.update(dotenv.parse(read_text(f), _display(f)))
    if base_port is None:  # foreman and honcho: -p, else PORT from the .env files, else $PORT, else 5000
        env = os.environ if environ is None else environ
        for candidate in (merged.get("PORT", ""), env.get("PORT", "")):
            if candidate.strip().isdigit():
                base_port = int(candidate.strip())
                break
        else:
            base_port = 5000
    concurrency = dict(concurrency or {})
    unknown = [n for n in concurrency if n not in dict(entries)]
    if unknown:
        raise ConfigError([Problem(_display(path), f'unknown process type "{n}" in concurrency') for n in unknown])
    services = {}
    for i, (name, cmd) in enumerate(entries):
        port = foreman_port(base_port, i, 1)
        scale = concurrency.get(name, 1)
        services[name] = Service(
            name=name, cmd=cmd, cwd=root, port=port,
            fallback=tuple(range(port + scale, min(port + scale + 50, 65535) + 1)),
            restart=Restart.NO, stop_timeout=5.0, scale=max(scale, 0) or 1,
            autostart=scale != 0,
        )
    return Stack(name=root.resolve().name or "procfile", path=path, services=services,
                 dotenv=merged, stop_timeout=5.0, kind="procfile")

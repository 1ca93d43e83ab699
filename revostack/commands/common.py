"""What the commands share: finding and loading the stack, planning it against this machine, running the loop."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from revostack.errors import UsageError

STACKFILE = "Stackfile.toml"
PROCFILE = "Procfile"


def find_stackfile(explicit: str | None, start: Path | None = None) -> Path:
    if explicit:
        return Path(explicit)
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):  # the nearest folder wins; in it, the Stackfile
        for name in (STACKFILE, PROCFILE):
            if (folder / name).is_file():
                return folder / name
    raise UsageError(f"no {STACKFILE} or {PROCFILE} in this folder or any parent (write one with `revostack init`)")


def load_stack(args: argparse.Namespace, start: Path | None = None):
    path = find_stackfile(getattr(args, "file", None), start)
    if getattr(args, "file", None) and start is not None and not path.is_absolute():
        path = start / path  # honcho: -f is relative to the app root
    if path.suffix == ".toml" or path.name == STACKFILE:
        from revostack import stackfile

        return stackfile.load(path)
    from revostack import procfile

    return procfile.load(path, base_port=getattr(args, "port", None),
                         concurrency=parse_concurrency(getattr(args, "concurrency", None)))


def base_port(flag: int | None) -> int:
    if flag is not None:
        return flag
    env = os.environ.get("PORT", "")
    if env.isdigit():
        return int(env)
    return 5000


def parse_concurrency(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, eq, num = part.partition("=")
        if not eq or not num.strip().isdigit():
            raise UsageError(f'bad concurrency "{part}": use name=N, e.g. web=2,worker=1')
        out[name.strip()] = int(num)
    return out


def plan_ports(stack, names: list[str] | None = None, strategy=None):
    """(the selected services, each instance's port choice) against the real machine: what
    ``ports`` shows, without the environments a full plan builds."""
    from revostack import plan as planmod
    from revostack import probe, rundir

    selected = stack.selection(names)
    world = probe.ProbeWorld(stack.host, rundir.RunDir(stack).ownership(running=False))
    return selected, planmod.plan_ports(stack, selected, world, strategy)


def make_plan(stack, names: list[str] | None = None, strategy=None, color: bool | None = None, environ=None):
    """Plan ports and env for the selected services against the real machine, on ``environ``
    (default: this process's environment)."""
    from revostack import plan as planmod

    selected, ports = plan_ports(stack, names, strategy)
    # a plain copy: every instance's env starts from it (os.environ decodes each key on each read)
    return planmod.build(stack, selected, ports, dict(os.environ) if environ is None else environ, color)


def display(p: Path) -> str:
    try:
        rel = os.path.relpath(p)
        return rel if not rel.startswith("../../") else str(p)
    except ValueError:
        return str(p)


def strategy_of(args):
    from revostack.stackfile import Strategy

    s = getattr(args, "strategy", None)
    return Strategy(s) if s else None


def child_color(no_color: bool) -> bool | None:
    """What the children are told: FORCE_COLOR when we write to a terminal, NO_COLOR when off."""
    if no_color or os.environ.get("NO_COLOR"):
        return False
    return True if sys.stdout.isatty() else None


def run_async(coro) -> int:
    """The one event loop of a run. On Python 3.11 children are watched through pidfds (Linux)
    instead of one waiting thread per child; 3.12 does that by itself."""
    import asyncio

    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        try:
            asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
        except (OSError, AttributeError, NotImplementedError):
            pass
    return asyncio.run(coro)


def live_ports(stack, when_down: str | None = None):
    """The running stack's assignments, or None when it is not running."""
    from revostack import control

    msg = {"cmd": "ports"}
    reply = ask_running(stack, msg, when_down) if when_down else control.request_if_running(stack, msg)
    return None if reply is None else reply.get("instances")


NOT_ANSWERING = "no stack answers on the control socket"


def ask_running(stack, msg: dict, when_down: str, then: float | None = None):
    """The running stack's reply (None when none answers). A state file that cannot be read is
    said in one line on stderr, with what the command does instead (``when_down`` when no stack
    answers): the control socket, not the file, is what tells whether the stack runs."""
    from revostack import control

    reply = control.request_if_running(stack, msg, then=then)
    state_warning(stack, "asking the running stack instead" if reply is not None else when_down)
    return reply


def state_warning(stack, instead: str) -> None:
    from revostack.rundir import RunDir

    rd = RunDir(stack)
    why = rd.state_problem()
    if why:
        print(f"revostack: {display(rd.state_file)} {why}, so it cannot be read; {instead}", file=sys.stderr)

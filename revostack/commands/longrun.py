"""The long-running stack: up -d's waiting parent, attach, stop, scale, reload."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from revostack.commands.common import NOT_ANSWERING, ask_running, load_stack
from revostack.errors import EXIT_FAILED, EXIT_OK, StateError, UsageError

SETTLED = {"healthy", "running", "completed", "failed", "stopped", "unhealthy"}
CHANGE_TIMEOUT = 120.0  # stop, scale and reload wait for stop timeouts and health checks


def settled(i: dict) -> bool:
    """An instance `up -d` need not wait for any more; a container's once the engine runs it."""
    if i.get("state") not in SETTLED:
        return False
    return not (i.get("image") and i.get("state") in ("running", "healthy") and not i.get("container"))


def _needs_terminal(what: str) -> None:
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        raise UsageError(f"{what} needs a terminal (for the output of a running stack, use `revostack attach`)")


def _scrollback(args) -> int:
    if args.scrollback < 1:
        raise UsageError(f"--scrollback must be at least 1, not {args.scrollback}")
    return args.scrollback


def cmd_ui(args) -> int:
    """The interactive view of the running stack; q leaves it running."""
    from revostack.rundir import RunDir

    _needs_terminal("revostack ui")
    stack = load_stack(args)
    scrollback = _scrollback(args)
    if ask_running(stack, {"cmd": "ping"}, f"{NOT_ANSWERING}: nothing to show") is None:
        raise StateError(f"stack \"{stack.name}\" is not running (start it with `revostack up -d`, or `revostack up --ui`)")
    from revostack import ui

    return ui.run(RunDir(stack).socket_path, stack.name, scrollback, stop_on_quit=False)


def up_ui(args, stack) -> int:
    """``up --ui``: the stack starts as with ``up -d`` and the view opens at once; q (or the
    terminal closing) stops the stack, as Ctrl-C stops ``up``, and the view shows the shutdown."""
    from revostack.rundir import RunDir

    _needs_terminal("revostack up --ui")
    scrollback = _scrollback(args)
    rd = RunDir(stack)
    if rd.is_locked():
        raise StateError(f"already running, pid {rd.lock_holder() or '?'}; use `revostack ui` to watch it")
    stack.selection(list(args.services) or None)  # unknown names: exit 2 now
    child, log, start = _spawn_supervisor(args, stack, rd)
    deadline = time.monotonic() + 30
    while not rd.socket_path.exists():  # the view needs the control socket; the services start on their own
        code = child.poll()
        if code is not None:
            _tail(log, start)
            return code or EXIT_FAILED
        if time.monotonic() > deadline:
            print(f"revostack: the stack (pid {child.pid}) did not open its control socket; see {log}", file=sys.stderr)
            return EXIT_FAILED
        time.sleep(0.02)
    from revostack import ui

    try:
        ui.run(rd.socket_path, stack.name, scrollback, stop_on_quit=True)
    finally:
        if child.poll() is None:  # the view left some other way: stop the stack
            from revostack import control

            control.stop_and_wait(rd.socket_path, CHANGE_TIMEOUT)
        try:
            code = child.wait(timeout=150)
        except subprocess.TimeoutExpired:
            code = EXIT_FAILED
    return code


def _spawn_supervisor(args, stack, rd):
    """The supervisor as ``up`` in a session of its own, output to logs/up.log: (the child,
    the log, where in the log its output begins)."""
    rd.ensure()
    argv = [sys.executable, "-m", "revostack", "-f", str(stack.path), "up", *args.services]
    argv += ["--no-watch"] * args.no_watch + ["--abort-on-exit"] * args.abort_on_exit
    argv += ["--no-timestamps"] * (not args.timestamps) + (["--strategy", args.strategy] if args.strategy else [])
    log = rd.logs / "up.log"
    start = log.stat().st_size if log.exists() else 0  # what this child writes begins here
    with open(log, "ab") as out:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True, env={**os.environ, "REVOSTACK_DETACHED": "1"})
    return child, log, start


def _tail(log, start: int) -> None:
    """The last lines the supervisor wrote (why it could not start the stack), on stderr."""
    for line in log.read_bytes()[start:].decode("utf-8", "replace").strip().splitlines()[-5:]:
        print(line, file=sys.stderr)


def detach(args, stack) -> int:
    """``up -d``: start the supervisor in a session of its own, wait through the control socket
    until every started service has reached its condition or failed, print the table."""
    from revostack.commands.live import print_ps
    from revostack.rundir import RunDir

    rd = RunDir(stack)
    if rd.is_locked():
        raise StateError(f"already running, pid {rd.lock_holder() or '?'}; use `revostack down`")
    stack.selection(list(args.services) or None)  # unknown names: exit 2 now
    child, log, start = _spawn_supervisor(args, stack, rd)
    limit = max([s.health.start_period for s in stack.services.values() if s.health] + [10.0]) + 30
    deadline = time.monotonic() + limit
    reply = None
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:  # it could not start the stack: say why, with its code
            _tail(log, start)
            return code or EXIT_FAILED
        reply = _ps(stack)
        if reply is not None and all(settled(i) for i in reply["instances"].values()):
            break
        time.sleep(0.05)
    if reply is None:
        print(f"revostack: the stack (pid {child.pid}) did not answer within {limit:g}s; see {log}", file=sys.stderr)
        return EXIT_FAILED
    if args.verbose or len(reply["instances"]) <= TABLE_LIMIT:
        print_ps(reply)
    else:
        for line in up_summary(reply["instances"]):
            print(line)
    failed = [n for n, i in reply["instances"].items() if i.get("state") in ("failed", "unhealthy")]
    waiting = [n for n, i in reply["instances"].items() if not settled(i)]
    print(f"stack \"{stack.name}\" runs in the background (pid {child.pid}); logs: `revostack logs`, "
          "`revostack attach`; stop it with `revostack down`")
    if waiting:
        print(f"revostack: still not settled after {limit:g}s: {', '.join(waiting)}", file=sys.stderr)
    return EXIT_FAILED if failed or waiting else EXIT_OK


TABLE_LIMIT = 20  # past this many instances `up -d` prints a summary, not the table (-v: the table)


def up_summary(instances: dict[str, dict]) -> list[str]:
    """Counts by state, then the notable instances: failed or unhealthy, not settled, moved."""
    from revostack.output import count, names

    by_state: dict[str, list[str]] = {}
    for name, i in instances.items():
        by_state.setdefault(i.get("state") or "?", []).append(name)
    order = ["healthy", "running", "completed", "starting", "waiting", "restarting", "unhealthy", "failed", "stopped"]
    states = sorted(by_state, key=lambda k: order.index(k) if k in order else len(order))
    lines = [f"{count(len(instances), 'instance')}: " + ", ".join(f"{len(by_state[k])} {k}" for k in states)]
    for state in ("failed", "unhealthy"):
        if state in by_state:
            lines.append(f"  {state}: {names(by_state[state])}")
    moved = [f"{n} {i['preferred']} -> {i['port']}" for n, i in instances.items()
             if i.get("preferred") and i.get("port") and i["preferred"] != i["port"] and not i.get("handoff")]
    if moved:
        lines.append(f"  moved: {names(moved)}")
    return lines


def _ps(stack):
    from revostack import control
    from revostack.rundir import RunDir

    path = RunDir(stack).socket_path
    if not path.exists():
        return None
    try:
        return control.request(path, {"cmd": "ps"}, timeout=2.0)
    except (OSError, control.NoAnswer):
        return None


def cmd_attach(args) -> int:
    from revostack import attach, output
    from revostack.rundir import RunDir

    stack = load_stack(args)
    stack.selection(list(args.services) or None)  # unknown names: exit 2 with a suggestion
    if ask_running(stack, {"cmd": "ping"}, f"{NOT_ANSWERING}: nothing to attach to") is None:
        raise StateError(f"stack \"{stack.name}\" is not running (start it with `revostack up -d`)")
    return attach.follow(RunDir(stack).socket_path, {"cmd": "attach", "services": list(args.services),
                                                     "color": output.color_enabled(sys.stdout, args.no_color)})


def cmd_connect(args) -> int:
    from revostack import connect
    from revostack.rundir import RunDir

    stack = load_stack(args)
    stack.selection([connect.service_of(args.instance)[0]])  # an unknown name: exit 2 with a suggestion
    if ask_running(stack, {"cmd": "ping"}, f"{NOT_ANSWERING}: nothing to connect to") is None:
        raise StateError(f"stack \"{stack.name}\" is not running (start it with `revostack up -d`)")
    return connect.session(RunDir(stack).socket_path, args.instance)


def _change(stack, msg: dict) -> dict:
    from revostack import control

    try:
        reply = control.request_if_running(stack, msg, timeout=CHANGE_TIMEOUT)
    except StateError as e:  # the stack refused it: nothing changed
        raise UsageError(str(e)) from None
    if reply is None:
        raise StateError(f"stack \"{stack.name}\" is not running (start it with `revostack up`)")
    return reply


def cmd_stop(args) -> int:
    stack = load_stack(args)
    stack.selection(list(args.services))  # unknown names: exit 2 with a suggestion
    reply = _change(stack, {"cmd": "stop-services", "services": list(args.services), "deps": args.deps})
    stopped = reply.get("stopped", [])
    print("stopped " + ", ".join(stopped) if stopped else "nothing to stop")
    return EXIT_OK


def cmd_scale(args) -> int:
    stack = load_stack(args)
    counts: dict[str, int] = {}
    for word in args.counts:
        name, eq, n = word.partition("=")
        if not eq or not n.strip().isdigit():
            raise UsageError(f'scale: "{word}" is not SERVICE=N (e.g. web=3)')
        counts[name] = int(n)
    stack.selection(list(counts))  # unknown names: exit 2 with a suggestion
    reply = _change(stack, {"cmd": "scale", "scale": counts})
    added, removed = reply.get("added", []), reply.get("removed", [])
    print(", ".join(f"{n}={c}" for n, c in counts.items()) + ": "
          + ("; ".join(x for x in (f"started {', '.join(added)}" if added else "",
                                    f"stopped {', '.join(removed)}" if removed else "") if x) or "nothing to do"))
    return EXIT_OK


def cmd_reload(args) -> int:
    from revostack import control
    from revostack.rundir import RunDir

    stack = load_stack(args)  # an invalid Stackfile changes nothing: its errors, exit 2
    stack_path = RunDir(stack).socket_path
    if not stack_path.exists():
        raise StateError(f"stack \"{stack.name}\" is not running (start it with `revostack up`)")
    try:
        reply = control.request(stack_path, {"cmd": "reload"}, timeout=CHANGE_TIMEOUT)
    except (OSError, control.NoAnswer):
        raise StateError(f"stack \"{stack.name}\" is not running (start it with `revostack up`)") from None
    if reply.get("invalid"):
        for p in reply.get("problems", []):
            print(p, file=sys.stderr)
        return 2
    if not reply.get("ok"):
        print(f"revostack: reload: {reply.get('error')}", file=sys.stderr)
        return EXIT_FAILED
    print(reply.get("summary"))
    return EXIT_OK


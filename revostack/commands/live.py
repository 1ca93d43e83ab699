"""Commands that ask the running stack: ps, logs, restart, top."""

from __future__ import annotations

import json
import sys

from revostack.errors import EXIT_OK
from revostack.commands.common import NOT_ANSWERING, ask_running, load_stack, state_warning


def cmd_ps(args) -> int:
    from revostack import stats

    stack = load_stack(args)
    reply = ask_running(stack, {"cmd": "ps"}, f"{NOT_ANSWERING}: it is not running")
    if reply is None:
        if args.json:
            print(json.dumps({"stack": stack.name, "running": False, "instances": []}, indent=2))
        else:
            print(f"stack \"{stack.name}\" is not running")
        return EXIT_OK
    if args.json:
        print(json.dumps({"stack": stack.name, "running": True, "instances": stats.rows(reply)}, indent=2))
        return EXIT_OK
    print_ps(reply)
    return EXIT_OK


def print_ps(reply: dict) -> None:
    """The ps table of a running stack's snapshot."""
    from revostack import output, stats

    rows = stats.rows(reply)
    print(output.table(["instance", "state", "pid", "port", "health", "restarts", "uptime", "cpu", "memory"], [
        [r["instance"], r["state"], r["pid"] or "-", output.port_cell(r), r["health"] or "-", r["restarts"],
         output.human_duration(r["uptime_s"]), "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.1f}%",
         output.human_bytes(r["memory_bytes"])] for r in rows]))


def cmd_logs(args) -> int:
    from revostack import logs, output
    from revostack.rundir import RunDir

    stack = load_stack(args)
    state_warning(stack, "showing the log files as they are")
    return logs.show(RunDir(stack), stack, list(args.services), args.lines, args.follow,
                     color=output.color_enabled(sys.stdout, False))


def cmd_restart(args) -> int:
    from revostack.errors import StateError

    stack = load_stack(args)
    stack.selection(list(args.services))  # unknown names: exit 2 with a suggestion
    reply = ask_running(stack, {"cmd": "restart", "services": list(args.services), "deps": args.deps},
                        f"{NOT_ANSWERING}: nothing to restart")
    if reply is None:
        raise StateError(f"stack \"{stack.name}\" is not running (start it with `revostack up`)")
    from revostack.output import LIST_LIMIT, count, names

    done = reply.get("restarted", [])
    many = len(done) > LIST_LIMIT and not args.verbose
    print("restarting " + (f"{count(len(done), 'instance')}: " if many else "") + names(done, args.verbose))
    return EXIT_OK


def cmd_top(args) -> int:
    from revostack import dashboard

    stack = load_stack(args)
    state_warning(stack, "the live view asks the control socket only")
    return dashboard.top(stack, once=args.once)

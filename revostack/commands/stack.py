"""Starting and stopping the stack: up, down."""

from __future__ import annotations

import os
import sys

from revostack.errors import EXIT_FAILED, EXIT_OK, EXIT_PORTS, UsageError
from revostack.commands.common import ask_running, child_color, load_stack, run_async, strategy_of


def cmd_up(args) -> int:
    import json

    from revostack import output
    from revostack.rundir import RunDir

    stack = load_stack(args)
    if args.dashboard and not sys.stdout.isatty():
        raise UsageError("--dashboard needs a terminal")
    if (args.ui or args.detach) and any(s.image is not None for s in stack.services.values()):
        # before `up -d` leaves the terminal: an engine, the images (pulled where the user sees it),
        # stale containers removed; the supervisor it starts is told what could not be had
        unavailable = prepare_containers(stack, stack.selection(list(args.services) or None),
                                         clean_stale=not RunDir(stack).is_locked(),
                                         strategy=strategy_of(args) or stack.strategy)
        os.environ[PREPARED] = json.dumps(unavailable)
    if args.ui:
        if args.detach or args.dashboard:
            raise UsageError("--ui does not go with --detach or --dashboard")
        from revostack.commands.longrun import up_ui

        return up_ui(args, stack)
    if args.detach:
        if args.dashboard:
            raise UsageError("--detach and --dashboard do not go together (use `revostack top`)")
        from revostack.commands.longrun import detach

        return detach(args, stack)
    detached = os.environ.pop("REVOSTACK_DETACHED", None) == "1"  # the supervisor `up -d` started
    rd = RunDir(stack)
    rd.acquire()
    try:
        names = list(args.services) or None
        selected = stack.selection(names)  # unknown names fail before anything starts
        strategy = strategy_of(args) or stack.strategy
        from revostack import conflicts, probe

        say = lambda text: print(f"revostack: {text}", file=sys.stderr)  # noqa: E731
        conflicts.reclaim_leftovers(stack, rd, strategy, say)
        prepared = os.environ.pop(PREPARED, None)  # `up -d` did it before starting this supervisor
        unavailable = json.loads(prepared) if prepared else prepare_containers(stack, selected, clean_stale=True,
                                                                               say=say, strategy=strategy)
        from revostack import plan as planmod

        world = probe.ProbeWorld(stack.host, rd.ownership(running=False))
        ports = planmod.plan_ports(stack, selected, world, strategy)
        plan = planmod.build(stack, selected, ports, dict(os.environ), child_color(args.no_color))
        reservations = probe.Reservations(stack.host)
        plan = conflicts.settle(plan, rd, strategy, world, reservations, say)
        if plan.failures:
            reservations.release_all()
            for f in plan.failures:
                print(f"revostack: {f}", file=sys.stderr)
            return EXIT_PORTS

        from revostack import runtime

        return run_async(runtime.up(plan, rd, color=output.color_enabled(sys.stdout, args.no_color),
                                      timestamps=args.timestamps, abort_on_exit=args.abort_on_exit,
                                      watch=not args.no_watch, dashboard=args.dashboard, reservations=reservations,
                                      strategy=strategy, detached=detached, unavailable=unavailable))
    finally:
        rd.release()


PREPARED = "REVOSTACK_CONTAINERS_PREPARED"  # to the supervisor `up -d` starts: what it could not have


def prepare_containers(stack, selected, clean_stale: bool, say=None, strategy=None) -> dict[str, str]:
    """The engine's part of starting a stack with containers (nothing for a stack without):
    {service: why it cannot start}; no engine is a usage error (exit 2) before anything starts."""
    if not any(stack.services[n].image is not None for n in selected):
        return {}
    from revostack import engine

    say = say or (lambda text: print(f"revostack: {text}", file=sys.stderr))
    try:
        from revostack.stackfile import Strategy

        return engine.prepare(stack, selected, say, clean_stale, interactive=sys.stderr.isatty(),
                              keep_stale=strategy is Strategy.CONSERVATIVE)
    except engine.Unavailable as e:
        raise UsageError(str(e)) from None
    except Exception as e:  # the engine refused something (a network, a label filter)
        raise UsageError(f"the Docker engine refused: {engine.reason(e)}") from None


def down_summary(name: str, pid, insts: dict, reply: dict, verbose: bool) -> list[str]:
    """What `down` says: how many instances stopped (each with its pid when few, or with -v),
    then one line per notable case: killed after stop_timeout, failed before, left behind."""
    from revostack.output import LIST_LIMIT, count, names

    n = len(insts)
    head = f"stopped stack \"{name}\" (up pid {pid}, {count(n, 'instance')}"
    if n and (verbose or n <= LIST_LIMIT):
        head += ": " + ", ".join(f"{k} pid {v}" if isinstance(v, int) else str(k) for k, v in insts.items())
    lines = [head + ")"]
    forced, failed, swept = reply.get("forced") or [], reply.get("failed") or [], reply.get("swept") or []
    if forced:
        lines.append(f"  killed after their stop_timeout: {names(forced, verbose)}")
    if failed:
        lines.append(f"  had failed before: {names(failed, verbose)}")
    if swept:
        lines.append(f"  left behind by the stack and killed: {names([f'pid {p} ({c})' for p, c in swept], verbose)}")
    return lines


def cmd_down(args) -> int:
    import signal
    import time

    from revostack import probe
    from revostack.rundir import RunDir

    stack = load_stack(args)
    rd = RunDir(stack)
    state = rd.read_state() or {}
    levels = len(stack.levels())
    timeout = max([s.stop_timeout for s in stack.services.values()] + [stack.stop_timeout]) * (levels + 1) + 30
    reply = ask_running(stack, {"cmd": "stop", "wait": True},
                        "looking for the stack's processes by their REVOSTACK_STACK marker instead", timeout)
    if reply is not None:
        pid = reply.get("pid")
        deadline = time.monotonic() + timeout
        while rd.is_locked() and time.monotonic() < deadline:  # it has stopped: now it lets go of the lock
            time.sleep(0.02)
        if rd.is_locked():
            print(f"revostack: the stack (pid {pid}) is still stopping after {timeout:g}s", file=sys.stderr)
            return EXIT_FAILED
        done = reply.get("then") or {}
        insts = done.get("instances")
        if not isinstance(insts, dict):  # no summary came (an older `up`): what the state file said
            insts = {k: v.get("pid") if isinstance(v, dict) else None for k, v in state.get("instances", {}).items()}
        for line in down_summary(stack.name, pid, insts, done, args.verbose):
            print(line)
        return EXIT_OK
    stopped_up = False
    if rd.is_locked():
        # an `up` holds the lock but its socket does not answer: ask it with a signal, if it is provably it
        pid, ct = state.get("pid"), state.get("create_time")
        if isinstance(pid, int) and probe.alive(pid, ct) and probe.may_signal(pid, ct, None):
            try:
                os.kill(pid, signal.SIGCONT)  # a stopped (frozen) `up` could never handle the SIGTERM
            except OSError:
                pass
            killed = dict(probe.terminate([pid], signal.SIGTERM, 30, group=False)).get(pid)  # `up | tee`: not tee
            print(f"stopped stack \"{stack.name}\" (up pid {pid} did not answer on its socket: sent SIGTERM"
                  + (", then SIGKILL)" if killed else ")"))
            stopped_up = True  # then whatever it could not stop is a leftover, stopped below
    found, notes = probe.leftovers(rd.ownership(running=False))
    for n in notes:
        print(n)
    if found:
        results = dict(probe.terminate([p.pid for p in found], signal.SIGTERM, stack.stop_timeout))
        for p in found:
            if p.pid in results:
                print(f"stopped pid {p.pid} ({p.name}; {p.why})" + (" after SIGKILL" if results[p.pid] else ""))
    removed = _clean_containers(stack)
    if not found and not removed and not stopped_up:
        print(f"stack \"{stack.name}\" is not running; nothing to stop")
    rd.clear_state()
    return EXIT_OK


def _clean_containers(stack) -> bool:
    """After a dead `up`: its containers (by this stack's label, nothing else) and its network.
    True when something was removed."""
    if not any(s.image is not None for s in stack.services.values()):
        return False
    from revostack import engine

    try:
        client = engine.connect()
        names = engine.clean(client, stack.id, grace=engine.stop_grace(stack))
    except engine.Unavailable as e:
        print(f"revostack: could not look for the stack's containers: {e}", file=sys.stderr)
        return False
    except Exception as e:
        print(f"revostack: could not remove the stack's containers: {engine.reason(e)}", file=sys.stderr)
        return False
    for name in names:
        print(f"removed container {name} (left from an earlier run)")
    return bool(names)

"""The command line: parse argv, dispatch to small command functions, one error boundary.

The only place that calls ``asyncio.run``, prints errors and picks exit codes. Heavy modules
are imported inside the commands that need them, so ``revostack ports`` answers quickly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

from revostack import __version__
from revostack.errors import EXIT_FAILED, EXIT_OK, EXIT_PORTS, ConfigError, RevostackError, UsageError

STACKFILE = "Stackfile.toml"
PROCFILE = "Procfile"


# -- finding and loading the stack ------------------------------------------------------------

def find_stackfile(explicit: str | None, start: Path | None = None) -> Path:
    if explicit:
        return Path(explicit)
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):  # the nearest folder wins; in it, the Stackfile
        for name in (STACKFILE, PROCFILE):
            if (folder / name).is_file():
                return folder / name
    raise UsageError(f"no {STACKFILE} or {PROCFILE} in this folder or any parent (write one with `revostack init`)")


def load_stack(args: argparse.Namespace):
    path = find_stackfile(getattr(args, "file", None))
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


def make_plan(stack, names: list[str] | None = None, strategy=None, color: bool | None = None, environ=None):
    """Plan ports and env for the selected services against the real machine, on ``environ``
    (default: this process's environment)."""
    from revostack import plan as planmod
    from revostack import probe, rundir

    selected = stack.selection(names)
    world = probe.ProbeWorld(stack.host, rundir.RunDir(stack).ownership(running=False))
    ports = planmod.plan_ports(stack, selected, world, strategy)
    return planmod.build(stack, selected, ports, os.environ if environ is None else environ, color)


# -- commands ---------------------------------------------------------------------------------

def cmd_check(args) -> int:
    import shutil
    import shlex

    from revostack.plan import secret_like

    stack = load_stack(args)
    plan = make_plan(stack, list(stack.services))
    out = [f"{_display(stack.path)}: stack \"{stack.name}\", {len(stack.services)} service"
           f"{'s' if len(stack.services) != 1 else ''}: valid", "", "start order:"]
    for i, level in enumerate(plan.levels, 1):
        out.append(f"  {i}. " + ", ".join(level))
    warnings = []
    shared = {}
    for inst in plan.instances:
        for k, v in inst.env.items():
            if k.endswith(("_PORT", "_HOST")) and k not in stack.env and k not in stack.dotenv and k not in os.environ:
                shared[k] = v
    if shared:
        out += ["", "every service gets:"] + [f"  {k}={shared[k]}" for k in sorted(shared)]
    own_keys = set(stack.dotenv) | set(stack.env)
    for inst in plan.instances:
        svc = inst.service
        port = "-" if inst.port.port is None else str(inst.port.port)
        out.append("")
        out.append(f"{inst.name}: port {port}" + (f" ({inst.port.reason})" if inst.port.reason else ""))
        out.append(f"  cmd: {inst.cmd if isinstance(inst.cmd, str) else shlex.join(inst.cmd)}")
        if svc.cwd != stack.root:
            out.append(f"  cwd: {_display(svc.cwd)}")
        if svc.depends_on:
            out.append("  depends on: " + ", ".join(f"{d.name} ({d.condition.value})" for d in svc.depends_on))
        if inst.health:
            out.append(f"  health: {inst.health.kind.value} {inst.health.target}" + (" (default)" if inst.health.implicit else ""))
        keys = own_keys | set(svc.dotenv) | set(svc.env) | ({svc.port_env} if svc.port is not None else set())
        for k in sorted(k for k in inst.env if k in keys):
            v = inst.env[k]
            out.append(f"  {k}={'****' if secret_like(k) and v else v}")
        program = _program(inst.cmd)
        if program and inst.index == 1:
            path_env = inst.env.get("PATH", os.environ.get("PATH", ""))
            found = shutil.which(program, path=path_env) or (
                "/" in program and os.access(svc.cwd / program, os.X_OK)) or _is_shell_builtin(program)
            if not found:
                warnings.append(f"warning: {svc.name}: program \"{program}\" not found on PATH or in {_display(svc.cwd)}")
    print("\n".join(out))
    for w in warnings:
        print(w, file=sys.stderr)
    if plan.failures:
        for f in plan.failures:
            print(f"error: {f}", file=sys.stderr)
        return EXIT_PORTS
    return EXIT_OK


def _program(cmd) -> str | None:
    import shlex

    try:
        words = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    except ValueError:
        return None
    for w in words:
        if w == "exec" or ("=" in w and not w.startswith(("/", "."))):
            continue
        return None if w.startswith("$") else w
    return None


def _is_shell_builtin(word: str) -> bool:
    return word in {"cd", "echo", "exec", "export", "printf", "read", "set", "test", "trap", "true", "false",
                    "while", "for", "if", "until", "[", ":", ".", "source", "sleep", "wait", "exit", "eval", "ulimit",
                    "umask", "{", "("}


def _display(p: Path) -> str:
    try:
        rel = os.path.relpath(p)
        return rel if not rel.startswith("../../") else str(p)
    except ValueError:
        return str(p)


def cmd_ports(args) -> int:
    from revostack.stackfile import env_prefix

    stack = load_stack(args)
    live = _live_ports(stack)
    rows = []
    if live is not None:
        instances = live
        is_live = True
    else:
        plan = make_plan(stack, list(stack.services), strategy=_strategy(args))
        is_live = False
        instances = []
        for inst in plan.instances:
            if inst.service.port is None:
                continue
            instances.append({"instance": inst.name, "service": inst.service.name, "env": inst.service.port_env,
                              "preferred": inst.port.preferred, "assigned": inst.port.port,
                              "reason": inst.port.reason, "holder": inst.port.holder.to_json() if inst.port.holder else None})
            if inst.service.handoff.value != "none":
                instances[-1]["handoff"] = inst.service.handoff.value
                if inst.service.handoff.value == "proxy":
                    instances[-1]["private"] = None
    failed = [i for i in instances if i["assigned"] is None]
    if args.json:
        print(json.dumps({"stack": stack.name, "live": is_live, "instances": instances}, indent=2))
    elif args.env:
        seen = set()
        for i in instances:
            if i["assigned"] is None:
                continue
            svc = stack.services.get(i["service"])
            names = [env_prefix(i["service"])] if i["instance"].endswith(".1") else []
            if svc is not None and svc.scale > 1:
                names.append(env_prefix(i["instance"]))
            for n in names:
                if n not in seen:
                    seen.add(n)
                    print(f"export {n}_PORT={i['assigned']}")
    else:
        for i in instances:
            why = i["reason"] or ""
            if i.get("handoff"):
                behind = f", private {i['private']}" if i.get("private") else ""
                why = "; ".join(w for w in (why, f"public port ({i['handoff']}{behind})") if w)
            rows.append([i["instance"], i["preferred"], "-" if i["assigned"] is None else i["assigned"], i["env"], why])
        if rows:
            from revostack.output import table

            print(table(["instance", "preferred", "assigned", "env", "why"], rows))
        else:
            print("no service declares a port")
        print("(live: the stack is running)" if is_live else "(plan: what `revostack up` would assign now)")
    return EXIT_PORTS if failed and not is_live else EXIT_OK


def _live_ports(stack):
    """The running stack's assignments, or None when it is not running."""
    from revostack import control

    reply = control.request_if_running(stack, {"cmd": "ports"})
    return None if reply is None else reply.get("instances")


def _strategy(args):
    from revostack.stackfile import Strategy

    s = getattr(args, "strategy", None)
    return Strategy(s) if s else None


def cmd_graph(args) -> int:
    stack = load_stack(args)
    from revostack import render

    print(render.graph(stack, args.format))
    return EXIT_OK


def cmd_init(args) -> int:
    from revostack import render

    target = Path(args.output or STACKFILE)
    if target.exists() and not args.force:
        raise UsageError(f"{target} already exists (use --force to overwrite it)")
    source = Path(args.source) if args.source else (Path(PROCFILE) if Path(PROCFILE).is_file() else None)
    if source is not None:
        from revostack import procfile
        from revostack.stackfile import read_text

        entries = procfile.parse(read_text(source), str(source))
        text = render.stackfile_from_procfile(entries, Path.cwd().resolve().name, base_port(args.port))
    else:
        text = render.stackfile_template(Path.cwd().resolve().name)
    target.write_text(text)
    print(f"wrote {target}" + (f" from {source}" if source else ""))
    return EXIT_OK


def cmd_export(args) -> int:
    from revostack import export
    from revostack import plan as planmod

    if args.format not in export.FORMATS:
        raise UsageError(f'unknown format "{args.format}": choose one of {", ".join(export.FORMATS)}')
    stack = load_stack(args)
    if args.port_base is not None:
        # every port fixed by formula, whatever the machine holds now: base + 100 per service
        fixed = {}
        for i, svc in enumerate(stack.services.values()):
            for idx, inst in enumerate(svc.instances, 1):
                if svc.port is not None:
                    p = args.port_base + 100 * i + idx - 1
                    fixed[inst] = planmod.PortChoice(p, p)
        plan = planmod.build(stack, set(stack.services), fixed, {})
    else:
        plan = make_plan(stack, list(stack.services), environ={})  # the stack's variables only
    files = export.render(plan, args.format, app=args.app or stack.name, user=args.user, log_dir=args.log_dir)
    outdir = Path(args.outdir)
    clash = [outdir / name for name in files if (outdir / name).exists()]
    if clash and not args.force:
        raise UsageError(f"{clash[0]} already exists (use --force to overwrite)")
    outdir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (outdir / name).write_text(text)
        print(f"wrote {outdir / name}")
    return EXIT_OK


# -- running the stack ---------------------------------------------------------------------------

def _child_color(no_color: bool) -> bool | None:
    """What the children are told: FORCE_COLOR when we write to a terminal, NO_COLOR when off."""
    if no_color or os.environ.get("NO_COLOR"):
        return False
    return True if sys.stdout.isatty() else None


def cmd_up(args) -> int:
    from revostack import output
    from revostack.rundir import RunDir

    stack = load_stack(args)
    if args.dashboard and not sys.stdout.isatty():
        raise UsageError("--dashboard needs a terminal")
    rd = RunDir(stack)
    rd.acquire()
    try:
        names = list(args.services) or None
        selected = stack.selection(names)  # unknown names fail before anything starts
        strategy = _strategy(args) or stack.strategy
        from revostack import conflicts, probe

        say = lambda text: print(f"revostack: {text}", file=sys.stderr)  # noqa: E731
        conflicts.reclaim_leftovers(stack, rd, strategy, say)
        from revostack import plan as planmod

        world = probe.ProbeWorld(stack.host, rd.ownership(running=False))
        ports = planmod.plan_ports(stack, selected, world, strategy)
        plan = planmod.build(stack, selected, ports, os.environ, _child_color(args.no_color))
        reservations = probe.Reservations(stack.host)
        plan = conflicts.settle(plan, rd, strategy, world, reservations, say)
        if plan.failures:
            reservations.release_all()
            for f in plan.failures:
                print(f"revostack: {f}", file=sys.stderr)
            return EXIT_PORTS

        from revostack import runtime

        return _run_async(runtime.up(plan, rd, color=output.color_enabled(sys.stdout, args.no_color),
                                      timestamps=args.timestamps, abort_on_exit=args.abort_on_exit,
                                      watch=not args.no_watch, dashboard=args.dashboard, reservations=reservations,
                                      strategy=strategy))
    finally:
        rd.release()


def cmd_start(args) -> int:
    from revostack import output, procfile
    from revostack import plan as planmod
    from revostack import probe

    root = Path(args.app_root) if args.app_root else None
    path = Path(args.procfile) if args.procfile else (root or Path.cwd()) / PROCFILE
    if root is None:
        root = path.parent
    env_files = [root / f.strip() for f in args.env.split(",") if f.strip()] if args.env else None
    if env_files is None and (root / ".env").is_file():
        env_files = [root / ".env"]
    env_files = [f for f in env_files or [] if f.is_file() or _missing_env(f)]
    stack = procfile.load(path, base_port=args.port, concurrency=parse_concurrency(args.concurrency),
                          env_files=env_files, root=root)
    selected = stack.selection(list(args.processes) or None)
    color = output.color_enabled(sys.stdout, args.no_color)
    ports = planmod.plan_ports(stack, selected, probe.ProbeWorld(stack.host))
    plan = planmod.build(stack, selected, ports, os.environ, _child_color(args.no_color))
    if plan.failures:
        for f in plan.failures:
            print(f"revostack: {f}", file=sys.stderr)
        return EXIT_PORTS

    from revostack import runtime

    quiet = {q.strip() for q in (args.quiet or "").split(",") if q.strip()}
    return _run_async(runtime.start(plan, color=color, prefix=not args.no_prefix, quiet=quiet))


def _run_async(coro) -> int:
    """The one event loop of a run. On Python 3.11 children are watched through pidfds (Linux)
    instead of one waiting thread per child; 3.12 does that by itself."""
    import asyncio

    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        try:
            asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
        except (OSError, AttributeError, NotImplementedError):
            pass
    return asyncio.run(coro)


def _missing_env(f: Path) -> bool:
    raise UsageError(f"env file {f} not found")


def cmd_run(args) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("run: give a command, e.g. `revostack run -- python manage.py shell`")
    stack = load_stack(args)
    if getattr(args, "env", None):  # honcho's `run -e a.env,b.env`: those files instead of .env
        if stack.kind != "procfile":
            raise UsageError("run: -e/--env is for a Procfile; a Stackfile names its env files with env_file")
        from revostack import procfile

        files = [stack.root / f.strip() for f in args.env.split(",") if f.strip()]
        for f in files:
            if not f.is_file():
                raise UsageError(f"env file {f} not found")
        stack = procfile.load(stack.path, env_files=files)
    if args.service and args.service not in stack.services:
        from revostack.errors import did_you_mean

        raise UsageError(f'unknown service "{args.service}"{did_you_mean(args.service, stack.services)}')
    plan = make_plan(stack, list(stack.services), color=_child_color(False))
    live = _live_ports(stack)
    env = dict(os.environ)
    if args.service:
        inst = plan.of_service(args.service)[0]
        env = dict(inst.env)
        cwd = str(inst.cwd)
    else:
        for inst in plan.instances:  # the stack's variables, without any one service's own
            for k, v in inst.env.items():
                if k.endswith(("_PORT", "_HOST")) or k in stack.env or k in stack.dotenv:
                    env[k] = v
        env["REVOSTACK_STACK"] = stack.id
        env.setdefault("PYTHONUNBUFFERED", "1")
        cwd = os.getcwd()
    if live:
        from revostack.stackfile import env_prefix

        for row in live:
            if row["instance"].endswith(".1"):
                env[f"{env_prefix(row['service'])}_PORT"] = str(row["assigned"])
            if args.service and row["service"] == args.service and row["instance"].endswith(".1"):
                env[stack.services[args.service].port_env] = str(row["assigned"])
    if not args.service:
        env.pop("REVOSTACK_SERVICE", None)
    try:
        os.chdir(cwd)
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        raise UsageError(f"run: command not found: {command[0]}") from None
    except PermissionError:
        raise UsageError(f"run: permission denied: {command[0]}") from None
    return EXIT_FAILED


def cmd_down(args) -> int:
    import time

    from revostack import control, probe
    from revostack.rundir import RunDir

    stack = load_stack(args)
    rd = RunDir(stack)
    state = rd.read_state() or {}
    reply = control.request_if_running(stack, {"cmd": "stop"})
    if reply is not None:
        pid = reply.get("pid")
        timeout = max([s.stop_timeout for s in stack.services.values()] + [stack.stop_timeout]) * 2 + 10
        deadline = time.monotonic() + timeout
        while rd.is_locked() and time.monotonic() < deadline:
            time.sleep(0.02)
        if rd.is_locked():
            print(f"revostack: the stack (pid {pid}) is still stopping after {timeout:g}s", file=sys.stderr)
            return EXIT_FAILED
        insts = state.get("instances", {})
        n = len(insts)
        what = ", ".join(f"{k} pid {v['pid']}" if isinstance(v, dict) and isinstance(v.get("pid"), int) else str(k)
                         for k, v in insts.items())
        print(f"stopped stack \"{stack.name}\" (up pid {pid}, {n} instance{'s' if n != 1 else ''}"
              + (f": {what})" if what else ")"))
        return EXIT_OK
    stopped_up = False
    if rd.is_locked():
        # an `up` holds the lock but its socket does not answer: ask it with a signal, if it is provably it
        pid, ct = state.get("pid"), state.get("create_time")
        if isinstance(pid, int) and probe.alive(pid, ct) and probe.may_signal(pid, ct, None):
            import signal as _signal

            try:
                os.kill(pid, _signal.SIGCONT)  # a stopped (frozen) `up` could never handle the SIGTERM
            except OSError:
                pass
            killed = dict(probe.terminate([pid], 15, 30, group=False)).get(pid)  # `up | tee`: not tee
            print(f"stopped stack \"{stack.name}\" (up pid {pid} did not answer on its socket: sent SIGTERM"
                  + (", then SIGKILL)" if killed else ")"))
            stopped_up = True  # then whatever it could not stop is a leftover, stopped below
    found, notes = probe.leftovers(rd.ownership(running=False))
    for n in notes:
        print(n)
    if not found:
        if not stopped_up:
            print(f"stack \"{stack.name}\" is not running; nothing to stop")
        rd.clear_state()
        return EXIT_OK
    results = dict(probe.terminate([p.pid for p in found], 15, stack.stop_timeout))
    for p in found:
        if p.pid in results:
            print(f"stopped pid {p.pid} ({p.name}; {p.why})" + (" after SIGKILL" if results[p.pid] else ""))
    rd.clear_state()
    return EXIT_OK


def cmd_ps(args) -> int:
    from revostack import control, output, stats

    stack = load_stack(args)
    reply = control.request_if_running(stack, {"cmd": "ps"})
    if reply is None:
        if args.json:
            print(json.dumps({"stack": stack.name, "running": False, "instances": []}, indent=2))
        else:
            print(f"stack \"{stack.name}\" is not running")
        return EXIT_OK
    rows = stats.rows(reply)
    if args.json:
        print(json.dumps({"stack": stack.name, "running": True, "instances": rows}, indent=2))
        return EXIT_OK
    print(output.table(["instance", "state", "pid", "port", "health", "restarts", "uptime", "cpu", "memory"], [
        [r["instance"], r["state"], r["pid"] or "-", output.port_cell(r), r["health"] or "-", r["restarts"],
         output.human_duration(r["uptime_s"]), "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.1f}%",
         output.human_bytes(r["memory_bytes"])] for r in rows]))
    return EXIT_OK


def cmd_logs(args) -> int:
    from revostack import logs, output
    from revostack.rundir import RunDir

    stack = load_stack(args)
    return logs.show(RunDir(stack), stack, list(args.services), args.lines, args.follow,
                     color=output.color_enabled(sys.stdout, False))


def cmd_restart(args) -> int:
    from revostack import control
    from revostack.errors import StateError

    stack = load_stack(args)
    stack.selection(list(args.services))  # unknown names: exit 2 with a suggestion
    reply = control.request_if_running(stack, {"cmd": "restart", "services": list(args.services), "deps": args.deps})
    if reply is None:
        raise StateError(f"stack \"{stack.name}\" is not running (start it with `revostack up`)")
    print("restarting " + ", ".join(reply.get("restarted", [])))
    return EXIT_OK


def cmd_scan(args) -> int:
    from revostack import output, probe
    from revostack.rundir import RunDir

    stack = load_stack(args)
    rd = RunDir(stack)
    world = probe.ProbeWorld(stack.host, rd.ownership(running=rd.is_locked()))
    entries: list[tuple[int, str | None, str]] = []
    if args.range:
        lo, _, hi = args.range.partition("-")
        if not (lo.isdigit() and hi.isdigit()) or not (1 <= int(lo) <= int(hi) <= 65535):
            raise UsageError(f'bad range "{args.range}": use A-B with 1 <= A <= B <= 65535')
        entries = [(p, None, "range") for p in range(int(lo), int(hi) + 1)]
    else:
        seen = set()
        for svc in stack.services.values():
            if not svc.port:
                continue
            for idx, _inst in enumerate(svc.instances, 1):
                pref = svc.port + idx - 1
                if pref not in seen:
                    seen.add(pref)
                    entries.append((pref, svc.name, "preferred"))
            for p in svc.fallback:
                if p not in seen:
                    seen.add(p)
                    entries.append((p, svc.name, "fallback"))
    listening = probe.listeners()
    rows = []
    taken_preferred = False
    for port, service, role in entries:
        held = port in listening and any(probe.conflicts(ip, stack.host) for ip, _ in listening[port])
        if not held and not args.range:
            held = not world.is_free(port)
        holder = world.holder(port) if held else None
        if held and role == "preferred" and (holder is None or holder.cls != "ours-running"):
            taken_preferred = True
        rows.append({"port": port, "service": service, "role": role, "status": "held" if held else "free",
                     "holder": holder.to_json() if holder else None})
    if args.json:
        print(json.dumps({"ports": rows}, indent=2))
    else:
        shown = [r for r in rows if r["status"] == "held" or not args.range]
        print(output.table(["port", "service", "role", "status", "pid", "user", "name", "class", "command"], [
            [r["port"], r["service"] or "-", r["role"], r["status"],
             *((r["holder"]["pid"] or "?", r["holder"]["user"] or "?", r["holder"]["name"] or "?", r["holder"]["class"],
                _short(r["holder"]["cmdline"])) if r["holder"] else ("", "", "", "", ""))] for r in shown]))
        if args.range:
            free = sum(1 for r in rows if r["status"] == "free")
            print(f"{free} of {len(rows)} ports free in {args.range}")
    return EXIT_FAILED if taken_preferred else EXIT_OK


def _short(cmd: str | None, width: int = 60) -> str:
    if not cmd:
        return ""
    cmd = " ".join(cmd.split())
    return cmd if len(cmd) <= width else cmd[: width - 1] + "…"


def cmd_history(args) -> int:
    from revostack import output
    from revostack.rundir import RunDir

    stack = load_stack(args)
    items = RunDir(stack).read_history()
    if args.n is not None:
        items = items[-args.n:] if args.n > 0 else []
    if args.json:
        print(json.dumps(items, indent=2))
        return EXIT_OK
    if not items:
        print("no port conflicts recorded")
        return EXIT_OK
    print(output.table(["time", "service", "port", "holder", "class", "strategy", "action", "result"], [
        [i.get("time", ""), i.get("service") or "-", i.get("port") or "-",
         _holder_text(i.get("holder")), i.get("class", ""), i.get("strategy", ""), i.get("action", ""),
         _short(str(i.get("result", "")), 40)] for i in items]))
    return EXIT_OK


def _holder_text(h) -> str:
    if not isinstance(h, dict):
        return "-"
    return f"pid {h.get('pid')} {h.get('name') or ''}".strip()


def cmd_top(args) -> int:
    from revostack import dashboard

    return dashboard.top(load_stack(args), once=args.once)


# -- argument parsing -------------------------------------------------------------------------

Command = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, like every usage error
        raise UsageError(f"{self.prog.removeprefix('revostack').strip() or 'usage'}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="revostack", description="Run a full-stack development stack from a Stackfile.toml.")
    p.add_argument("--version", action="version", version=f"revostack {__version__}")
    p.add_argument("-f", "--file", help="the Stackfile (or Procfile) to use")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common = _Parser(add_help=False)
    common.add_argument("-f", "--file", default=argparse.SUPPRESS, help="the Stackfile (or Procfile) to use")

    def add(name: str, fn: Command, help: str, **kw) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, parents=kw.pop("parents", [common]), description=help, **kw)
        sp.set_defaults(func=fn)
        return sp

    add("check", cmd_check, "validate the Stackfile; print the start order, ports and environment")
    sp = add("ports", cmd_ports, "the port of every instance: live, or the plan `up` would make")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--env", action="store_true", help="print `export NAME_PORT=N` lines for eval")
    sp.add_argument("--strategy", choices=["conservative", "intelligent", "aggressive"])
    sp = add("graph", cmd_graph, "the dependency graph")
    sp.add_argument("--format", choices=["tree", "dot", "mermaid"], default="tree")
    sp = add("init", cmd_init, "write a Stackfile.toml (from a Procfile when there is one)")
    sp.add_argument("--from", dest="source", metavar="PROCFILE")
    sp.add_argument("--force", action="store_true", help="overwrite an existing Stackfile.toml")
    sp.add_argument("-o", "--output", help=argparse.SUPPRESS)
    sp.add_argument("-p", "--port", type=int, help="base port for Procfile entries (default $PORT or 5000)")
    sp = add("up", cmd_up, "start the stack (or the named services and what they need) in the foreground")
    sp.add_argument("services", nargs="*", metavar="SERVICE")
    sp.add_argument("--no-watch", action="store_true", help="do not restart services when their files change")
    sp.add_argument("--strategy", choices=["conservative", "intelligent", "aggressive"])
    sp.add_argument("--abort-on-exit", action="store_true", help="stop the stack when any service ends for good")
    sp.add_argument("--timestamps", action=argparse.BooleanOptionalAction, default=True)
    sp.add_argument("--no-color", "--no-colour", action="store_true")
    sp.add_argument("--dashboard", action="store_true", help="a live table in place of the scrolling log")
    sp = add("down", cmd_down, "stop the running stack (or what a dead `up` left behind)")
    sp = add("ps", cmd_ps, "live status of every instance")
    sp.add_argument("--json", action="store_true")
    sp = add("logs", cmd_logs, "the log files the running or last `up` wrote", parents=[])
    sp.add_argument("--file", default=argparse.SUPPRESS, help="the Stackfile (or Procfile) to use")
    sp.add_argument("services", nargs="*", metavar="SERVICE")
    sp.add_argument("-n", "--lines", type=int, default=None, help="only the last N lines")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    sp = add("restart", cmd_restart, "restart services of the running stack")
    sp.add_argument("services", nargs="+", metavar="SERVICE")
    sp.add_argument("--deps", action="store_true", help="also restart the services that depend on them")
    sp = add("run", cmd_run, "run a one-off command with the stack's environment", parents=[])
    sp.add_argument("-f", "--file", default=argparse.SUPPRESS, help="the Stackfile (or Procfile) to use")
    sp.add_argument("-s", "--service", help="also use this service's env, cwd and port")
    sp.add_argument("-e", "--env", help=argparse.SUPPRESS)
    sp.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD...")
    sp = add("start", cmd_start, "honcho-compatible: run a Procfile", parents=[])
    sp.add_argument("processes", nargs="*", metavar="PROCESS")
    sp.add_argument("-f", "--procfile", help="the Procfile (default: ./Procfile)")
    sp.add_argument("-e", "--env", help="comma-separated .env files (default: .env)")
    sp.add_argument("-d", "--app-root", help="the folder the processes run in")
    sp.add_argument("-p", "--port", type=int, help="base port (default $PORT or 5000)")
    sp.add_argument("-c", "--concurrency", help="e.g. web=2,worker=1")
    sp.add_argument("-q", "--quiet", help="comma-separated processes whose output is not shown")
    sp.add_argument("--no-colour", "--no-color", dest="no_color", action="store_true")
    sp.add_argument("--no-prefix", action="store_true")
    sp = add("top", cmd_top, "a live view of the running stack (q to quit; the stack keeps running)")
    sp.add_argument("--once", action="store_true", help="print one rendering and exit")
    sp = add("scan", cmd_scan, "who holds the stack's ports (or a range)")
    sp.add_argument("--range", help="scan ports A-B instead of the declared ones")
    sp.add_argument("--json", action="store_true")
    sp = add("history", cmd_history, "the port conflicts met and what was done about them")
    sp.add_argument("-n", type=int, default=None, help="only the last N")
    sp.add_argument("--json", action="store_true")
    sp = add("export", cmd_export, "write config for supervisord, systemd, docker compose or a Procfile")
    sp.add_argument("format", metavar="FORMAT", help="supervisord | systemd | compose | procfile")
    sp.add_argument("outdir", metavar="OUTDIR")
    sp.add_argument("--app", help="application name (default: the stack's name)")
    sp.add_argument("--user", help="the user the services run as")
    sp.add_argument("--port-base", type=int, help="fix ports by formula: base + 100 per service")
    sp.add_argument("--log-dir", help="supervisord: write each program's output here (default: next to APP.conf)")
    sp.add_argument("--force", action="store_true", help="overwrite existing files")
    return p


def entry() -> None:
    """The console script and ``python -m revostack``: run, flush, and leave without the
    interpreter's teardown — tens of milliseconds of module clean-up that nothing here needs
    (every file, lock and child is closed or stopped by then)."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_OK if not argv else 2
        return args.func(args)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    except RevostackError as e:
        print(f"revostack: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_FAILED
    except SystemExit as e:  # --help / --version
        return e.code if isinstance(e.code, int) else 0
    except Exception as e:  # an internal error: one line, details in the log
        where = _log_traceback()
        print(f"revostack: internal error: {type(e).__name__}: {e}" + (f" (details in {where})" if where else ""),
              file=sys.stderr)
        return EXIT_FAILED


def _log_traceback() -> str | None:
    import traceback

    try:
        folder = Path(".revostack/logs")
        if not folder.parent.is_dir():
            return None
        folder.mkdir(exist_ok=True)
        with open(folder / "revostack.log", "a") as f:
            traceback.print_exc(file=f)
        return str(folder / "revostack.log")
    except OSError:
        return None

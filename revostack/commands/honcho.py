"""honcho's commands, drop-in: start and run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from revostack.errors import EXIT_USAGE, EXIT_FAILED, EXIT_PORTS, ConfigError, UsageError
from revostack.commands.common import PROCFILE, child_color, live_ports, load_stack, make_plan, parse_concurrency


def honcho_files(args) -> tuple[Path, Path, list[Path], dict[str, str]]:
    """honcho's rules for where things are: (app root, Procfile, env files that exist, their
    values). The app root is ``-d`` (default: here); env files are ``-e a,b`` (default
    ``.env``), relative to it, and a missing one is skipped; the Procfile is ``-f``, else
    ``PROCFILE`` from those env files, else from the environment, else ``Procfile`` —
    relative to the app root."""
    from revostack import dotenv
    from revostack.stackfile import read_text

    root = Path(getattr(args, "app_root", None) or ".")
    named = [e.strip() for e in (getattr(args, "env", None) or ".env").split(",") if e.strip()]
    files, values = [], {}
    for name in named:
        f = root / name
        if f.is_file():
            files.append(f)
            try:
                values.update(dotenv.parse(read_text(f), str(f)))
            except ConfigError:
                pass  # reported where the file is read for good (the stack's loader)
        elif getattr(args, "env", None):
            print(f"revostack: env file {f} not found, skipped (as honcho does)", file=sys.stderr)
    procfile = getattr(args, "file", None) or values.get("PROCFILE") or os.environ.get("PROCFILE") or PROCFILE
    return root, root / procfile, files, values


def cmd_start(args) -> int:
    from revostack import output, procfile
    from revostack import plan as planmod
    from revostack import probe

    _, path, env_files, _ = honcho_files(args)
    # the processes run here, in the current folder, as honcho runs them (not in the app root)
    stack = procfile.load(path, base_port=args.port, concurrency=parse_concurrency(args.concurrency),
                          env_files=env_files, root=Path.cwd())
    selected = stack.selection(list(args.processes) or None)
    color = output.color_enabled(sys.stdout, args.no_color)
    ports = planmod.plan_ports(stack, selected, probe.ProbeWorld(stack.host))
    # a plain copy: every instance's env starts from it (os.environ decodes each key on each read)
    plan = planmod.build(stack, selected, ports, dict(os.environ), child_color(args.no_color))
    if plan.failures:
        for f in plan.failures:
            print(f"revostack: {f}", file=sys.stderr)
        return EXIT_PORTS

    from revostack.sink import Sink, announce_moves
    from revostack.starter import Starter

    quiet = {q.strip() for q in (args.quiet or "").split(",") if q.strip()}
    quiet_instances = {i.name for i in plan.instances if i.service.name in quiet or i.name in quiet}
    sink = Sink(sys.stdout.buffer, color=color, prefix=not args.no_prefix, quiet=quiet_instances)
    starter = Starter(plan, sink)  # the sink's loop from here on
    announce_moves(sink, plan)
    return starter.run()


def cmd_run(args) -> int:
    """A one-off command with the stack's environment. With no Stackfile or Procfile at all,
    honcho's form: this environment plus the env files (``-e``, default ``.env``)."""
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("run: give a command, e.g. `revostack run -- python manage.py shell`")
    root, _, env_files, values = honcho_files(args)
    try:
        stack = load_stack(args, start=root)
    except UsageError:
        if getattr(args, "file", None) or args.service:
            raise
        stack = None  # honcho: no Procfile needed
    if stack is None:
        env = {**os.environ, **values}
        cwd = os.getcwd()
    else:
        if getattr(args, "env", None) and stack.kind == "procfile":  # honcho: those files instead of .env
            from revostack import procfile

            stack = procfile.load(stack.path, env_files=env_files)
        if args.service and args.service in stack.services and stack.services[args.service].image is not None:
            return run_in_container(stack, args.service, command)
        env, cwd = stack_env(stack, args.service)
        if getattr(args, "env", None):  # a Stackfile keeps its env_file; -e comes on top
            env.update(values)
    try:
        os.chdir(cwd)
        os.execvpe(command[0], command, env)
    except FileNotFoundError:  # as the shell says it, with the shell's codes
        print(f"revostack: run: {command[0]}: command not found", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"revostack: run: {command[0]}: permission denied", file=sys.stderr)
        return 126
    except OSError as e:
        print(f"revostack: run: {command[0]}: {e.strerror or e}", file=sys.stderr)
        return 126
    return EXIT_FAILED


def run_in_container(stack, service: str, command: list[str]) -> int:
    """``run -s`` on a container service: the command runs inside its running container."""
    from revostack import control
    from revostack.errors import EXIT_RUNNING

    try:
        reply = control.request_if_running(stack, {"cmd": "ps"})
    except control.NoAnswer:
        reply = None
    found = None
    for name, i in sorted(((reply or {}).get("instances") or {}).items()):
        if i.get("service") == service and i.get("container"):
            found = i
            break
    if found is None:
        why = "the stack is not running" if reply is None else f"{service} has no running container"
        print(f"revostack: run: {why}; a container service's command runs inside its running container "
              f"(start it with `revostack up {service}`)", file=sys.stderr)
        return EXIT_RUNNING
    from revostack import container, engine

    try:
        return container.exec_in(found["container"], command)
    except engine.Unavailable as e:
        print(f"revostack: run: {e}", file=sys.stderr)
        return EXIT_USAGE


def stack_env(stack, service: str | None) -> tuple[dict[str, str], str]:
    """The environment and folder of ``run``: the stack's variables (or one service's own,
    with its cwd and port), with the live ports when the stack is up."""
    if service and service not in stack.services:
        from revostack.errors import did_you_mean

        raise UsageError(f'unknown service "{service}"{did_you_mean(service, stack.services)}')
    plan = make_plan(stack, list(stack.services), color=child_color(False))
    live = live_ports(stack)
    env = dict(os.environ)
    if service:
        inst = plan.of_service(service)[0]
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
            if service and row["service"] == service and row["instance"].endswith(".1"):
                env[stack.services[service].port_env] = str(row["assigned"])
    if not service:
        env.pop("REVOSTACK_SERVICE", None)
    return env, cwd

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
    for name in (STACKFILE, PROCFILE):
        for folder in (start, *start.parents):
            if (folder / name).is_file():
                return folder / name
    raise UsageError(f"no {STACKFILE} or {PROCFILE} in this folder or any parent (write one with `revostack init`)")


def load_stack(args: argparse.Namespace):
    path = find_stackfile(getattr(args, "file", None))
    if path.suffix == ".toml" or path.name == STACKFILE:
        from revostack import stackfile

        return stackfile.load(path)
    from revostack import procfile

    return procfile.load(path, base_port=base_port(getattr(args, "port", None)),
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


def make_plan(stack, names: list[str] | None = None, strategy=None, color: bool | None = None, world=None):
    """Plan ports and env for the selected services against the real machine."""
    from revostack import plan as planmod

    selected = stack.selection(names)
    if world is None:
        from revostack import probe, rundir

        world = probe.ProbeWorld(stack.host, rundir.RunDir(stack).ownership(running=False))
    ports = planmod.plan_ports(stack, selected, world, strategy)
    return planmod.build(stack, selected, ports, os.environ, color)


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
            rows.append([i["instance"], i["preferred"], "-" if i["assigned"] is None else i["assigned"], i["env"], i["reason"] or ""])
        if rows:
            print(table(["instance", "preferred", "assigned", "env", "why"], rows))
        else:
            print("no service declares a port")
        print("(live: the stack is running)" if is_live else "(plan: what `revostack up` would assign now)")
    return EXIT_PORTS if failed and not is_live else EXIT_OK


def _live_ports(stack):
    """The running stack's assignments, or None when it is not running."""
    try:
        from revostack import control
    except ImportError:
        return None
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
        plan = _export_plan(stack)
    files = export.render(plan, args.format, app=args.app or stack.name, user=args.user)
    outdir = Path(args.outdir)
    clash = [outdir / name for name in files if (outdir / name).exists()]
    if clash and not args.force:
        raise UsageError(f"{clash[0]} already exists (use --force to overwrite)")
    outdir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (outdir / name).write_text(text)
        print(f"wrote {outdir / name}")
    return EXIT_OK


def _export_plan(stack):
    """The plan against this machine's ports, with only the stack's own variables (not this
    shell's whole environment) in each service's environment."""
    from revostack import plan as planmod
    from revostack import probe, rundir

    selected = set(stack.services)
    world = probe.ProbeWorld(stack.host, rundir.RunDir(stack).ownership(running=False))
    return planmod.build(stack, selected, planmod.plan_ports(stack, selected, world), {})


def table(headers, rows) -> str:
    from revostack.output import table as t

    return t(headers, rows)


# -- argument parsing -------------------------------------------------------------------------

Command = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, like every usage error
        raise UsageError(f"{self.prog}: {message}")


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
    sp = add("export", cmd_export, "write config for supervisord, systemd, docker compose or a Procfile")
    sp.add_argument("format", metavar="FORMAT", help="supervisord | systemd | compose | procfile")
    sp.add_argument("outdir", metavar="OUTDIR")
    sp.add_argument("--app", help="application name (default: the stack's name)")
    sp.add_argument("--user", help="the user the services run as")
    sp.add_argument("--port-base", type=int, help="fix ports by formula: base + 100 per service")
    sp.add_argument("--force", action="store_true", help="overwrite existing files")
    for extra in EXTRA_COMMANDS:
        extra(add)
    return p


EXTRA_COMMANDS: list[Callable] = []


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

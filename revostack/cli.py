"""The command line: parse argv, dispatch to small command functions, one error boundary.

The only place that calls ``asyncio.run``, prints errors and picks exit codes. Heavy modules
are imported inside the commands that need them, so ``revostack ports`` answers quickly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from revostack import __version__
from revostack.errors import EXIT_FAILED, EXIT_OK, ConfigError, RevostackError, UsageError

Command = str  # "module:function" in revostack.commands, imported only when that command runs


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, like every usage error
        raise UsageError(f"{self.prog.removeprefix('revostack').strip() or 'usage'}: {message}")


class _Skipped:
    """Stands for a subcommand's parser that this run does not need (see ``_command_in``)."""

    def add_argument(self, *args, **kw) -> None:
        pass

    def set_defaults(self, **kw) -> None:
        pass


COMMANDS = ("check", "ports", "graph", "init", "up", "down", "ps", "logs", "restart", "run", "start", "top", "scan",
            "history", "export", "attach", "stop", "scale", "reload", "connect", "ui")
_VALUED = {"-f", "--file", "--procfile", "-e", "--env", "-d", "--app-root"}  # global options that take a value


def _command_in(argv: list[str]) -> str | None:
    """The command named in ``argv``, found without parsing it: only that command's parser is
    then built (building all of them costs ~10 ms on every run)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _VALUED:
            skip = True
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog="revostack", description="Run a full-stack development stack from a Stackfile.toml.")
    p.add_argument("--version", action="version", version=f"revostack {__version__}")
    p.add_argument("-f", "--file", "--procfile", help="the Stackfile (or Procfile) to use")
    # honcho's options before the command, meaning what they mean after it (start, run, check)
    p.add_argument("-e", "--env", help="honcho: comma-separated .env files (default: .env)")
    p.add_argument("-d", "--app-root", metavar="DIR", help="honcho: where the Procfile and .env files are")
    p.add_argument("--no-colour", "--no-color", dest="no_color", action="store_true", help="no colour")
    p.add_argument("--no-prefix", action="store_true", help="honcho: no name and time before each line")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    honcho_commands = ("check", "run", "start")
    if only is None or only in honcho_commands:  # (each parser built costs ~0.5 ms: only those needed)
        honcho = _Parser(add_help=False)  # after the command they win over the same before it
        honcho.add_argument("-f", "--procfile", "--file", dest="file", default=argparse.SUPPRESS, metavar="FILE",
                            help="the Procfile (honcho: relative to the app root)")
        honcho.add_argument("-e", "--env", default=argparse.SUPPRESS, help="comma-separated .env files (default: .env)")
        honcho.add_argument("-d", "--app-root", default=argparse.SUPPRESS, metavar="DIR",
                            help="where the Procfile and .env files are (default: here)")
    if only is None or only not in honcho_commands:
        common = _Parser(add_help=False)
        common.add_argument("-f", "--file", default=argparse.SUPPRESS, help="the Stackfile (or Procfile) to use")

    def add(name: str, fn: Command, help: str, **kw) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return _Skipped()
        parents = [honcho] if name in honcho_commands else kw.pop("parents", [common])
        sp = sub.add_parser(name, help=help, parents=parents, description=help, **kw)
        sp.set_defaults(func=fn)
        return sp

    add("check", "inspect:cmd_check", "validate the Stackfile; print the start order, ports and environment")
    sp = add("ports", "inspect:cmd_ports", "the port of every instance: live, or the plan `up` would make")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--env", action="store_true", help="print `export NAME_PORT=N` lines for eval")
    sp.add_argument("--strategy", choices=["conservative", "intelligent", "aggressive"])
    sp = add("graph", "inspect:cmd_graph", "the dependency graph")
    sp.add_argument("--format", choices=["tree", "dot", "mermaid"], default="tree")
    sp = add("init", "files:cmd_init", "write a Stackfile.toml (from a Procfile when there is one)")
    sp.add_argument("--from", dest="source", metavar="PROCFILE")
    sp.add_argument("--force", action="store_true", help="overwrite an existing Stackfile.toml")
    sp.add_argument("-o", "--output", help=argparse.SUPPRESS)
    sp.add_argument("-p", "--port", type=int, help="base port for Procfile entries (default $PORT or 5000)")
    sp = add("up", "stack:cmd_up", "start the stack (or the named services and what they need) in the foreground")
    sp.add_argument("services", nargs="*", metavar="SERVICE")
    sp.add_argument("--no-watch", action="store_true", help="do not restart services when their files change")
    sp.add_argument("--strategy", choices=["conservative", "intelligent", "aggressive"])
    sp.add_argument("--abort-on-exit", action="store_true", help="stop the stack when any service ends for good")
    sp.add_argument("--timestamps", action=argparse.BooleanOptionalAction, default=True)
    sp.add_argument("--no-color", "--no-colour", dest="no_color", action="store_true", default=argparse.SUPPRESS)
    sp.add_argument("--dashboard", action="store_true", help="a live table in place of the scrolling log")
    sp.add_argument("--ui", action="store_true", help="start the stack and open the interactive view (q stops it)")
    sp.add_argument("--scrollback", type=int, default=10_000, metavar="N", help="--ui: lines kept per instance")
    sp.add_argument("-d", "--detach", action="store_true",
                    help="start in the background; return once every service is up (or failed)")
    sp.add_argument("-v", "--verbose", action="store_true",
                    help="up -d: the whole table, however many instances (else a summary past 20)")
    sp = add("down", "stack:cmd_down", "stop the running stack (or what a dead `up` left behind)")
    sp.add_argument("-v", "--verbose", action="store_true", help="name every instance, however many")
    sp = add("ps", "live:cmd_ps", "live status of every instance")
    sp.add_argument("--json", action="store_true")
    sp = add("logs", "live:cmd_logs", "the log files the running or last `up` wrote", parents=[])
    sp.add_argument("--file", default=argparse.SUPPRESS, help="the Stackfile (or Procfile) to use")
    sp.add_argument("services", nargs="*", metavar="SERVICE")
    sp.add_argument("-n", "--lines", type=int, default=None, help="only the last N lines")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    sp = add("restart", "live:cmd_restart", "restart services of the running stack")
    sp.add_argument("services", nargs="+", metavar="SERVICE")
    sp.add_argument("--deps", action="store_true", help="also restart the services that depend on them")
    sp.add_argument("-v", "--verbose", action="store_true", help="name every instance, however many")
    sp = add("run", "honcho:cmd_run", "run a one-off command with the stack's environment")
    sp.add_argument("-s", "--service", help="also use this service's env, cwd and port")
    sp.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD...")
    sp = add("start", "honcho:cmd_start", "honcho-compatible: run a Procfile")
    sp.add_argument("processes", nargs="*", metavar="PROCESS")
    sp.add_argument("-p", "--port", type=int, help="base port (default $PORT or 5000)")
    sp.add_argument("-c", "--concurrency", help="e.g. web=2,worker=1")
    sp.add_argument("-q", "--quiet", help="comma-separated processes whose output is not shown")
    sp.add_argument("--no-colour", "--no-color", dest="no_color", action="store_true", default=argparse.SUPPRESS)
    sp.add_argument("--no-prefix", action="store_true", default=argparse.SUPPRESS)
    sp = add("attach", "longrun:cmd_attach", "follow the running stack's output (Ctrl-C leaves; the stack keeps running)")
    sp.add_argument("services", nargs="*", metavar="SERVICE")
    sp.add_argument("--no-color", "--no-colour", dest="no_color", action="store_true", default=argparse.SUPPRESS)
    sp = add("ui", "longrun:cmd_ui", "the running stack in one window: services, output, search, actions (q leaves)")
    sp.add_argument("--scrollback", type=int, default=10_000, metavar="N", help="lines kept per instance (10,000)")
    sp = add("connect", "longrun:cmd_connect",
             "type into one running instance: a debugger, a REPL, a prompt (Ctrl-] leaves; the stack keeps running)")
    sp.add_argument("instance", metavar="SERVICE[.N]")
    sp = add("stop", "longrun:cmd_stop", "stop services of the running stack (they stay stopped until restart)")
    sp.add_argument("services", nargs="+", metavar="SERVICE")
    sp.add_argument("--deps", action="store_true", help="also stop the services that depend on them (first)")
    sp = add("scale", "longrun:cmd_scale", "change how many instances of running services run")
    sp.add_argument("counts", nargs="+", metavar="SERVICE=N")
    add("reload", "longrun:cmd_reload", "apply the Stackfile as it is now to the running stack")
    sp = add("top", "live:cmd_top", "a live view of the running stack (q to quit; the stack keeps running)")
    sp.add_argument("--once", action="store_true", help="print one rendering and exit")
    sp = add("scan", "inspect:cmd_scan", "who holds the stack's ports (or a range)")
    sp.add_argument("--range", help="scan ports A-B instead of the declared ones")
    sp.add_argument("--all", action="store_true", help="every declared port on its own row")
    sp.add_argument("--json", action="store_true")
    sp = add("history", "inspect:cmd_history", "the port conflicts met and what was done about them")
    sp.add_argument("-n", type=int, default=None, help="only the last N")
    sp.add_argument("--json", action="store_true")
    sp = add("export", "files:cmd_export", "write config for supervisord, systemd, docker compose or a Procfile")
    sp.add_argument("format", metavar="FORMAT", help="supervisord | systemd | compose | kubernetes | procfile")
    sp.add_argument("outdir", metavar="OUTDIR")
    sp.add_argument("--app", help="application name (default: the stack's name)")
    sp.add_argument("--user", help="the user the services run as")
    sp.add_argument("--port-base", type=int, help="fix ports by formula: base + 100 per service")
    sp.add_argument("--log-dir", help="supervisord: write each program's output here (default: next to APP.conf)")
    sp.add_argument("--image", help="compose, kubernetes: the image the services run in")
    sp.add_argument("--namespace", help="kubernetes: the namespace of every object (created too)")
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
        parser = build_parser(_command_in(argv))
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_OK if not argv else 2
        return _command(args.func)(args)
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


def _command(ref: Command) -> Callable[[argparse.Namespace], int]:
    import importlib

    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(f"revostack.commands.{module}"), name)


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

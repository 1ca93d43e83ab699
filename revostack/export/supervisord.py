"""supervisord: an INI file read by configparser."""

from __future__ import annotations

import math
import os
import re

from revostack.export import (ExportError, _absolute_program, _cwd, _header, _levels, _oneshots,
                              exported_env, shell_argv, unit_name)
from revostack.plan import Plan
from revostack.stackfile import Restart


# -- supervisord -------------------------------------------------------------------------------

_SV_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def _sv_comment_hazard(text: str) -> bool:
    """supervisord reads its files with inline comments: whitespace then ``;`` or ``#``."""
    return re.search(r"\s[;#]", text) is not None


def _sv_arg(word: str) -> str:
    """One argument of ``command=``: survives configparser, %-expansion and ``shlex.split``."""
    if "\r" in word:
        raise ExportError(f"supervisord cannot express a carriage return in {word!r}")
    if _SV_SAFE.fullmatch(word):
        return word.replace("%", "%%")
    if "\n" not in word and not _sv_comment_hazard(word) and "%(here)s" not in word:
        if "'" not in word:
            return "'" + word.replace("%", "%%") + "'"
        # inside POSIX double quotes shlex only unescapes \" and \\
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'
    # Backslash-escape every other character (POSIX shlex outside quotes takes it literally).
    # A newline becomes backslash + newline + an indented continuation line, which configparser
    # joins back with "\n"; since every space and ';'/'#' is escaped, no comment can start.
    out = []
    for i, ch in enumerate(word):
        if ch == "%":
            out.append("%%")
        elif ch.isascii() and (ch.isalnum() or ch in "_@+=:,./-"):
            out.append(ch)
        elif ch == "\n":
            out.append("\\\n    " + ("''" if i == len(word) - 1 else ""))
        else:
            out.append("\\" + ch)
    return "".join(out) or "''"


def _sv_env_quote(value: str) -> str | None:
    """The quote that keeps ``value`` intact in ``environment=``, or None when none can.

    supervisord splits ``environment`` with a non-POSIX shlex (no escapes inside quotes) and
    then strips quote characters from both ends of each value."""
    if "\n" in value or "\r" in value or "%(here)s" in value or _sv_comment_hazard(value):
        return None
    if value[:1] in ("'", '"') or value[-1:] in ("'", '"'):
        return None
    if '"' not in value:
        return '"'
    if "'" not in value:
        return "'"
    return None


def _sv_plain(value: str, what: str) -> str:
    """A plain option value (a path, a user): %-escaped; refused when configparser would change it."""
    if "\n" in value or "\r" in value or _sv_comment_hazard(value) or value != value.strip() or "%(here)s" in value:
        raise ExportError(f"supervisord cannot express the {what} {value!r}")
    return value.replace("%", "%%")


def render(plan: Plan, app: str, user: str | None, log_dir) -> str:
    stack = plan.stack
    levels = _levels(plan)
    oneshots = _oneshots(stack)
    selected = stack.selection()
    logs = "%(here)s" if log_dir is None else _sv_plain(os.path.abspath(os.fspath(log_dir)), "log folder")
    programs = [unit_name(app, i) for i in plan.instances]
    lines = _header(";", plan, "supervisord", [
        "supervisord has no dependencies: programs start (and stop, in reverse) by priority,",
        "one priority per dependency level, without waiting for health. Include this file from",
        f"supervisord.conf ([include] files = /path/to/{app}.conf), then run",
        "`supervisorctl reread && supervisorctl update`.",
    ])
    lines += ["", f"[group:{app}]", "programs=" + ",".join(programs)]
    for inst in plan.instances:
        svc = inst.service
        name = unit_name(app, inst)
        quoted: list[str] = []
        in_command: list[str] = []
        for key, value in exported_env(plan, inst).items():
            q = _sv_env_quote(value)
            if q is None:
                in_command.append(f"{key}={value}")
            else:
                quoted.append(f"{key}={q}{value.replace('%', '%%')}{q}")
        argv = _absolute_program(shell_argv(inst.cmd), _cwd(inst))
        if in_command:
            argv = ["/usr/bin/env"] + in_command + argv
        autorestart = {Restart.NO: "false", Restart.ON_FAILURE: "unexpected", Restart.ALWAYS: "true"}[svc.restart]
        lines += [
            "",
            f"[program:{name}]",
            "command=" + " ".join(_sv_arg(a) for a in argv),
            f"directory={_sv_plain(str(_cwd(inst)), 'directory')}",
        ]
        if quoted:
            lines.append("environment=" + ",".join(quoted))
        lines += [
            f"priority={100 * (levels.get(svc.name, 0) + 1)}",
            f"autostart={'true' if svc.name in selected else 'false'}",
            f"autorestart={autorestart}",
            # a run-once job that exits 0 within startsecs would count as a failed start
            f"startsecs={0 if svc.name in oneshots else 1}",
            f"startretries={svc.max_restarts}",
            "exitcodes=0",
            f"stopsignal={svc.stop_signal.removeprefix('SIG')}",
            f"stopwaitsecs={max(0, math.ceil(svc.stop_timeout))}",
            "stopasgroup=true",
            "killasgroup=true",
            f"stdout_logfile={logs}/{name}.out.log",
            f"stderr_logfile={logs}/{name}.err.log",
        ]
        if user:
            lines.append(f"user={_sv_plain(user, 'user')}")
    return "\n".join(lines) + "\n"

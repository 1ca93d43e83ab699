"""`revostack export`: a planned stack as config for another engine. Pure renderers.

Layer 0 (stdlib only, plus the model and the plan): ``render(plan, fmt, app=...)`` returns
``{file name relative to OUTDIR: text}``; writing the files is the CLI's job. docs/export.md
says what maps to what and what each engine cannot express.

Every value is written with the quoting of its target format:
- supervisord: an INI file read by configparser with inline comments (`` ;`` / `` #``), values
  %-expanded (``%`` -> ``%%``), ``command`` split with ``shlex.split`` (POSIX), ``environment``
  split with a non-POSIX shlex that has no escapes (so a value that cannot be quoted there moves
  into the command as ``/usr/bin/env KEY=VALUE``);
- systemd: C escapes inside double quotes, ``%`` -> ``%%`` (specifiers) everywhere,
  ``$`` -> ``$$`` in ``ExecStart=`` only (``Environment=`` does not expand variables);
- compose: double-quoted YAML scalars, ``$`` -> ``$$`` (compose interpolates every value);
- procfile: POSIX shell words in the Procfile, the spec's .env quoting in ``.env``.

Only stack-defined variables are exported, never the exporting shell's environment, and not
revostack's own markers (``REVOSTACK_STACK``/``REVOSTACK_SERVICE``): a process another engine
runs is not revostack's, and with the marker ``revostack up`` would take it for a stale process
of its own and stop it.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from pathlib import Path
from typing import Mapping

from revostack import interp
from revostack.errors import EXIT_USAGE, PortError, RevostackError, UsageError
from revostack.plan import Instance, Plan, instance_env
from revostack.stackfile import Condition, HealthKind, Restart, Service, Stack, env_prefix

FORMATS = ("supervisord", "systemd", "compose", "procfile")

DEFAULT_IMAGE = "python:3.11-slim"
# \x0b, \x0c, \x1c-\x1e, \x85, \u2028, \u2029: str.splitlines() breaks lines there (the .env and
# Procfile readers use it), so they cannot appear inside a Procfile line or a .env value.
_ODD_LINE_BREAKS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


class ExportError(RevostackError):
    """A value the target format cannot express (exit 2, like an invalid Stackfile)."""

    exit_code = EXIT_USAGE


def render(plan: Plan, fmt: str, *, app: str, user: str | None = None,
           log_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The files of ``fmt`` for ``plan``: ``{name relative to OUTDIR: text}``.

    ``app`` names the group / target / project (sanitised to ``[A-Za-z0-9_-]``); ``user`` is the
    account the services run as (supervisord and systemd); ``log_dir`` is where supervisord
    writes each program's stdout/stderr (default: the folder of the .conf file itself, through
    supervisord's ``%(here)s``, which always exists).
    """
    if fmt not in FORMATS:
        raise UsageError(f'unknown format "{fmt}": choose one of {", ".join(FORMATS)}')
    if plan.failures:
        raise PortError("cannot export: " + "; ".join(plan.failures))
    name = sanitize(app)
    if fmt == "supervisord":
        return {f"{name}.conf": _supervisord(plan, name, user, log_dir)}
    if fmt == "systemd":
        return _systemd(plan, name, user)
    if fmt == "compose":
        return {"compose.yaml": _compose(plan, name)}
    return _procfile(plan)


# -- shared helpers ----------------------------------------------------------------------------

def sanitize(name: str) -> str:
    """A name made of ``[A-Za-z0-9_-]`` only (anything else becomes ``-``)."""
    out = re.sub(r"[^A-Za-z0-9_-]", "-", name).strip("-")
    return out or "app"


def unit_name(app: str, inst: Instance) -> str:
    """``APP-NAME-N``: the program / unit name of one instance (always with its number, so the
    name of instance ``web.1`` can never be that of a service called ``web-1``)."""
    return f"{app}-{sanitize(inst.service.name)}-{inst.index}"


def _exported_keys(stack: Stack, svc: Service) -> set[str]:
    keys = set(stack.dotenv) | set(stack.env) | set(svc.dotenv) | set(svc.env) | {"PYTHONUNBUFFERED"}
    if svc.port is not None:
        keys.add(svc.port_env)
    for other in stack.services.values():
        if other.port is None:
            continue
        names = [other.name] + (other.instances if other.scale > 1 else [])
        for n in names:
            keys |= {f"{env_prefix(n)}_PORT", f"{env_prefix(n)}_HOST"}
    return keys


def exported_env(plan: Plan, inst: Instance) -> dict[str, str]:
    """The instance's planned environment, limited to what the stack defines (its env files and
    ``env`` tables, the port variables, ``PYTHONUNBUFFERED``): a plan built with the exporting
    shell's environment still exports none of it."""
    keys = _exported_keys(plan.stack, inst.service)
    return {k: v for k, v in inst.env.items() if k in keys}


def _is_simple(cmd: str) -> bool:
    """A single simple command (no shell syntax), which ``sh -c`` can ``exec``."""
    if not cmd.split():
        return False
    if re.search(r"[;&|<>()`\n\\*?\[\]{}!#~'\"]", cmd):
        return False
    first = cmd.split(None, 1)[0]
    if "=" in first:
        return False
    return first not in {"if", "for", "while", "until", "case", "cd", "export", "exec", "set", "trap", ".",
                         "source", "ulimit", "umask", "eval", "{", "!"}


def shell_script(cmd: str | tuple[str, ...]) -> str:
    """The text ``sh -c`` runs for a command: a simple command is ``exec``'d (so the engine's pid
    is the program itself and its stop signal reaches it directly), as ``revostack up`` does."""
    if not isinstance(cmd, str):
        return "exec " + shlex.join(cmd)
    return "exec " + cmd if _is_simple(cmd) else cmd


def shell_argv(cmd: str | tuple[str, ...]) -> list[str]:
    """A string runs through ``/bin/sh -c`` (Procfile semantics); an array is exec'd as is."""
    if isinstance(cmd, str):
        return ["/bin/sh", "-c", shell_script(cmd)]
    return list(cmd)


def _absolute_program(argv: list[str], cwd: Path) -> list[str]:
    """supervisord looks a program up before changing directory and systemd wants an absolute
    path or a bare name: ``bin/run`` relative to the service's cwd becomes absolute."""
    if argv and "/" in argv[0] and not argv[0].startswith("/"):
        return [os.path.normpath(os.path.join(cwd, argv[0]))] + argv[1:]
    return argv


def _cwd(inst: Instance) -> Path:
    return Path(os.path.abspath(inst.cwd))


def _oneshots(stack: Stack) -> set[str]:
    """Services some dependent waits on to *complete*: run-once jobs."""
    return {d.name for s in stack.services.values() for d in s.depends_on if d.condition is Condition.COMPLETED}


def _levels(plan: Plan) -> dict[str, int]:
    return {name: i for i, level in enumerate(plan.levels) for name in level}


def duration(seconds: float) -> str:
    """``1s``, ``30s``, ``500ms``: a span both systemd and compose read."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{max(1, round(seconds * 1000))}ms"


def _header(comment: str, plan: Plan, fmt: str, lines: list[str]) -> list[str]:
    path = str(Path(os.path.abspath(plan.stack.path))).replace("\n", " ")
    out = [f"{comment} Generated by `revostack export {fmt}` from {path}.",
           f"{comment} Ports were planned at export time; see docs/export.md."]
    out += [f"{comment} {line}" if line else comment for line in lines]
    return out


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


def _supervisord(plan: Plan, app: str, user: str | None, log_dir) -> str:
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


# -- systemd -----------------------------------------------------------------------------------

_SD_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "%": "%%"}
_SD_SAFE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def _sd_escape(text: str, dollar: bool) -> str:
    out = []
    for ch in text:
        if ch in _SD_ESCAPES:
            out.append(_SD_ESCAPES[ch])
        elif ch == "$" and dollar:
            out.append("$$")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _sd_word(word: str) -> str:
    """One word of ``ExecStart=``: quoted unless plain; ``$`` and ``%`` doubled."""
    if word == ";":
        return "\\;"  # a lone ";" would separate commands
    if _SD_SAFE.fullmatch(word):
        return word
    return '"' + _sd_escape(word, dollar=True) + '"'


def _sd_plain(value: str, what: str) -> str:
    """A raw value (a path, a user, a description): specifiers escaped, one line."""
    if "\n" in value or "\r" in value or value != value.strip():
        raise ExportError(f"systemd cannot express the {what} {value!r}")
    return value.replace("%", "%%")


def _systemd(plan: Plan, app: str, user: str | None) -> dict[str, str]:
    stack = plan.stack
    target = f"{app}.target"
    oneshots = _oneshots(stack)
    selected = stack.selection()
    units = {i.name: f"{unit_name(app, i)}.service" for i in plan.instances}
    files: dict[str, str] = {}
    for inst in plan.instances:
        svc = inst.service
        oneshot = svc.name in oneshots
        unit = _header("#", plan, "systemd", [
            "systemd has no health checks: After= waits until a dependency has started (or, for a",
            "run-once job, has exited), not until it is healthy.",
        ])
        unit += ["", "[Unit]", f"Description={_sd_plain(f'{stack.name} {inst.name} (revostack)', 'description')}",
                 f"PartOf={target}"]
        deps = [units[i.name] for d in svc.depends_on for i in plan.of_service(d.name)]
        if deps:
            unit.append("After=" + " ".join(deps))
            unit.append("Requires=" + " ".join(deps))
        if svc.restart is not Restart.NO:
            unit += ["StartLimitIntervalSec=60", f"StartLimitBurst={svc.max_restarts + 1}"]
        restart = svc.restart.value
        unit += ["", "[Service]"]
        if oneshot:
            unit += ["Type=oneshot", "RemainAfterExit=yes"]
            if svc.restart is Restart.ALWAYS:
                restart = "on-failure"  # systemd refuses Restart=always for Type=oneshot
        else:
            unit.append("Type=simple")
        unit.append(f"WorkingDirectory={_sd_plain(str(_cwd(inst)), 'directory')}")
        for key, value in exported_env(plan, inst).items():
            unit.append(f'Environment="{_sd_escape(f"{key}={value}", dollar=False)}"')
        argv = _absolute_program(shell_argv(inst.cmd), _cwd(inst))
        unit += [
            "ExecStart=" + " ".join(_sd_word(a) for a in argv),
            f"Restart={restart}",
            f"RestartSec={duration(svc.backoff)}",
            "KillMode=control-group",
            f"KillSignal={svc.stop_signal}",
            f"TimeoutStopSec={duration(svc.stop_timeout)}",
            f"SyslogIdentifier={unit_name(app, inst)}",
        ]
        if user:
            unit.append(f"User={_sd_plain(user, 'user')}")
        unit += ["", "[Install]", f"WantedBy={target}"]
        files[units[inst.name]] = "\n".join(unit) + "\n"
    wants = [units[i.name] for i in plan.instances if i.service.name in selected]
    text = _header("#", plan, "systemd", [
        "Copy these files to /etc/systemd/system/, then: systemctl daemon-reload &&",
        f"systemctl enable --now {target}. `systemctl stop {target}` stops every service.",
    ])
    text += ["", "[Unit]", f"Description={_sd_plain(f'{stack.name} (revostack stack)', 'description')}"]
    if wants:
        text.append("Wants=" + " ".join(wants))
    text += ["", "[Install]", "WantedBy=multi-user.target"]
    files[target] = "\n".join(text) + "\n"
    return files


# -- docker compose ----------------------------------------------------------------------------

_YAML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\0": "\\0", "\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\v": "\\v", "\f": "\\f", "\r": "\\r", "\x1b": "\\e", "\x85": "\\N", "\xa0": "\\_",
                 "\u2028": "\\L", "\u2029": "\\P"}


def yaml_quote(text: str, *, dollar: bool = True) -> str:
    """A double-quoted YAML scalar; with ``dollar``, ``$`` doubled for compose's interpolation."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _YAML_ESCAPES:
            out.append(_YAML_ESCAPES[ch])
        elif ch == "$" and dollar:
            out.append("$$")
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or 0xD800 <= code <= 0xDFFF or code in (0xFEFF, 0xFFFE, 0xFFFF):
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class _ComposeNames:
    """Compose service names: ``NAME`` for a service of one instance, ``NAME-N`` per instance
    of a scaled one (each instance has its own port, so each is its own compose service)."""

    def __init__(self, plan: Plan):
        self.of: dict[str, str] = {}
        for inst in plan.instances:
            base = sanitize(inst.service.name)
            self.of[inst.name] = base if inst.service.scale == 1 else f"{base}-{inst.index}"
        seen: dict[str, str] = {}
        for inst_name, cname in self.of.items():
            if cname in seen:
                raise ExportError(f'compose: instances "{seen[cname]}" and "{inst_name}" would both be named "{cname}"')
            seen[cname] = inst_name

    def service(self, name: str) -> str:
        """The compose name that stands for a whole service (its first instance)."""
        return self.of[f"{name}.1"]


class _ComposeEnv:
    """Interpolation for a container: other services are reached by their compose names.

    - ``${NAME.host}`` and ``NAME_HOST`` become NAME's compose service name;
    - a host written just before ``:<a port of service X>`` (``${host}:${X.port}``,
      ``127.0.0.1:$X_PORT``, ``localhost:${X.port}``...) becomes X's compose name;
    - any other ``${host}`` (the address the service binds) becomes ``0.0.0.0`` in ``cmd`` and
      ``env``, since a container must listen on all its interfaces to be reached; in health
      checks, which run inside the service's own container, it stays ``127.0.0.1``;
    - ports stay the planned ones (each container has its own network namespace).
    """

    def __init__(self, plan: Plan, names: _ComposeNames):
        self.plan = plan
        self.stack = plan.stack
        self.names = names
        self.ports = {i.name: i.port.port for i in plan.instances}
        self.port_vars: dict[str, str] = {}  # "DB_PORT" -> "db"
        for svc in self.stack.services.values():
            if svc.port is None:
                continue
            self.port_vars[f"{env_prefix(svc.name)}_PORT"] = names.service(svc.name)
            if svc.scale > 1:
                for i, inst_name in enumerate(svc.instances, 1):
                    self.port_vars[f"{env_prefix(inst_name)}_PORT"] = names.of[inst_name]

    def ours(self, inst: Instance) -> dict[str, str]:
        out: dict[str, str] = {}
        for svc in self.stack.services.values():
            if svc.port is None:
                continue
            out[f"{env_prefix(svc.name)}_PORT"] = str(self.ports[f"{svc.name}.1"])
            out[f"{env_prefix(svc.name)}_HOST"] = self.names.service(svc.name)
            if svc.scale > 1:
                for inst_name in svc.instances:
                    out[f"{env_prefix(inst_name)}_PORT"] = str(self.ports[inst_name])
                    out[f"{env_prefix(inst_name)}_HOST"] = self.names.of[inst_name]
        if inst.service.port is not None:
            out[inst.service.port_env] = str(inst.port.port)
        return out

    def env(self, inst: Instance) -> dict[str, str]:
        """The layering of ``plan.instance_env`` (later wins), with this interpolation."""
        svc = inst.service
        ours = self.ours(inst)
        env: dict[str, str] = {}
        for layer, interpolate in ((self.stack.dotenv, False), (self.stack.env, True), (svc.dotenv, False),
                                   (svc.env, True)):
            for key, value in layer.items():
                if interpolate:
                    value = self.expand(value, inst, {**env, **ours}, shell=False, bind="0.0.0.0")
                env[key] = value
        env.update(ours)
        env.setdefault("PYTHONUNBUFFERED", "1")
        keys = _exported_keys(self.stack, svc)
        return {k: v for k, v in env.items() if k in keys}

    def cmd(self, inst: Instance, env: Mapping[str, str]) -> list[str]:
        cmd = inst.service.cmd
        if isinstance(cmd, str):
            return shell_argv(self.expand(cmd, inst, env, shell=True, bind="0.0.0.0"))
        return [self.expand(a, inst, env, shell=False, bind="0.0.0.0") for a in cmd]

    def health_target(self, inst: Instance, env: Mapping[str, str]) -> str:
        h = inst.service.health
        assert h is not None
        return self.expand(h.target, inst, env, shell=h.kind is HealthKind.CMD, bind="127.0.0.1", own_local=True)

    def point_hosts(self, text: str, inst: Instance, own_local: bool) -> str:
        """Replace the host written just before ``:<port of X>`` by X's compose name."""
        refs = interp.references(text)
        ending = {r.start + len(r.text): r for r in refs}
        literals = sorted({self.stack.host, "127.0.0.1", "localhost", "0.0.0.0"} - {""}, key=len, reverse=True)
        spans: list[tuple[int, int, str]] = []
        for ref in refs:
            target = None
            if ref.is_stack_ref and ref.attr == "port":
                if ref.service == "":
                    target = None if own_local else self.names.of[inst.name]
                elif ref.service in self.stack.services:
                    target = self.names.service(ref.service)
            elif ref.var is not None and not ref.is_stack_ref:
                if ref.var in self.port_vars:
                    target = self.port_vars[ref.var]
                elif inst.service.port is not None and ref.var == inst.service.port_env and not own_local:
                    target = self.names.of[inst.name]
            if target is None or ref.start == 0 or text[ref.start - 1] != ":":
                continue
            colon = ref.start - 1
            host = ending.get(colon)
            if host is not None:
                if host.is_stack_ref and host.attr == "host" and host.service == "":
                    spans.append((host.start, colon, target))
                continue
            for lit in literals:
                begin = colon - len(lit)
                if begin >= 0 and text[begin:colon] == lit and (begin == 0 or not re.match(r"[A-Za-z0-9.$_-]", text[begin - 1])):
                    spans.append((begin, colon, target))
                    break
        for begin, end, name in sorted(spans, reverse=True):
            text = text[:begin] + name + text[end:]
        return text

    def expand(self, text: str, inst: Instance, context: Mapping[str, str], *, shell: bool, bind: str,
               own_local: bool = False) -> str:
        text = self.point_hosts(text, inst, own_local)

        def resolve(ref: interp.Ref) -> str | None:
            if ref.is_stack_ref:
                if ref.service == "":
                    if ref.attr == "host":
                        return bind
                    return None if inst.port.port is None else str(inst.port.port)
                if ref.service not in self.stack.services:
                    return None
                if ref.attr == "host":
                    return self.names.service(ref.service)
                port = self.ports.get(f"{ref.service}.1")
                return None if port is None else str(port)
            if ref.var in context:
                return context[ref.var]
            return ref.default

        return interp.expand(text, resolve, shell=shell)


_HTTP_CHECK = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))"
_TCP_CHECK = ("import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), "
              "timeout=float(sys.argv[3])).close()")


def compose_healthcheck(kind: HealthKind, target: str, timeout: float) -> list[str] | None:
    """The ``healthcheck.test`` of a check (python3 one-liners: curl is often absent from an
    image), or None for a log check, which compose cannot express."""
    if kind is HealthKind.HTTP:
        return ["CMD", "python3", "-c", _HTTP_CHECK, target, f"{timeout:g}"]
    if kind is HealthKind.TCP:
        host, _, port = target.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if not port.isdigit():
            raise ExportError(f"compose: tcp health target {target!r} is not HOST:PORT")
        return ["CMD", "python3", "-c", _TCP_CHECK, host, port, f"{timeout:g}"]
    if kind is HealthKind.CMD:
        return ["CMD-SHELL", target]
    return None


def _yaml_list(items: list[str], indent: str) -> list[str]:
    return [f"{indent}- {yaml_quote(x)}" for x in items]


def _compose(plan: Plan, app: str) -> str:
    stack = plan.stack
    names = _ComposeNames(plan)
    cenv = _ComposeEnv(plan, names)
    selected = stack.selection()
    mounts = {str(Path(os.path.abspath(stack.root)))}
    for inst in plan.instances:
        cwd = str(_cwd(inst))
        if not any(cwd == m or cwd.startswith(m.rstrip("/") + "/") for m in mounts):
            mounts.add(cwd)
    lines = _header("#", plan, "compose", [
        "Set the image: REVOSTACK_IMAGE=... docker compose up (or edit each image: line).",
        "The stack's folder is mounted at the same path so working_dir exists; drop the volumes",
        "when the image contains the code. Services must listen on 0.0.0.0 inside a container.",
    ])
    lines += ["", f"name: {yaml_quote(app.lower())}", "services:"]
    for inst in plan.instances:
        svc = inst.service
        env = cenv.env(inst)
        lines += [
            f"  {yaml_quote(names.of[inst.name])}:",
            f"    image: {yaml_quote('${REVOSTACK_IMAGE:-' + DEFAULT_IMAGE + '}', dollar=False)}",
            f"    working_dir: {yaml_quote(str(_cwd(inst)))}",
            "    volumes:",
        ]
        for m in sorted(mounts):
            lines += ["      - type: \"bind\"", f"        source: {yaml_quote(m)}", f"        target: {yaml_quote(m)}"]
        lines += ["    command:"] + _yaml_list(cenv.cmd(inst, env), "      ")
        if env:
            lines.append("    environment:")
            lines += [f"      {yaml_quote(k)}: {yaml_quote(v)}" for k, v in env.items()]
        if inst.port.port is not None:
            lines += ["    ports:", f"      - {yaml_quote(f'{inst.port.port}:{inst.port.port}')}"]
        if svc.depends_on:
            lines.append("    depends_on:")
            for dep in svc.depends_on:
                target = stack.services[dep.name]
                condition = {Condition.STARTED: "service_started", Condition.HEALTHY: "service_healthy",
                             Condition.COMPLETED: "service_completed_successfully"}[dep.condition]
                note = ""
                if dep.condition is Condition.HEALTHY and (target.health is None or target.health.kind is HealthKind.LOG):
                    condition, note = "service_started", "  # a log health check has no compose equivalent"
                for dinst in plan.of_service(dep.name):
                    lines += [f"      {yaml_quote(names.of[dinst.name])}:", f"        condition: {yaml_quote(condition)}{note}"]
        if svc.health is not None:
            h = svc.health
            test = compose_healthcheck(h.kind, cenv.health_target(inst, env), h.timeout)
            if test is None:
                lines.append("    # healthcheck: a log check (a regex over the output) has no compose equivalent")
            else:
                lines += ["    healthcheck:", "      test:"] + _yaml_list(test, "        ")
                lines += [f"      interval: {yaml_quote(duration(h.interval))}",
                          f"      timeout: {yaml_quote(duration(h.timeout))}",
                          f"      retries: {h.retries}",
                          f"      start_period: {yaml_quote(duration(h.start_period))}"]
        restart = {Restart.NO: "no", Restart.ON_FAILURE: f"on-failure:{svc.max_restarts}",
                   Restart.ALWAYS: "always"}[svc.restart]
        lines += [f"    restart: {yaml_quote(restart)}",
                  f"    stop_signal: {yaml_quote(svc.stop_signal)}",
                  f"    stop_grace_period: {yaml_quote(duration(svc.stop_timeout))}"]
        if svc.name not in selected:
            lines += ["    profiles:", "      - \"manual\"  # autostart = false"]
    return "\n".join(lines) + "\n"


# -- Procfile + .env ---------------------------------------------------------------------------

_DOTENV_PLAIN = re.compile(r"[A-Za-z0-9_./:@+,=-]*")


def dotenv_value(value: str) -> str:
    """A value as the spec's .env rules read it back exactly."""
    if _ODD_LINE_BREAKS.search(value):
        raise ExportError(f".env cannot express the line-breaking characters in {value!r}")
    if _DOTENV_PLAIN.fullmatch(value):
        return value
    if "'" not in value and "\n" not in value and "\r" not in value:
        return "'" + value + "'"  # single quotes: every character literal
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
               .replace("\t", "\\t").replace("$", "\\$"))
    return '"' + escaped + '"'


def _stack_level_env(plan: Plan) -> dict[str, str]:
    """The stack's env files, ``[env]`` and port variables, as every process sees them."""
    stack = plan.stack
    first = plan.instances[0].service if plan.instances else None
    if first is None:
        return {}
    ports = {i.name: i.port for i in plan.instances}
    service_ports = {s: (ports[f"{s}.1"].port if f"{s}.1" in ports else None) for s in stack.services}
    bare = Service(name=first.name, cmd=first.cmd, cwd=first.cwd)  # no env, no port of its own
    env = instance_env(stack, bare, "", None, ports, service_ports, {})
    keys = set(stack.dotenv) | set(stack.env) | {"PYTHONUNBUFFERED"}
    for svc in stack.services.values():
        if svc.port is not None:
            for n in [svc.name] + (svc.instances if svc.scale > 1 else []):
                keys |= {f"{env_prefix(n)}_PORT", f"{env_prefix(n)}_HOST"}
    return {k: v for k, v in env.items() if k in keys}


def _multiline(text: str) -> bool:
    return "\n" in text or "\r" in text or _ODD_LINE_BREAKS.search(text) is not None


IDLE = "exec sleep 2147483647"  # POSIX sleep; "infinity" is a GNU extension


def _procfile_script(cmd: str | tuple[str, ...], prefix: str, indirect: dict[str, str], once: bool) -> str:
    """The command on one Procfile line. What cannot be written on one line (an argument or a
    shell script with a newline) is carried by a .env variable: ``"$PREFIX__ARG2"``.

    A run-once job (``once``) idles after it succeeds, since honcho, foreman and `revostack
    start` stop every process as soon as one exits; when it fails, its exit code ends the run."""
    if isinstance(cmd, str):
        if _multiline(cmd):
            indirect[f"{prefix}__CMD"] = cmd
            run = f'/bin/sh -c "${prefix}__CMD"'
        elif once:
            run = cmd if _is_simple(cmd) else "/bin/sh -c " + shlex.quote(cmd)
        else:
            return shell_script(cmd)
        return f"{run} || exit $?; {IDLE}" if once else "exec " + run
    words = []
    for i, arg in enumerate(cmd):
        if _multiline(arg):
            indirect[f"{prefix}__ARG{i}"] = arg
            words.append(f'"${prefix}__ARG{i}"')
        else:
            words.append(shlex.quote(arg))
    return f"{' '.join(words)} || exit $?; {IDLE}" if once else "exec " + " ".join(words)


def _procfile(plan: Plan) -> dict[str, str]:
    stack = plan.stack
    shared = _stack_level_env(plan)
    oneshots = _oneshots(stack)
    indirect: dict[str, str] = {}  # .env variables carrying a per-service value with a newline
    lines = _header("#", plan, "procfile", [
        "Run from this folder with honcho (honcho start) or foreman (foreman start). Each line pins",
        "its port variable to the planned one from .env (those runners set PORT by their own rule)",
        "and sets its service's own variables. No dependencies, no health checks: a service must",
        "retry until what it needs is up. (With revostack, run the Stackfile itself.)",
    ])
    for svc in stack.services.values():
        instances = plan.of_service(svc.name)
        if not instances:
            continue
        inst = instances[0]
        env = exported_env(plan, inst)
        name = sanitize(svc.name)
        prefix = env_prefix(svc.name)
        sets: list[str] = []
        for key, value in env.items():
            if key == svc.port_env and svc.port is not None:
                if svc.scale == 1:
                    sets.append(f'{key}="${prefix}_PORT"')
                continue
            if key in shared and shared[key] == value:
                continue
            if "\n" in value or "\r" in value:
                carrier = f"{prefix}__{key}"
                indirect[carrier] = value
                sets.append(f'{key}="${carrier}"')
            else:
                if _ODD_LINE_BREAKS.search(value):
                    raise ExportError(f"procfile: {svc.name}.env.{key}: a Procfile line cannot hold {value!r}")
                sets.append(f"{key}={shlex.quote(value)}")
        script = _procfile_script(inst.cmd, prefix, indirect, once=svc.name in oneshots)
        parts = [f"cd {shlex.quote(str(_cwd(inst)))} || exit 1"]
        if sets:
            parts.append("export " + " ".join(sets))
        parts.append(script)
        lines.append("")
        if svc.scale > 1:
            lines.append(f"# {name}: scale = {svc.scale} in the Stackfile: run it with -c {name}={svc.scale}; "
                         "each instance then gets the runner's PORT")
        if svc.depends_on:
            lines.append(f"# {name} depends on " + ", ".join(f"{d.name} ({d.condition.value})" for d in svc.depends_on)
                         + ": a Procfile cannot wait for that")
        if svc.name in oneshots:
            lines.append(f"# {name} runs once: after it succeeds it idles, since the runner stops every "
                         "process when one exits")
        if svc.name not in stack.selection():
            lines.append(f"# {name}: autostart = false in the Stackfile")
        lines.append(f"{name}: " + "; ".join(parts))
    env_lines = _header("#", plan, "procfile", ["The stack's variables and the planned ports, for every process."])
    for key, value in {**shared, **indirect}.items():
        env_lines.append(f"{key}={dotenv_value(value)}")
    return {"Procfile": "\n".join(lines) + "\n", ".env": "\n".join(env_lines) + "\n"}


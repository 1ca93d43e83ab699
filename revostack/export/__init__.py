"""`revostack export`: a planned stack as config for another engine. Pure renderers, one module
per engine (supervisord, systemd, compose, kubernetes, procfile); here what they share.

Layer 0 (stdlib only, plus the model and the plan; PyYAML for kubernetes): ``render(plan, fmt, app=...)`` returns
``{file name relative to OUTDIR: text}``; writing the files is the CLI's job. docs/export.md
says what maps to what and what each engine cannot express.

Every value is written with the quoting of its target format:
- supervisord: an INI file read by configparser with inline comments (`` ;`` / `` #``), values
  %-expanded (``%`` -> ``%%``), ``command`` split with ``shlex.split`` (POSIX), ``environment``
  split with a non-POSIX shlex that has no escapes (so a value that cannot be quoted there moves
  into the command as ``/usr/bin/env KEY=VALUE``);
- systemd: C escapes inside double quotes, ``%`` -> ``%%`` (specifiers) everywhere,
  ``$`` -> ``$$`` in ``ExecStart=`` only (``Environment=`` does not expand variables);
- compose and kubernetes: PyYAML's ``safe_dump`` (compose: ``$`` -> ``$$`` first, as compose interpolates every value);
- procfile: POSIX shell words in the Procfile, the spec's .env quoting in ``.env``.

Only stack-defined variables are exported, never the exporting shell's environment, and not
revostack's own markers (``REVOSTACK_STACK``/``REVOSTACK_SERVICE``): a process another engine
runs is not revostack's, and with the marker ``revostack up`` would take it for a stale process
of its own and stop it.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from revostack.errors import EXIT_USAGE, PortError, RevostackError, UsageError
from revostack.plan import Instance, Plan
from revostack.procs import is_simple
from revostack.stackfile import Condition, Service, Stack, env_prefix

FORMATS = ("supervisord", "systemd", "compose", "kubernetes", "procfile")

DEFAULT_IMAGE = "python:3.11-slim"
# \x0b, \x0c, \x1c-\x1e, \x85, \u2028, \u2029: str.splitlines() breaks lines there (the .env and
# Procfile readers use it), so they cannot appear inside a Procfile line or a .env value.
_ODD_LINE_BREAKS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


class ExportError(RevostackError):
    """A value the target format cannot express (exit 2, like an invalid Stackfile)."""

    exit_code = EXIT_USAGE


def render(plan: Plan, fmt: str, *, app: str, user: str | None = None,
           log_dir: str | os.PathLike[str] | None = None, image: str | None = None,
           namespace: str | None = None) -> dict[str, str]:
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
        from revostack.export.supervisord import render as supervisord

        return {f"{name}.conf": supervisord(plan, name, user, log_dir)}
    if fmt == "systemd":
        from revostack.export.systemd import render as systemd

        return systemd(plan, name, user)
    if fmt == "compose":
        from revostack.export.compose import render as compose

        return compose(plan, name, image)
    if fmt == "kubernetes":
        from revostack.export.kubernetes import render as kubernetes

        needs = [i.service.name for i in plan.instances if i.service.image is None]
        if not image and needs:
            raise UsageError("export kubernetes needs --image IMAGE: the image that holds the project at /app "
                             f"(for {', '.join(dict.fromkeys(needs))}; a service with its own image needs none)")
        image = image or DEFAULT_IMAGE
        return kubernetes(plan, name, image, namespace)
    from revostack.export.procfile import render as procfile

    return procfile(plan)


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


def shell_script(cmd: str | tuple[str, ...]) -> str:
    """The text ``sh -c`` runs for a command: a simple command is ``exec``'d (so the engine's pid
    is the program itself and its stop signal reaches it directly), as ``revostack up`` does."""
    if not isinstance(cmd, str):
        return "exec " + shlex.join(cmd)
    return "exec " + cmd if is_simple(cmd) else cmd


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



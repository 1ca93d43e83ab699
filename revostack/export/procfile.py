"""A Procfile and its .env, for honcho or foreman."""

from __future__ import annotations

import re
import shlex

from revostack.export import (ExportError, _ODD_LINE_BREAKS, _cwd, _header, _oneshots,
                              exported_env, sanitize, shell_script)
from revostack.plan import Plan, instance_env
from revostack.procs import is_simple
from revostack.stackfile import Service, env_prefix


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
            run = cmd if is_simple(cmd) else "/bin/sh -c " + shlex.quote(cmd)
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


def render(plan: Plan) -> dict[str, str]:
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

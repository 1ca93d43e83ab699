"""docker compose: compose.yaml, addresses rewritten for containers."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

from revostack import interp
from revostack.export import (DEFAULT_IMAGE, ExportError, _cwd, _exported_keys, _header, duration,
                              sanitize, shell_argv)
from revostack.plan import Instance, Plan
from revostack.stackfile import Condition, HealthKind, Restart, env_prefix


# -- docker compose ----------------------------------------------------------------------------

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
        # the port each instance is reached on from another container: a container service's
        # own container_port, a process's planned port (it listens there in its container)
        self.ports = {i.name: (i.service.container_port if i.service.image is not None else i.port.port)
                      for i in plan.instances}
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
            out[inst.service.port_env] = str(self.ports[inst.name])
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
        if inst.service.image is not None and isinstance(cmd, str):  # the image's own shell, as `up` runs it
            return ["/bin/sh", "-c", self.expand(cmd, inst, env, shell=True, bind="0.0.0.0")]
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
                    own = self.ports.get(inst.name)
                    return None if own is None else str(own)
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


def image_healthcheck(kind: HealthKind, target: str, timeout: float) -> list[str] | None:
    """A check inside a container service's own image, which may have no python3: whichever of
    the usual tools the image has (busybox/alpine nc and wget, bash's /dev/tcp, curl, python3)."""
    t = f"{timeout:g}"
    if kind is HealthKind.TCP:
        host, _, port = target.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if not port.isdigit():
            raise ExportError(f"compose: tcp health target {target!r} is not HOST:PORT")
        return ["CMD-SHELL", f"nc -z -w {t} {host} {port} 2>/dev/null || nc -w {t} {host} {port} </dev/null 2>/dev/null || bash -c 'exec 3<>/dev/tcp/{host}/{port}' "
                f"2>/dev/null || python3 -c \"{_TCP_CHECK}\" {host} {port} {t}"]
    if kind is HealthKind.HTTP:
        return ["CMD-SHELL", f"wget -q -T {t} -O /dev/null '{target}' 2>/dev/null || curl -fsS -m {t} -o /dev/null "
                f"'{target}' 2>/dev/null || python3 -c \"{_HTTP_CHECK}\" '{target}' {t}"]
    return compose_healthcheck(kind, target, timeout)


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


def render(plan: Plan, app: str, image: str | None = None) -> dict[str, str]:
    """compose.yaml, and the project's name in a .env beside it (compose v1 rejects a top-level
    ``name:``; both v1 and v2 read ``COMPOSE_PROJECT_NAME`` from that file)."""
    return {"compose.yaml": _compose(plan, app, image),
            ".env": f"# the compose project's name (read by docker compose v1 and v2)\nCOMPOSE_PROJECT_NAME={app.lower()}\n"}


def _compose(plan: Plan, app: str, image: str | None) -> str:
    import yaml

    stack = plan.stack
    names = _ComposeNames(plan)
    cenv = _ComposeEnv(plan, names)
    selected = stack.selection()
    mounts = {str(Path(os.path.abspath(stack.root)))}
    for inst in plan.instances:
        if inst.service.image is not None:
            continue
        cwd = str(_cwd(inst))
        if not any(cwd == m or cwd.startswith(m.rstrip("/") + "/") for m in mounts):
            mounts.add(cwd)
    notes = []
    published = "" if stack.host in ("", "0.0.0.0", "::") else f"{stack.host}:"  # as `up` binds them
    services: dict[str, dict] = {}
    named_volumes: dict[str, dict] = {}
    for inst in plan.instances:
        svc = inst.service
        env = cenv.env(inst)
        if svc.image is not None:
            s = _container_service(svc, inst, cenv, env, named_volumes)
        else:
            s = {
                "image": _dollars(image) if image else "${REVOSTACK_IMAGE:-" + DEFAULT_IMAGE + "}",
                "init": True,  # a real PID 1: the stop signal reaches the program, zombies are reaped
                "working_dir": _dollars(str(_cwd(inst))),
                "volumes": [{"type": "bind", "source": _dollars(m), "target": _dollars(m)} for m in sorted(mounts)],
                "command": [_dollars(a) for a in cenv.cmd(inst, env)],
            }
        if env:
            s["environment"] = {k: _dollars(v) for k, v in env.items()}
        if inst.port.port is not None:
            s["ports"] = [f"{published}{inst.port.port}:{cenv.ports[inst.name]}"]
        if svc.depends_on:
            s["depends_on"] = {}
            for dep in svc.depends_on:
                target = stack.services[dep.name]
                condition = {Condition.STARTED: "service_started", Condition.HEALTHY: "service_healthy",
                             Condition.COMPLETED: "service_completed_successfully"}[dep.condition]
                if dep.condition is Condition.HEALTHY and (target.health is None or target.health.kind is HealthKind.LOG):
                    condition = "service_started"
                    notes.append(f"{names.of[inst.name]} waits for {dep.name} to start, not to be healthy: "
                                 "a log health check has no compose equivalent.")
                for dinst in plan.of_service(dep.name):
                    s["depends_on"][names.of[dinst.name]] = {"condition": condition}
        if svc.health is not None:
            h = svc.health
            test = (image_healthcheck if svc.image is not None else compose_healthcheck)(
                h.kind, cenv.health_target(inst, env), h.timeout)
            if test is None:
                notes.append(f"{names.of[inst.name]} has no healthcheck: its log check (a regex over the output) "
                             "has no compose equivalent.")
            else:
                s["healthcheck"] = {"test": [_dollars(t) for t in test], "interval": duration(h.interval),
                                    "timeout": duration(h.timeout), "retries": h.retries,
                                    "start_period": duration(h.start_period)}
        s["restart"] = {Restart.NO: "no", Restart.ON_FAILURE: f"on-failure:{svc.max_restarts}",
                        Restart.ALWAYS: "always"}[svc.restart]
        s["stop_signal"] = svc.stop_signal
        s["stop_grace_period"] = duration(svc.stop_timeout)
        if svc.name not in selected:
            s["profiles"] = ["manual"]  # autostart = false
        services[names.of[inst.name]] = s
    processes = any(i.service.image is None for i in plan.instances)
    lines = _header("#", plan, "compose", [
        ("Set the image: REVOSTACK_IMAGE=... docker compose up (or edit each image: line)." if not image else
         f"Every process service runs in {image}.") if processes else "Every service runs in its own image.",
        *(["A container service runs in its own image, with its container_port inside."]
          if processes and len(plan.instances) > sum(1 for i in plan.instances if i.service.image is None) else []),
        "The stack's folder is mounted at the same path so working_dir exists; drop the volumes",
        "when the image contains the code. Inside a container the services bind 0.0.0.0.",
        *(["The profile \"manual\" holds the services with autostart = false."]
          if any("profiles" in s for s in services.values()) else []),
        *notes,
    ])
    # PyYAML quotes whatever would not read back as the same string (NO, 1e3, ": "...); every $
    # is doubled before (compose interpolates every value), but the image placeholder's
    doc: dict = {"services": services}
    if named_volumes:
        doc["volumes"] = named_volumes  # kept across `down`, as revostack keeps them
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True, width=float("inf"))
    return "\n".join(lines) + "\n\n" + body


def _container_service(svc, inst: Instance, cenv: _ComposeEnv, env: Mapping[str, str],
                       named_volumes: dict[str, dict]) -> dict:
    """A service with ``image``: its own image, command and volumes (no project mount, no init:
    as `up` runs it)."""
    s: dict = {"image": _dollars(svc.image)}
    if svc.cmd:
        s["command"] = [_dollars(a) for a in cenv.cmd(inst, env)]
    if svc.volumes:
        vols = []
        for v in svc.volumes:
            if not v.host_path:
                named_volumes[v.source] = {}
            vols.append({"type": "bind" if v.host_path else "volume", "source": _dollars(v.source),
                         "target": _dollars(v.target), **({"read_only": True} if v.read_only else {})})
        s["volumes"] = vols
    if svc.pty:
        s["tty"] = True
        s["stdin_open"] = True
    return s


def _dollars(text: str) -> str:
    return text.replace("$", "$$")

"""The plan: which port each instance gets, and the environment, command and health check it
runs with. Pure: the world (is a port free, who holds it) is passed in.
"""

from __future__ import annotations

from collections import ChainMap

from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol

from revostack import interp
from revostack.record import factory, record, replace
from revostack.stackfile import Handoff, Health, HealthKind, Service, Stack, Strategy, env_prefix


@record
class Holder:
    """Who holds a port."""

    pid: int | None
    user: str | None = None
    name: str | None = None
    cmdline: str | None = None
    cls: str = "unknown"  # ours-running | ours-stale | external | unknown
    create_time: float | None = None
    same_user: bool = False
    protected: bool = False  # pid 1, revostack itself or an ancestor, a container's proxy: never signalled
    container: Mapping[str, str] | None = None  # a port a container publishes: {"id", "name", "image"}

    def describe(self) -> str:
        if self.container:
            return f"container {self.container['name']} ({self.container['image']}; {self.cls})"
        if self.pid is None:
            return "an unknown process"
        return f"pid {self.pid} {self.name or '?'} ({self.cls})"

    def to_json(self) -> dict:
        out = {"pid": self.pid, "user": self.user, "name": self.name, "cmdline": self.cmdline, "class": self.cls}
        if self.container:
            out["container"] = dict(self.container)
        return out


class PortWorld(Protocol):
    def is_free(self, port: int) -> bool: ...
    def holder(self, port: int) -> Holder | None: ...
    def os_port(self) -> int: ...


class Action:
    NONE = ""
    MOVED = "moved"
    RECLAIM = "reclaimed"  # stop our own stale holder, take the port back
    STOP = "stopped"  # aggressive: stop a same-user holder running the same program


@record
class PortChoice:
    preferred: int | None
    port: int | None
    reason: str | None = None
    holder: Holder | None = None
    action: str = Action.NONE


@record
class ContainerRun:
    """What a container instance runs with, as seen from inside it (docs/containers.md)."""

    env: Mapping[str, str]  # its environment: without the orchestrator's own
    cmd: str | tuple[str, ...]  # () runs the image's own command
    publish: int | None  # the host port published (the private one behind a proxy)
    port: int | None  # container_port


DOCKER_HOST_GATEWAY = "host.docker.internal"
INSIDE_HOST = "0.0.0.0"  # ${host} inside a container: every interface, so the published port reaches it


@record
class Instance:
    name: str  # "backend.1"
    service: Service
    index: int
    port: PortChoice
    env: Mapping[str, str] = factory(dict)
    cmd: str | tuple[str, ...] = ""
    health: Health | None = None
    container: ContainerRun | None = None  # with ``image``

    @property
    def cwd(self) -> Path:
        return self.service.cwd


@record
class Plan:
    stack: Stack
    instances: tuple[Instance, ...]
    levels: tuple[tuple[str, ...], ...]  # service names by dependency level
    failures: tuple[str, ...] = ()  # instances that got no port, with why
    environ: Mapping[str, str] = factory(dict)  # the base environment it was built on
    color: bool | None = None

    @property
    def ports(self) -> dict[str, PortChoice]:
        return {i.name: i.port for i in self.instances}

    def ports_env(self) -> dict[str, str]:
        """What every instance is told of the others (``NAME_PORT``, ``NAME_HOST``)."""
        ports = self.ports
        return ports_env(self.stack, ports, _service_ports(self.stack, ports))

    def with_ports(self, ports: Mapping[str, PortChoice]) -> "Plan":
        """The same plan with some instances moved: every env, cmd and health check re-resolved,
        so dependents see the new ``NAME_PORT``."""
        merged = {**self.ports, **ports}
        return build(self.stack, {n for level in self.levels for n in level}, merged, self.environ, self.color)

    def behind_proxy(self, inst: Instance, private_port: int) -> Instance:
        """The instance as one generation behind its proxy runs it: ``PORT``, ``${port}`` and its
        health check on ``private_port``; every other service still sees the public port."""
        ports = self.ports
        return _instance(self.stack, inst.service, inst.name, inst.index, inst.port, private_port, ports,
                         _service_ports(self.stack, ports), self.environ, self.color)

    def by_name(self) -> dict[str, Instance]:
        return {i.name: i for i in self.instances}

    def of_service(self, name: str) -> list[Instance]:
        return [i for i in self.instances if i.service.name == name]


def same_program(cmd: str | tuple[str, ...], holder_cmdline: str | None) -> bool:
    """Whether a holder's command line runs the same program as a service's cmd
    (compared by the program's base name, skipping ``exec``/``env`` and interpreters' flags)."""
    import os
    import shlex

    if not holder_cmdline:
        return False
    try:
        words = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    except ValueError:
        words = str(cmd).split()
    words = [w for w in words if w not in ("exec", "env") and "=" not in w.split("/")[0]]
    if not words:
        return False
    theirs = holder_cmdline.split()

    def key(ws: list[str]) -> list[str]:
        # "python app.py" and "/usr/bin/python3 app.py" are the same program: compare the
        # interpreter family and the first argument that is not a flag.
        base = os.path.basename(ws[0]).rstrip("0123456789.") or ws[0]
        rest = [os.path.basename(w) for w in ws[1:] if not w.startswith("-")][:1]
        return [base] + rest

    return key(words) == key(theirs)


def plan_ports(
    stack: Stack,
    names: Iterable[str],
    world: PortWorld,
    strategy: Strategy | None = None,
    keep: Mapping[str, int] | None = None,
) -> dict[str, PortChoice]:
    """Choose a port for every instance of the named services, in start order.

    ``keep`` maps instance names to ports they already hold (a running stack): those stay.
    """
    strategy = strategy or stack.strategy
    keep = keep or {}
    chosen: dict[str, PortChoice] = {}
    used: set[int] = set(keep.values())
    order = [n for level in stack.levels(set(names)) for n in level]
    for sname in order:
        svc = stack.services[sname]
        for idx, inst in enumerate(svc.instances, 1):
            if svc.port is None:
                chosen[inst] = PortChoice(None, None)
                continue
            if idx > 1 and svc.handoff is not Handoff.NONE:  # every instance behind the one public port
                chosen[inst] = chosen[f"{svc.name}.1"]
                continue
            if inst in keep:
                chosen[inst] = PortChoice(svc.port + idx - 1 if svc.port else 0, keep[inst])
                continue
            if svc.port == 0:
                port = world.os_port()
                while port in used:
                    port = world.os_port()
                used.add(port)
                chosen[inst] = PortChoice(0, port, "0 asks the OS for a free port")
                continue
            choice = _choose(svc, idx, world, strategy, used)
            if choice.port is not None:
                used.add(choice.port)
            chosen[inst] = choice
    return chosen


def _choose(svc: Service, idx: int, world: PortWorld, strategy: Strategy, used: set[int]) -> PortChoice:
    base = svc.port or 0
    preferred = base + idx - 1
    if preferred > 65535:
        preferred = base
    candidates = [preferred] + [p for p in (base, *svc.fallback) if p != preferred]
    first_holder: Holder | None = None
    first_reason = ""
    for i, port in enumerate(candidates):
        if port in used:
            if i == 0:
                first_reason = f"{port} is assigned to another instance of this stack"
            continue
        if world.is_free(port):
            if i == 0:
                return PortChoice(preferred, port)
            reason = f"{first_reason} -> moved to {port}" if first_reason else f"moved to {port}"
            return PortChoice(preferred, port, reason, first_holder, Action.MOVED)
        if i == 0:  # only the preferred port's holder matters: look no further
            holder = world.holder(port)
            first_holder = holder
            who = holder.describe() if holder else "an unknown process"
            first_reason = f"{port} held by {who}"
            action = decide(svc, holder, strategy)
            if action:
                verb = "will be reclaimed" if action == Action.RECLAIM else "holder will be stopped"
                return PortChoice(preferred, port, f"{first_reason} -> {verb}", holder, action)
    tried = f"{candidates[0]}" + (f" and {len(candidates) - 1} fallback{'s' if len(candidates) > 2 else ''}" if len(candidates) > 1 else "")
    return PortChoice(preferred, None, f"{first_reason or 'taken'}; no free port among {tried}", first_holder, Action.NONE)


def decide(svc: Service, holder: Holder | None, strategy: Strategy) -> str:
    """What the strategy does about a holder of a service's preferred port."""
    if holder is None or holder.pid is None or holder.protected or not holder.same_user:
        return Action.NONE
    if holder.cls == "ours-stale" and strategy in (Strategy.INTELLIGENT, Strategy.AGGRESSIVE):
        return Action.RECLAIM
    if holder.cls == "external" and strategy is Strategy.AGGRESSIVE and same_program(svc.cmd, holder.cmdline):
        return Action.STOP
    return Action.NONE


def build(
    stack: Stack,
    selected: set[str],
    ports: Mapping[str, PortChoice],
    environ: Mapping[str, str],
    color: bool | None = None,
) -> Plan:
    """The full plan for the selected services (see ``Stack.selection``)."""
    levels = tuple(tuple(level) for level in stack.levels(selected))
    service_ports = _service_ports(stack, ports)
    shared = ports_env(stack, ports, service_ports)  # the same for every instance: built once
    instances = []
    failures = []
    for svc, inst, idx in in_order(stack, levels):
        choice = ports.get(inst, PortChoice(None, None))
        if svc.port is not None and choice.port is None:
            failures.append(f"{inst}: {choice.reason or 'no port'}")
        instances.append(_instance(stack, svc, inst, idx, choice, choice.port, ports, service_ports,
                                   environ, color, shared))
    return Plan(stack, tuple(instances), levels, tuple(failures), environ, color)


def in_order(stack: Stack, levels: Iterable[Iterable[str]]) -> Iterable[tuple[Service, str, int]]:
    """(service, instance name, index) of every instance, in start order: a plan's order."""
    for level in levels:
        for sname in level:
            svc = stack.services[sname]
            for idx, inst in enumerate(svc.instances, 1):
                yield svc, inst, idx


def _service_ports(stack: Stack, ports: Mapping[str, PortChoice]) -> dict[str, int | None]:
    """Each service's port as others see it (its first instance's; the public one with a handoff)."""
    out = {}
    for svc in stack.services.values():
        first = ports.get(f"{svc.name}.1")
        out[svc.name] = first.port if first else None
    return out


def _instance(stack: Stack, svc: Service, name: str, idx: int, choice: PortChoice, own_port: int | None,
              ports: Mapping[str, PortChoice], service_ports: Mapping[str, int | None],
              environ: Mapping[str, str], color: bool | None, shared: Mapping[str, str] | None = None) -> Instance:
    """One instance resolved with ``own_port`` as its ``PORT`` and ``${port}`` (its private port
    behind a proxy; otherwise the planned one)."""
    env = instance_env(stack, svc, name, own_port, ports, service_ports, environ, color, shared)
    if svc.image is not None:
        return Instance(name, svc, idx, choice, env, (), resolve_health(stack, svc, own_port, service_ports, env),
                        container_run(stack, svc, name, own_port, ports, service_ports, environ, color))
    return Instance(name, svc, idx, choice, env, resolve_cmd(stack, svc, own_port, service_ports, env),
                    resolve_health(stack, svc, own_port, service_ports, env))


def inside_ports_env(stack: Stack, ports: Mapping[str, PortChoice],
                     service_ports: Mapping[str, int | None]) -> tuple[dict[str, str], dict[str, int | None], dict[str, str]]:
    """What a container is told of the other services: a container by its name on the stack's
    network and its ``container_port``, a process through the host gateway and its port.
    -> (NAME_PORT/NAME_HOST variables, each service's port, each service's host)"""
    out: dict[str, str] = {}
    sports: dict[str, int | None] = {}
    shosts: dict[str, str] = {}
    for other in stack.services.values():
        if other.image is not None:
            sports[other.name], shosts[other.name] = other.container_port, other.name
        else:
            sports[other.name], shosts[other.name] = service_ports.get(other.name), DOCKER_HOST_GATEWAY
        if other.port is None or sports[other.name] is None:
            continue
        pre = env_prefix(other.name)
        out[f"{pre}_PORT"], out[f"{pre}_HOST"] = str(sports[other.name]), shosts[other.name]
        if other.scale > 1:
            for i, oi in enumerate(other.instances, 1):
                c = ports.get(oi)
                if other.image is not None:
                    out[f"{env_prefix(oi)}_PORT"], out[f"{env_prefix(oi)}_HOST"] = str(other.container_port), \
                        container_alias(other.name, i)
                elif c is not None and c.port is not None:
                    out[f"{env_prefix(oi)}_PORT"], out[f"{env_prefix(oi)}_HOST"] = str(c.port), DOCKER_HOST_GATEWAY
    return out, sports, shosts


def container_alias(service: str, index: int) -> str:
    """An instance's own name on the stack's network (every instance also answers to the service's)."""
    return f"{service}-{index}"


def container_run(stack: Stack, svc: Service, name: str, publish: int | None, ports: Mapping[str, PortChoice],
                  service_ports: Mapping[str, int | None], environ: Mapping[str, str],
                  color: bool | None) -> ContainerRun:
    """A container instance's environment and command as seen from inside it: ``PORT`` is
    ``container_port``, ``${host}`` 0.0.0.0, other services as ``inside_ports_env`` says. The
    orchestrator's own environment is not passed in (an image has its own ``PATH``, ``HOME``...);
    ``$VAR`` in a value may still read it."""
    shared, sports, shosts = inside_ports_env(stack, ports, service_ports)
    own: dict[str, str] = {}
    if svc.container_port is not None:
        own[svc.port_env] = str(svc.container_port)
    own["REVOSTACK_SERVICE"] = name  # no REVOSTACK_STACK: the container's labels prove it ours, and a
    base: dict[str, str] = {}  # marker inside would let host-side sweeps signal its processes past the engine
    inside = ChainMap(own, shared, base)
    lookup = ChainMap(own, shared, base, environ)
    inside_stack = replace(stack, host=INSIDE_HOST)

    def resolve(ref: interp.Ref) -> str | None:
        if ref.is_stack_ref and ref.service:
            if ref.attr == "host":
                return shosts.get(ref.service)
            p = sports.get(ref.service)
            return None if p is None else str(p)
        return _resolver(inside_stack, svc, svc.container_port, sports, lookup)(ref)

    _layers(stack, svc, own, base, inside, resolve, color)
    if isinstance(svc.cmd, str):
        cmd: str | tuple[str, ...] = interp.expand(svc.cmd, resolve, shell=True)
    else:
        cmd = tuple(interp.expand(a, resolve) for a in svc.cmd)
    return ContainerRun(dict(inside), cmd, publish, svc.container_port)


def _resolver(stack: Stack, svc: Service | None, port: int | None, service_ports: Mapping[str, int | None],
              env: Mapping[str, str]) -> Callable[[interp.Ref], str | None]:
    def resolve(ref: interp.Ref) -> str | None:
        if ref.is_stack_ref:
            if ref.service == "":
                return stack.host if ref.attr == "host" else (None if port is None else str(port))
            if ref.attr == "host":
                return stack.host
            p = service_ports.get(ref.service or "")
            return None if p is None else str(p)
        if ref.var in env and not (env[ref.var] == "" and ref.text.startswith(f"${{{ref.var}:-")):
            return env[ref.var]  # ${VAR:-d} takes d when VAR is unset or empty, ${VAR-d} only when unset
        return ref.default

    return resolve


def ports_env(stack: Stack, ports: Mapping[str, PortChoice], service_ports: Mapping[str, int | None]) -> dict[str, str]:
    """``NAME_PORT`` and ``NAME_HOST`` of every service with a port (and of each instance of a
    scaled one): what every instance is told of the others."""
    out: dict[str, str] = {}
    for other in stack.services.values():
        if other.port is None:
            continue
        first = service_ports.get(other.name)
        if first is not None:
            out[f"{env_prefix(other.name)}_PORT"] = str(first)
            out[f"{env_prefix(other.name)}_HOST"] = stack.host
        if other.scale > 1:
            for oi in other.instances:
                c = ports.get(oi)
                if c is not None and c.port is not None:
                    out[f"{env_prefix(oi)}_PORT"] = str(c.port)
                    out[f"{env_prefix(oi)}_HOST"] = stack.host
    return out


def instance_env(
    stack: Stack,
    svc: Service,
    inst: str,
    port: int | None,
    ports: Mapping[str, PortChoice],
    service_ports: Mapping[str, int | None],
    environ: Mapping[str, str],
    color: bool | None = None,
    shared: Mapping[str, str] | None = None,
) -> Mapping[str, str]:
    """The environment of one instance, layered as docs/stackfile.md says (later wins).
    ``shared``: ``ports_env`` of the same plan, when the caller has it already.

    A view over three layers, not one dict: the instance's own variables, then ``shared`` (the
    same object for every instance of the plan), then the process environment with the env
    files and ``env`` tables. Every instance is told every other's port, so a flat copy each
    would hold services x services entries (1,000 services: ~50 MB); spawning a child makes
    the one flat copy it needs."""
    if shared is None:
        shared = ports_env(stack, ports, service_ports)
    own: dict[str, str] = {}
    if port is not None:
        own[svc.port_env] = str(port)
    own["REVOSTACK_STACK"] = stack.id
    own["REVOSTACK_SERVICE"] = inst
    base = dict(environ)
    env = ChainMap(own, shared, base)  # what an interpolated value sees: ours win, as below
    _layers(stack, svc, own, base, env, _resolver(stack, svc, port, service_ports, env), color)
    if stack.kind == "procfile":
        own["HONCHO_PROCESS_NAME"] = inst  # as honcho sets it
    return env


def _layers(stack: Stack, svc: Service, own: dict[str, str], base: dict[str, str], view: Mapping[str, str],
            resolve: Callable[[interp.Ref], str | None], color: bool | None) -> None:
    """Into ``base``: the env files and ``env`` tables, stack's then service's (later wins, a
    value interpolated against ``view``, which sees what is set before it); then what revostack
    adds unless already set. The same for a process and, seen from inside, a container."""
    for layer, interpolate in ((stack.dotenv, False), (stack.env, True), (svc.dotenv, False), (svc.env, True)):
        for key, value in layer.items():
            base[key] = interp.expand(value, resolve) if interpolate else value
    if "PYTHONUNBUFFERED" not in view:
        base["PYTHONUNBUFFERED"] = "1"
    if color is True:
        for key in ("FORCE_COLOR", "CLICOLOR_FORCE"):
            if key not in view:
                base[key] = "1"
    elif color is False:
        own["NO_COLOR"] = "1"


def resolve_cmd(stack: Stack, svc: Service, port: int | None, service_ports: Mapping[str, int | None],
                env: Mapping[str, str]) -> str | tuple[str, ...]:
    resolve = _resolver(stack, svc, port, service_ports, env)
    if isinstance(svc.cmd, str):
        return interp.expand(svc.cmd, resolve, shell=True)
    return tuple(interp.expand(a, resolve) for a in svc.cmd)


def resolve_health(stack: Stack, svc: Service, port: int | None, service_ports: Mapping[str, int | None],
                   env: Mapping[str, str]) -> Health | None:
    h = svc.health
    if h is None:
        return None
    host = stack.host
    if h.implicit and host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if h.implicit and port is not None:  # "${host}:${port}", without building a resolver for it
        return replace(h, target=f"{host}:{port}")
    resolve = _resolver(replace(stack, host=host) if host != stack.host else stack, svc, port, service_ports, env)
    return replace(h, target=interp.expand(h.target, resolve, shell=h.kind is HealthKind.CMD))


def secret_like(key: str) -> bool:
    k = key.upper()
    return any(word in k for word in ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL"))


LOOPBACK = ("127.", "::1", "localhost")


def reached_processes(stack: Stack, svc: Service) -> list[str]:
    """The process services (with a port) a container service depends on or names in its
    ``cmd``/``env`` (``${x.port}``, ``$X_HOST``...): it reaches them through the host gateway."""
    texts = list(svc.env.values()) + ([svc.cmd] if isinstance(svc.cmd, str) else list(svc.cmd))
    named = {d.name for d in svc.depends_on}
    prefixes = {f"{env_prefix(o.name)}_{end}": o.name for o in stack.services.values() for end in ("HOST", "PORT")}
    for text in texts:
        for ref in interp.references(text):
            if ref.is_stack_ref and ref.service:
                named.add(ref.service)
            elif ref.var in prefixes:
                named.add(prefixes[ref.var])
    return [n for n in stack.services if n in named and stack.services[n].image is None
            and stack.services[n].port is not None]


def loopback_warnings(stack: Stack, names: Iterable[str]) -> list[str]:
    """``check``: containers that reach a process the stack tells to listen on loopback."""
    if not stack.host.startswith(LOOPBACK):
        return []
    out = []
    for n in names:
        svc = stack.services[n]
        if svc.image is None:
            continue
        for p in reached_processes(stack, svc):
            out.append(f"warning: {n} (a container) reaches {p} through {DOCKER_HOST_GATEWAY}, but {p} is told to "
                       f"listen on {stack.host}, which a container cannot reach: make {p} listen on 0.0.0.0 "
                       f"(for the whole stack: [stack] host = \"0.0.0.0\")")
    return out

"""What a reload does to a running stack: the running plan against the one the Stackfile makes
now, service by service. Pure (layer 0): plans in, actions out.

Each service is compared on its planned definition — command, folder, environment after
interpolation, port, health check, dependencies, restart policy, watch globs, handoff, scale and
stop settings. A service whose own definition changed restarts; one whose definition is the same
but which was given something new by another (a ``NAME_PORT``, a ``NAME_HOST``) restarts as a
dependent; a service in only one of the plans is started or stopped; the rest is not touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from revostack.plan import Instance, Plan

# what is compared, by name, on each service and its first instance
_SERVICE_KEYS = ("cwd", "port", "fallback", "port_env", "restart", "max_restarts", "backoff", "watch", "watch_ignore",
                 "stop_signal", "stop_timeout", "pty", "handoff", "drain_timeout", "autostart")


@dataclass(frozen=True)
class Change:
    service: str
    kind: str  # "added" | "removed" | "changed" | "dependent" | "scaled"
    why: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.service} {self.kind}" + (f" ({', '.join(self.why)})" if self.why else "")


@dataclass(frozen=True)
class Reload:
    removed: tuple[str, ...]  # stop these, in reverse dependency order (of the running plan)
    added: tuple[str, ...]  # start these, in dependency order (of the new plan)
    restarted: tuple[str, ...]  # changed and dependents, in dependency order
    scaled: tuple[str, ...]  # only their number of instances changed
    changes: tuple[Change, ...]

    @property
    def empty(self) -> bool:
        return not self.changes

    def summary(self) -> str:
        """``reload: backend changed (env LOG_LEVEL), worker added, old removed``."""
        if self.empty:
            return "reload: nothing changed"
        return "reload: " + ", ".join(c.describe() for c in self.changes)


def diff(old: Plan, new: Plan) -> Reload:
    old_order = [n for level in old.levels for n in level]
    new_order = [n for level in new.levels for n in level]
    changes: dict[str, Change] = {}
    for name in new_order:
        if name not in old_order:
            changes[name] = Change(name, "added")
    for name in old_order:
        if name not in new_order:
            changes[name] = Change(name, "removed")
    for name in new_order:
        if name in changes:
            continue
        own, given = _compare(old, new, name)
        if own == ["scale"]:
            changes[name] = Change(name, "scaled", (f"scale {old.stack.services[name].scale} -> "
                                                    f"{new.stack.services[name].scale}",))
        elif own:
            changes[name] = Change(name, "changed", tuple(own))
        elif given:
            changes[name] = Change(name, "dependent", tuple(given))
    ordered = [changes[n] for n in new_order if n in changes] + \
              [changes[n] for n in reversed(old_order) if n in changes and changes[n].kind == "removed"]
    return Reload(
        removed=tuple(c.service for c in ordered if c.kind == "removed"),
        added=tuple(c.service for c in ordered if c.kind == "added"),
        restarted=tuple(c.service for c in ordered if c.kind in ("changed", "dependent")),
        scaled=tuple(c.service for c in ordered if c.kind == "scaled"),
        changes=tuple(ordered),
    )


def _compare(old: Plan, new: Plan, name: str) -> tuple[list[str], list[str]]:
    """(what changed in the service's own definition, what it was given that changed)."""
    a_svc, b_svc = old.stack.services[name], new.stack.services[name]
    own = [k for k in _SERVICE_KEYS if getattr(a_svc, k) != getattr(b_svc, k)]
    if a_svc.depends_on != b_svc.depends_on:
        own.append("depends_on")
    if a_svc.scale != b_svc.scale:
        own.append("scale")
    a, b = _first(old, name), _first(new, name)
    given: list[str] = []
    if a is not None and b is not None:
        # raw (as written) differs: its own definition; only resolved differs: what it was given
        for key, raw_a, raw_b, res_a, res_b in (("cmd", a_svc.cmd, b_svc.cmd, a.cmd, b.cmd),
                                                 ("health", a_svc.health, b_svc.health, a.health, b.health)):
            if raw_a != raw_b:
                own.append(key)
            elif res_a != res_b:
                given.append(key)
        raw = ({**old.stack.dotenv, **old.stack.env, **a_svc.dotenv, **a_svc.env},
               {**new.stack.dotenv, **new.stack.env, **b_svc.dotenv, **b_svc.env})
        provided = {**_provided(old), **_provided(new)}
        for key in sorted(set(a.env) | set(b.env)):
            if a.env.get(key) == b.env.get(key):
                continue
            if key in provided and key != a_svc.port_env:
                if _uses(b_svc, key, provided[key]):
                    given.append(key)  # another service's port or host, which it needs
                # else: every service carries every NAME_PORT; one that neither depends on that
                # service nor names it is not restarted for it
            elif raw[0].get(key) != raw[1].get(key) or key == a_svc.port_env:
                own.append(f"env {key}")
            else:
                given.append(key)  # the same text, interpolated from what changed elsewhere
    return own, given


def _first(plan: Plan, service: str) -> Instance | None:
    return next((i for i in plan.instances if i.service.name == service), None)


def _provided(plan: Plan) -> dict[str, str]:
    """The variables revostack gives every service about the others (NAME_PORT, NAME_HOST),
    each with the service it is about."""
    from revostack.stackfile import env_prefix

    out = {}
    for svc in plan.stack.services.values():
        for n in [svc.name, *svc.instances]:
            out[f"{env_prefix(n)}_PORT"] = out[f"{env_prefix(n)}_HOST"] = svc.name
    return out


def _uses(svc, key: str, other: str) -> bool:
    """Whether ``svc`` needs what ``key`` says of service ``other``: it depends on it, or its
    command, environment or health check refers to it (``${other.port}``, ``$OTHER_PORT``)."""
    from revostack import interp

    if any(d.name == other for d in svc.depends_on):
        return True
    texts = [svc.cmd] if isinstance(svc.cmd, str) else list(svc.cmd)
    texts += list(svc.env.values()) + ([svc.health.target] if svc.health else [])
    return any(ref.service == other or ref.var == key for t in texts for ref in interp.references(t))

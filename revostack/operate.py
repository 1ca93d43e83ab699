"""Changing a running stack: stop some services, scale one, apply a reloaded Stackfile.

Every change is a new plan applied to the supervisor: instances that are gone stop (reverse
dependency order), new ones start (their dependencies are waited for as at start-up), kept ones
take their new definition, and the services that must restart do (blue/green with a handoff).
Kept instances keep their ports: the new plan is made with the running ports held.
"""

from __future__ import annotations

import asyncio

from revostack import graph
from revostack.generations import State
from revostack.plan import Plan
from revostack.record import replace
from revostack.stackfile import Handoff


async def stop_services(sup, names: list[str], deps: bool = False) -> list[str]:
    """Stop the named services (and, with ``deps``, what depends on them: those first). They
    stay stopped until ``restart``."""
    services = graph.dependents(sup.stack.deps, set(names)) if deps else set(names)
    order = [n for level in reversed(sup.plan.levels) for n in level if n in services]
    done = []
    for sname in order:
        group = [st for st in sup.instances.values() if st.service == sname]
        await asyncio.gather(*(_halt(sup, st) for st in group))
        done += [st.name for st in group]
    sup.save_state()
    return done


async def _halt(sup, st) -> None:
    from revostack import generations

    st.held = True  # stopped on request: not a failure, and it does not end the stack
    st.console.end(f"{st.name} stopped on request")
    if st.task is not None and not st.task.done():
        st.task.cancel()
        await asyncio.gather(st.task, return_exceptions=True)
    await sup.stop_instance(st)
    await generations.stop_draining(sup, st)
    st.state = State.STOPPED
    st.health = None
    st.started.clear()
    st.healthy.clear()
    st.ended.set()


async def scale(sup, counts: dict[str, int]) -> dict[str, list[str]]:
    """Run ``counts[service]`` instances of each named service."""
    services = dict(sup.stack.services)
    for name, n in counts.items():
        services[name] = replace(services[name], scale=n)
    stack = replace(sup.stack, services=services)
    before = set(sup.instances)
    plan = await new_plan(sup, stack, {st.service for st in sup.instances.values()} | set(counts))
    await apply(sup, plan, restart=())
    return {"added": sorted(set(sup.instances) - before), "removed": sorted(before - set(sup.instances))}


async def new_plan(sup, stack, names: set[str]) -> Plan:
    """A plan for ``stack`` in which every running instance keeps its port."""
    from revostack import plan as planmod
    from revostack import probe

    selected = graph.closure(stack.deps, {n for n in names if n in stack.services})
    def same_ports(name: str) -> bool:  # declared as before: the running port stays
        a, b = sup.stack.services.get(name), stack.services.get(name)
        return a is not None and b is not None and (a.port, a.fallback) == (b.port, b.fallback)

    keep = {st.name: st.port for st in sup.instances.values() if st.port is not None and same_ports(st.service)}
    world = probe.ProbeWorld(stack.host, sup.rundir.ownership(running=True) if sup.rundir else None)
    ports = await asyncio.to_thread(planmod.plan_ports, stack, selected, world, None, keep)
    return planmod.build(stack, selected, ports, sup.plan.environ, sup.plan.color)


async def apply(sup, plan: Plan, restart: tuple[str, ...]) -> None:
    """Make the running stack follow ``plan``."""
    fresh = plan.by_name()
    gone = [st for st in sup.instances.values() if st.name not in fresh]
    gone.sort(key=lambda st: (-_level(sup.plan, st.service), -st.inst.index))  # dependents, highest index first
    for st in gone:
        await _halt(sup, st)
        del sup.instances[st.name]
    for name, st in sup.instances.items():
        st.inst = fresh[name]
        st.port = st.inst.port.port  # moved only when its declared port changed: it restarts then
    sup.plan, sup.stack = plan, plan.stack
    ports = {i.service.name: i.port.port for i in plan.instances}
    for name in list(sup.public):
        if ports.get(name) != sup.public[name].port or plan.stack.services[name].handoff is Handoff.NONE:
            sup.public.pop(name).close()
    await sup.open_public_ports_for(plan)
    for inst in plan.instances:
        if inst.name not in sup.instances:
            sup.add_instance(inst)
    if restart:
        sup.restart(list(restart), reason="the Stackfile changed")
    if sup.watch_changed is not None:
        sup.watch_changed.set()  # the watch starts again on what the stack is now
    sup.save_state()


def _level(plan: Plan, service: str) -> int:
    return next((i for i, level in enumerate(plan.levels) if service in level), 0)


async def reload(sup) -> dict:
    """Apply the Stackfile as it is now. An invalid one changes nothing: its problems come back."""
    from revostack import reconcile, stackfile
    from revostack.errors import ConfigError

    try:
        stack = await asyncio.to_thread(stackfile.load, sup.stack.path)
    except ConfigError as e:
        return {"ok": False, "error": str(e), "problems": [str(p) for p in e.problems], "invalid": True}
    running = {st.service for st in sup.instances.values()}
    names = stack.selection(None) | (running & set(stack.services))
    plan = await new_plan(sup, stack, names)
    if plan.failures:
        return {"ok": False, "error": "; ".join(plan.failures)}
    change = reconcile.diff(sup.plan, plan)
    sup.sink.system(change.summary())
    if not change.empty:
        await apply(sup, plan, restart=change.restarted)
    return {"ok": True, "summary": change.summary(), "changes": [c.describe() for c in change.changes]}

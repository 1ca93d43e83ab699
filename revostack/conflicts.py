"""Carrying out the port plan's conflict decisions before ``up`` spawns anything.

Also, before planning, the processes a dead earlier ``up`` of this stack left behind.
The planner (pure) decided, per instance, to keep, move, reclaim (our stale process) or stop
(aggressive: a same-user process running the same program). Here the stops happen — through
probe's guards only — every conflict is written to history.jsonl, the ports are reserved, and
an instance whose port could not be freed or reserved is planned again.
"""

from __future__ import annotations

from revostack import plan as planmod
from revostack import probe
from revostack.plan import Action, Plan, PortChoice
from revostack.stackfile import Handoff


def settle(plan: Plan, rundir, strategy, world, reservations: probe.Reservations, say) -> Plan:
    ownership = world.ownership
    changes: dict[str, PortChoice] = {}
    used = {i.port.port for i in plan.instances if i.port.port is not None}
    for inst in plan.instances:
        c = inst.port
        if inst.service.port is None:
            continue
        if inst.index > 1 and inst.service.handoff is not Handoff.NONE:  # shares instance 1's public port
            first = f"{inst.service.name}.1"
            if first in changes:
                changes[inst.name] = changes[first]
            continue
        if c.action in (Action.RECLAIM, Action.STOP) and c.holder is not None:
            ok = probe.stop_holder(c.holder, ownership, external=c.action == Action.STOP,
                                   timeout=inst.service.stop_timeout)
            ok = ok and _wait_free(world, c.port)
            record(rundir, inst.service.name, c.preferred, c.holder, strategy, c.action, "ok" if ok else "failed")
            if ok:
                say(f"{inst.name}: port {c.port} was held by {c.holder.describe()}: {c.action}, port taken back")
                c = PortChoice(c.preferred, c.port, f"{c.port} was held by {c.holder.describe()} -> {c.action}", c.holder, c.action)
                changes[inst.name] = c
            else:
                c = _replan(inst, world, used, f"could not stop {c.holder.describe()}")
                changes[inst.name] = c
                record(rundir, inst.service.name, inst.port.preferred, inst.port.holder, strategy,
                       Action.MOVED if c.port else "failed", f"-> {c.port}" if c.port else c.reason)
        elif c.action == Action.MOVED and c.holder is not None or (c.port is None and c.holder is not None):
            record(rundir, inst.service.name, c.preferred, c.holder, strategy,
                   Action.MOVED if c.port else "failed", f"-> {c.port}" if c.port else c.reason)
        if c.port is not None and c.port:
            if not reservations.reserve(c.port):
                c2 = _replan(inst, world, used, f"{c.port} was taken before it could be reserved")
                changes[inst.name] = c2
                if c2.port is not None:
                    reservations.reserve(c2.port)
            used.add(changes.get(inst.name, c).port)
    return plan.with_ports(changes) if changes else plan


def reclaim_leftovers(stack, rd, strategy, say) -> None:
    """Processes a dead earlier `up` of this stack left behind: stopped, unless the strategy is
    conservative (then they are left, and ports move around them)."""
    from revostack.stackfile import Strategy

    ownership = rd.ownership(running=False)
    found, notes = probe.leftovers(ownership)
    for n in notes:
        say(n)
    if not found:
        return
    if strategy is Strategy.CONSERVATIVE:
        for p in found:
            say(f"pid {p.pid} ({p.name}) is left from an earlier run; conservative: not stopped")
        return
    # the declared ports each leftover holds: stopping it is then a port conflict of that service,
    # recorded as one (service, port, holder, "reclaimed"), so `history` says which port came back
    declared: dict[int, str] = {}
    for svc in stack.services.values():
        if svc.port:
            for idx in range(1, svc.scale + 1):
                declared.setdefault(svc.port + idx - 1, svc.name)
            for p in svc.fallback:
                declared.setdefault(p, svc.name)
    held: dict[int, list[tuple[int, str]]] = {}
    for port, entries in probe.listeners().items():
        for ip, pid in entries:
            if port in declared and pid is not None and probe.conflicts(ip, stack.host) \
                    and (port, declared[port]) not in held.get(pid, []):
                held.setdefault(pid, []).append((port, declared[port]))
    holders = {p.pid: probe.describe(p.pid, ownership) for p in found}
    results = probe.terminate([p.pid for p in found], 15, stack.stop_timeout)
    names = {p.pid: p.name for p in found}
    for pid, killed in results:
        say(f"stopped pid {pid} ({names[pid]}) left from an earlier run" + (" (killed)" if killed else ""))
        holder = holders[pid]
        if holder.pid is None:  # it ended meanwhile: what is known of it
            holder = planmod.Holder(pid, name=names[pid], cls="ours-stale")
        for port, service in held.get(pid, []):
            ok = _wait_free(probe.ProbeWorld(stack.host), port)  # the socket may close a moment later
            record(rd, service, port, holder, strategy, "reclaimed",
                   ("ok" if ok else "failed") + (" (killed)" if killed else ""))
        if not held.get(pid):
            record(rd, None, None, holder, strategy, "stopped", "killed" if killed else "stopped")


def _wait_free(world, port: int, timeout: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if world.is_free(port):
            return True
        time.sleep(0.02)
    return False


def _replan(inst, world, used: set[int], why: str) -> PortChoice:
    pref = inst.port.preferred
    port = next_free(inst, world, used | {inst.port.port})
    if port is None:
        return PortChoice(pref, None, f"{why}; no free fallback", inst.port.holder, Action.NONE)
    used.add(port)
    return PortChoice(pref, port, f"{why} -> moved to {port}", inst.port.holder, Action.MOVED)


def record(rundir, service, port, holder, strategy, action, result) -> None:
    if rundir is None:
        return
    try:
        rundir.append_history({
            "service": service, "port": port,
            "holder": holder.to_json() if holder is not None else None,
            "class": holder.cls if holder is not None else "unknown",
            "strategy": getattr(strategy, "value", strategy), "action": action, "result": result,
        })
    except OSError:
        pass


def next_free(inst, world, used: set[int]) -> int | None:
    """For migration while running: the first free candidate port not used by the stack."""
    svc = inst.service
    for port in [p for p in (svc.port, *svc.fallback) if p]:
        if port not in used and world.is_free(port):
            return port
    return None


async def migrate(sup, st) -> bool:
    """If the instance died because its port is in use, move it to the next free fallback,
    restart it there at once, and restart the services that depend on it (new NAME_PORT)."""
    import asyncio

    tail = sup.sink.tail(st.name).decode("utf-8", "replace").lower()
    said_in_use = any(w in tail for w in ("address already in use", "eaddrinuse", "address in use",
                                          "port is already in use", "port already in use"))
    port = st.port
    world = probe.ProbeWorld(sup.stack.host, sup.rundir.ownership(running=True) if sup.rundir else None)
    if not said_in_use:
        if await asyncio.to_thread(world.is_free, port):
            return False
    holder = await asyncio.to_thread(world.holder, port)
    if holder is not None and holder.pid is not None and holder.cls in ("ours-running",):
        return False  # held by this stack itself (e.g. a grandchild still closing): not a conflict
    used = {o.port for o in sup.instances.values() if o.port is not None and o is not st}
    used.add(port)
    new = await asyncio.to_thread(next_free, st.inst, world, used)
    who = holder.describe() if holder else "another process"
    if new is None:
        sup.sink.system(f"{st.name}: port {port} is in use by {who}, and no fallback is free")
        record(sup.rundir, st.service, port, holder, sup.options.strategy, "failed", "no free fallback")
        return False
    reason = f"{port} held by {who} -> moved to {new}"
    sup.sink.system(f"{st.name}: port {port} is in use by {who}: moved to {new}")
    record(sup.rundir, st.service, port, holder, sup.options.strategy, Action.MOVED, f"-> {new}")
    sup.plan = sup.plan.with_ports({st.name: PortChoice(st.inst.port.preferred, new, reason, holder, Action.MOVED)})
    fresh = sup.plan.by_name()
    for other in sup.instances.values():
        other.inst = fresh[other.name]
    st.port = new
    st.restarts += 1
    sup.save_state()
    dependents = [n for n, svc in sup.stack.services.items()
                  if any(d.name == st.service for d in svc.depends_on)
                  and any(o.service == n for o in sup.instances.values())]
    if dependents:
        sup.sink.system(f"restarting {', '.join(dependents)} for the new {st.inst.service.name} port")
        sup.restart(dependents, reason=f"{st.service} moved to port {new}")
    return True

"""The supervisor's side of container services: which container each helper runs (for ps),
removing what a killed helper left, the clean-up at the end, and the loopback warning.

Each container instance is run by a helper process (revostack.container) that the supervisor
supervises like any child; what is here only needs the engine now and then, so its calls run in
a worker thread. Imported only by stacks with an ``image``.
"""

from __future__ import annotations

import asyncio
import time

from revostack import engine, probe


def client(sup):
    """The supervisor's one Docker client (made on first use, in a worker thread)."""
    if sup.engine is None:
        sup.engine = engine.connect()
    return sup.engine


def follow(sup, gen) -> None:
    """Find the container a new generation's helper runs: ps shows it, checks wait for it."""
    gen.container_ready = asyncio.Event()
    task = asyncio.ensure_future(_find(sup, gen))
    sup.background.add(task)
    task.add_done_callback(sup.background.discard)


FIND_FAST = 0.02  # seconds between looks while a container starts (a start takes ~0.3 s), then
FIND_SLOW = 1.0  # slower, up to this


async def _find(sup, gen) -> None:
    """Ask the engine, by the helper's label, for its container until it runs (has a pid)."""
    delay = FIND_FAST
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 300 and not gen.child.protocol.exited.done():
            try:
                found = await asyncio.to_thread(lambda: engine.run_by(client(sup), sup.stack.id, gen.pid))
            except Exception:
                found = None
            if found is not None:
                gen.container = found
                sup.save_state()
                return
            await asyncio.sleep(delay)
            if time.monotonic() - t0 > 2:
                delay = min(delay * 1.5, FIND_SLOW)
    finally:
        gen.container_ready.set()  # found, or never will be: the checks go on either way


async def running(gen) -> None:
    """Until the generation's container runs (or the engine cannot say, or its helper exited)."""
    if gen.container_ready is None or gen.container_ready.is_set():
        return
    ready = asyncio.ensure_future(gen.container_ready.wait())
    try:
        await asyncio.wait({ready, gen.child.protocol.exited}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()


def remove_for_helper(sup, helper: int) -> None:
    """A helper that was killed cannot remove its container: remove it by its label."""
    def clean() -> None:
        try:
            engine.clean(client(sup), sup.stack.id, keep_network=True,
                         only=lambda c: (c.get("Labels") or {}).get(engine.LABEL_HELPER) == str(helper))
        except Exception:
            pass  # at the latest, the shutdown removes every container of the stack

    sup.loop.run_in_executor(None, clean)


async def clean_all(sup) -> None:
    """At the end of the stack: no container of it is left, and its network goes too."""
    try:
        names = await asyncio.to_thread(lambda: engine.clean(client(sup), sup.stack.id))
    except Exception as e:
        sup.sink.system(f"could not remove the stack's containers: {engine.reason(e)}")
        return
    for name in names:
        sup.sink.system(f"removed container {name}, left behind by the stack")


async def warn_loopback(sup, st) -> None:
    """A container reaches a process through the host gateway: say so when that process
    listens only on loopback (it never answers the container then)."""
    from revostack.plan import LOOPBACK, reached_processes

    names = reached_processes(sup.stack, st.inst.service)
    ports = {o.service: o.port for o in sup.instances.values() if o.service in names and o.port is not None}
    if not ports:
        return
    listening = await asyncio.to_thread(probe.listeners)
    for name, port in ports.items():
        ips = sorted({ip for ip, _ in listening.get(port, [])})
        if ips and all(ip.startswith(LOOPBACK) for ip in ips):
            sup.sink.system(f"warning: {st.service} (a container) reaches {name} through host.docker.internal:{port}, "
                            f"but it listens only on {', '.join(ips)}: a container cannot reach it there; "
                            "make it listen on 0.0.0.0")

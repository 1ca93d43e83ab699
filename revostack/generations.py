"""The generations of an instance: each spawn of it is one, and with a ``handoff`` two may run
side by side (blue/green).

A restart that is not the instance's own exit starts a new generation beside the serving one;
once the new one passes its readiness check it takes the new connections, and the old one
drains: it gets its stop signal when its connections have closed or after ``drain_timeout``.
A new generation that is not ready within ``start_period`` is stopped and the old keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import ChainMap
from dataclasses import dataclass, field
from enum import Enum

from revostack import probe, process, procs
from revostack.handoff import Backend, PublicPort
from revostack.health import Checker
from revostack.plan import Instance
from revostack.policy import describe_exit
from revostack.stackfile import Handoff, HealthKind, Restart

FAST_POLL = 0.01  # readiness is polled this fast for the first FAST_WINDOW seconds, then a
FAST_WINDOW = 0.2  # quarter slower each time up to the check's interval: a fast service is seen
POLL_GROWTH = 1.25  # within ~10 ms, a slow one ready at t by about 1.25 t
DRAIN_POLL = 0.05  # how often a socket-activated generation's open connections are counted


class State(str, Enum):
    WAITING = "waiting"  # for its dependencies
    STARTING = "starting"  # spawned, health check not passed yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    RUNNING = "running"  # spawned, no health check
    RESTARTING = "restarting"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(eq=False)
class Generation:
    """One spawn of an instance: the process, what it runs with, and its place behind the port."""

    inst: Instance  # as this generation runs it (its own private port behind a proxy)
    child: process.Child
    backend: Backend | None = None
    checker: Checker | None = None  # a `log` check, fed this generation's own output
    task: asyncio.Task | None = field(default=None, repr=False)  # its drain, once replaced
    container: dict | None = None  # with ``image``: the container its helper runs (id, name, pid), once running
    container_ready: asyncio.Event | None = field(default=None, repr=False)  # set once that is known (or never will be)

    @property
    def pid(self) -> int:
        return self.child.pid


async def spawn(sup, st) -> Generation:
    """Start a new generation of ``st``'s instance (OSError when it cannot be started)."""
    inst = st.inst
    public: PublicPort | None = sup.public.get(st.service)
    listen_fd = None
    port = None
    if public is not None and public.mode is Handoff.PROXY:
        port = probe.os_port(sup.stack.host or "0.0.0.0")  # a free port the OS picks, for this generation
        inst = sup.plan.behind_proxy(inst, port)
    env = inst.env
    if public is not None and public.mode is Handoff.SOCKET:
        env = {**env, "LISTEN_FDNAMES": st.service}
        listen_fd = public.fileno()
    checker = None
    if inst.health is not None and inst.health.kind is HealthKind.LOG:
        checker = Checker(inst.health, str(inst.cwd), inst.env, inst.container is not None)
    pty = inst.service.pty
    argv = procs.argv_for(inst.cmd) if inst.container is None else CONTAINER_ARGV
    if inst.container is not None:
        env = ChainMap({"REVOSTACK_CONTAINER": container_spec(sup.stack, inst, sup.options.strategy)}, env)
    child = await process.spawn(argv, str(inst.cwd), env, _feeder(sup.sink, st.name, checker),
                                pty=pty, listen_fd=listen_fd, on_raw=st.console.output,
                                winsize=st.console.winsize if pty else None)
    gen = Generation(inst, child, checker=checker)
    if inst.container is not None:
        from revostack import containers

        containers.follow(sup, gen)
    if public is not None:
        gen.backend = Backend(st.name, public.backend_host, port)
        public.add(gen.backend)
    return gen


CONTAINER_ARGV = [sys.executable, "-m", "revostack.container"]
CONTAINER_GRACE = 10.0  # seconds a container's helper gets beyond stop_timeout: the engine kills at stop_timeout


def container_spec(stack, inst: Instance, strategy=None) -> str:
    """What the helper (revostack.container) creates the container from, as JSON."""
    from revostack import engine
    from revostack.plan import container_alias

    svc, run = inst.service, inst.container
    return json.dumps({
        "instance": inst.name, "name": engine.container_name(stack.id, inst.name), "image": svc.image,
        "cmd": run.cmd if isinstance(run.cmd, str) else list(run.cmd), "env": dict(run.env),
        "labels": {engine.LABEL_STACK: stack.id, engine.LABEL_INSTANCE: inst.name, engine.LABEL_SERVICE: svc.name,
                   engine.LABEL_STACKFILE: str(stack.path.resolve())},
        "host": stack.host, "publish": run.publish, "container_port": run.port,
        "volumes": [{"source": v.source, "target": v.target, "read_only": v.read_only} for v in svc.volumes],
        "network": engine.network_name(stack.id), "aliases": [svc.name, container_alias(svc.name, inst.index)],
        "stop_signal": svc.stop_signal, "stop_timeout": svc.stop_timeout, "tty": svc.pty, "pull": svc.pull.value,
        "keep_stale": (strategy or stack.strategy).value == "conservative",
    })


def _feeder(sink, name: str, checker: Checker | None):
    """The output callback of one generation: to the sink, and to its own log check."""
    if checker is None:
        return lambda data: sink.feed(name, data)
    partial = bytearray()

    def feed(data: bytes) -> None:
        sink.feed(name, data)
        if checker.seen:
            return
        partial.extend(data)
        cut = partial.rfind(b"\n") + 1
        if cut:
            checker.feed(partial[:cut].decode("utf-8", "replace"))
            del partial[:cut]
        elif len(partial) > 65536:
            del partial[:-4096]

    return feed


async def readiness(checker: Checker, start_period: float, interval: float) -> tuple[bool, str]:
    """Poll a check until it passes (fast at first), or ``start_period`` passes."""
    t0 = time.monotonic()
    delay = FAST_POLL
    while True:
        ok, detail = await checker.check()
        if ok or time.monotonic() - t0 > start_period:
            return ok, detail
        await asyncio.sleep(delay)
        if time.monotonic() - t0 > FAST_WINDOW:
            delay = min(delay * POLL_GROWTH, interval)


async def watch_health(sup, st) -> str:
    """Readiness (fast polling, within start_period), then liveness every interval.
    Returns when the instance must be restarted: "unhealthy" or "not-ready"."""
    gen = st.gen
    h = gen.inst.health
    checker = checker_of(gen)
    public = sup.public.get(st.service)
    if not st.healthy.is_set():  # a generation that took over is ready already
        await running(gen)
        ok, detail = await readiness(checker, h.start_period, h.interval)
        if not ok:
            st.last_check = detail
            sup.sink.system(f"{st.name} not healthy within {h.start_period:g}s ({detail})")
            st.health = "unhealthy"
            return "not-ready"
        st.state = State.HEALTHY
        st.health = "healthy"
        st.stable_since = time.monotonic()
        sup.sink.system(f"{st.name} healthy ({detail})")
        st.healthy.set()
        if public is not None:
            public.set_ready(gen.backend, True)
        sup.save_state()
    if h.kind is HealthKind.LOG:
        return await forever()
    failures = 0
    while True:
        # in phase with every other service's checks: one wake-up per interval for all of
        # them, not one each (10 services idle: 63 -> 45 ms of CPU per 10 s)
        await asyncio.sleep(h.interval - time.monotonic() % h.interval)
        ok, detail = await checker.check()
        if ok:
            if failures:
                sup.sink.system(f"{st.name} healthy again ({detail})")
            failures = 0
            continue
        failures += 1
        st.last_check = detail
        if failures >= h.retries:
            st.state = State.UNHEALTHY
            st.health = "unhealthy"
            st.healthy.clear()
            if public is not None:
                public.set_ready(gen.backend, False)
            sup.save_state()
            sup.sink.system(f"{st.name} unhealthy: {failures} failed checks in a row ({detail})")
            if st.inst.service.restart is Restart.NO:
                return await forever()
            return "unhealthy"


async def running(gen: Generation) -> None:
    """A container's published port answers (its proxy accepts) before the container runs, and
    a connection it accepts then may wait a second on a dropped SYN: checks start once it runs."""
    if gen.inst.container is None:
        return
    from revostack import containers

    await containers.running(gen)


async def _ready_when_running(gen: Generation, h) -> tuple[bool, str]:
    await running(gen)
    return await readiness(checker_of(gen), h.start_period, h.interval)


def checker_of(gen: Generation) -> Checker:
    h = gen.inst.health
    return gen.checker if gen.checker is not None else Checker(h, str(gen.inst.cwd), gen.inst.env,
                                                               gen.inst.container is not None)


async def takeover(sup, st, why: str) -> bool:
    """Blue/green: a new generation beside the serving one. True when it took over."""
    old: Generation = st.gen
    public: PublicPort = sup.public[st.service]
    sup.sink.system(f"{st.name} starting a new generation beside pid {old.pid} ({why})")
    try:
        new = await spawn(sup, st)
    except OSError as e:
        sup.sink.system(f"{st.name} new generation could not start: {procs.why_not_started(e)}; pid {old.pid} keeps serving")
        return False
    h = new.inst.health
    ok, detail = True, "started"
    if h is not None:
        check = asyncio.ensure_future(_ready_when_running(new, h))
        exited = asyncio.ensure_future(new.child.wait())
        try:
            await asyncio.wait({check, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (check, exited):
                if not t.done():
                    t.cancel()
        if exited.done() and not (check.done() and check.result()[0]):
            ok, detail = False, f"it {describe_exit(exited.result())}"
        else:
            ok, detail = check.result()
    if not ok:
        wait = f"within {h.start_period:g}s " if h is not None and not detail.startswith("it ") else ""
        sup.sink.system(f"{st.name} pid {new.pid} not healthy {wait}({detail}): stopped; pid {old.pid} keeps serving")
        await stop(sup, st, new, quiet=True)
        return False
    if new.backend is not None:
        public.set_ready(new.backend, True)
    if old.backend is not None:
        public.set_ready(old.backend, False)
    st.gen = new
    st.draining.append(old)
    st.started_wall = time.time()
    sup.sink.system(f"{st.name} pid {new.pid} healthy: took over from pid {old.pid} ({detail})")
    st.console.notice(f"{st.name} pid {new.pid} took over from pid {old.pid}: typing goes to it now")
    old.task = asyncio.ensure_future(drain(sup, st, old))
    sup.save_state()
    return True


async def drain(sup, st, gen: Generation) -> None:
    """Let a replaced generation finish its open connections, then stop it."""
    public: PublicPort = sup.public[st.service]
    svc = st.inst.service
    t0 = time.monotonic()
    exited = asyncio.ensure_future(asyncio.shield(gen.child.protocol.exited))
    signalled = False
    try:
        async with asyncio.timeout(svc.drain_timeout):
            if public.mode is Handoff.PROXY:
                await asyncio.wait({exited, asyncio.ensure_future(gen.backend.idle.wait())},
                                   return_when=asyncio.FIRST_COMPLETED)
            else:
                signalled = await _quiesce(sup, st, gen, public.port, exited)
    except TimeoutError:
        pass
    except Exception as e:  # counting failed: stop it now rather than never
        sup.sink.system(f"{st.name} pid {gen.pid}: could not watch its connections ({e}); stopping it")
    finally:
        exited.cancel()
        procs.signal_group(gen.child.pgid, signal.SIGCONT)  # never leave it frozen
    waited = time.monotonic() - t0
    code = await stop(sup, st, gen, quiet=True, signalled=signalled)
    how = "after its connections closed" if waited < svc.drain_timeout else f"after drain_timeout ({svc.drain_timeout:g}s)"
    sup.sink.system(f"{st.name} pid {gen.pid} (replaced) stopped {how}"
                    + (f": {describe_exit(code)}" if code is not None else ""))
    if gen in st.draining:
        st.draining.remove(gen)
    sup.save_state()


async def _quiesce(sup, st, gen: Generation, port: int, exited: asyncio.Future) -> bool:
    """Socket activation: the old generation shares the listening queue with the new one, so it
    keeps accepting until it stops. Freeze its group (SIGSTOP), count the connections it holds,
    and send the stop signal only while it is frozen holding none — a connection waiting in the
    queue then goes to the new generation. Otherwise let it run a moment and look again.
    True when the stop signal was sent."""
    from revostack import probe

    pgid = gen.child.pgid
    while not exited.done():
        procs.signal_group(pgid, signal.SIGSTOP)
        await _frozen(pgid)
        busy = await asyncio.to_thread(probe.established, gen.pid, port)
        if not busy:
            procs.signal_group(pgid, st.inst.service.signal_number)
            procs.signal_group(pgid, signal.SIGCONT)
            return True
        procs.signal_group(pgid, signal.SIGCONT)
        await asyncio.sleep(DRAIN_POLL)
    return False


async def _frozen(pgid: int, timeout: float = 0.2) -> None:
    """Wait until every process of the group is stopped (SIGSTOP is delivered asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not procs.group_stopped(pgid):
        await asyncio.sleep(0.001)


async def stop(sup, st, gen: Generation, quiet: bool = False, signalled: bool = False) -> int | None:
    """Stop one generation's process group (stop signal, SIGKILL after stop_timeout) and reap
    it. Returns its exit code (None when it could not be reaped). ``signalled``: the stop signal
    was sent already (a second one makes some servers skip their graceful stop)."""
    svc = st.inst.service
    public = sup.public.get(st.service)
    if public is not None:
        public.remove(gen.backend)
    pgid = gen.child.pgid
    if procs.group_alive(pgid):
        if not quiet:
            sup.sink.system(f"sending {svc.stop_signal} to {st.name} (pid {gen.pid})")
        if not signalled:
            procs.signal_group(pgid, svc.signal_number)
        grace = CONTAINER_GRACE if svc.image is not None else 0.0
        if not await sup.wait_group(pgid, svc.stop_timeout + grace):
            procs.signal_group(pgid, signal.SIGKILL)
            if sup.stopping:
                sup.forced.append(st.name)
            sup.sink.system(f"{st.name} killed at once (second Ctrl-C)" if sup.kill_now.is_set()
                            else f"{st.name} did not stop within {svc.stop_timeout:g}s: killed")
            await sup.wait_group(pgid, 5.0, allow_kill_now=False)
    code = None
    try:
        async with asyncio.timeout(2.0):
            code = await gen.child.wait()
    except TimeoutError:
        return None
    finally:
        gen.child.close()
        sup.container_gone(st, gen.pid, code)
    return code


async def stop_draining(sup, st) -> None:
    """At shutdown: the replaced generations still draining stop now."""
    for gen in list(st.draining):
        if gen.task is not None:
            gen.task.cancel()
        await stop(sup, st, gen, quiet=True)
    st.draining.clear()


async def forever() -> str:
    await asyncio.Event().wait()
    return ""

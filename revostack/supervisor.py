"""The orchestration: one asyncio task per instance, one stop Event, clean shutdown.

Each instance task waits for its dependencies' conditions, spawns its child in a new session,
runs its health check, waits for the exit (or a restart request) and lets the restart policy
decide what happens next. Signals only set Events. All state lives on the loop thread.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Iterable

from revostack import conflicts, generations, graph, policy, probe, process, procs
from revostack.connect import Console
from revostack.generations import Generation, State
from revostack.handoff import PublicPort
from revostack.plan import Instance, Plan
from revostack.sink import Sink
from revostack.stackfile import Condition, Handoff, Restart

ENDED = {State.COMPLETED, State.FAILED, State.STOPPED}
TRIM_AFTER = 2.0  # seconds after a spawn before the C heap's free pages are given back


@dataclass
class InstanceState:
    inst: Instance
    tracker: policy.RestartTracker
    state: State = State.WAITING
    gen: Generation | None = None  # the serving generation
    draining: list[Generation] = field(default_factory=list)  # replaced ones, finishing their connections
    port: int | None = None  # the assigned port (the public one with a handoff)
    restarts: int = 0
    started_wall: float | None = None
    stable_since: float | None = None
    health: str | None = None
    last_check: str | None = None  # what the last failed check said
    returncode: int | None = None
    ever_started: bool = False
    task: asyncio.Task | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    healthy: asyncio.Event = field(default_factory=asyncio.Event)
    completed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    restart_request: asyncio.Event = field(default_factory=asyncio.Event)
    restart_reason: str = ""
    stopped_by_us: bool = False  # the current exit was asked for (stop, restart, unhealthy)
    held: bool = False  # stopped by `revostack stop`: stays stopped until `restart`
    console: Console = field(default_factory=Console)  # its output and input for `revostack connect`

    @property
    def child(self) -> process.Child | None:
        return self.gen.child if self.gen is not None else None

    @property
    def name(self) -> str:
        return self.inst.name

    @property
    def service(self) -> str:
        return self.inst.service.name


@dataclass
class Options:
    abort_on_exit: bool = False
    watch: bool = True
    strategy: object = None
    detached: bool = False  # `up -d`: no terminal, SIGHUP does not stop the stack


class Supervisor:
    def __init__(self, plan: Plan, sink: Sink, rundir=None, options: Options | None = None, reservations=None,
                 unavailable: dict[str, str] | None = None):
        self.plan = plan
        self.unavailable = dict(unavailable or {})  # services that cannot start, with why (an image not had)
        self.reservations = reservations
        self.stack = plan.stack
        self.sink = sink
        self.rundir = rundir
        self.options = options or Options()
        self.instances: dict[str, InstanceState] = {}
        for inst in plan.instances:
            self._state_for(inst)
        self.stop_event = asyncio.Event()
        self.kill_now = asyncio.Event()
        self.stopping = False
        self.stop_reason: str | None = None
        self.signal_received: int | None = None
        self.any_failed = False
        self.started_at = time.time()
        self._state_dirty = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.public: dict[str, PublicPort] = {}  # service -> its public port, with a handoff
        self.watch_changed: asyncio.Event | None = None  # set when a reload changes what to watch
        self.forced: list[str] = []  # instances killed after their stop_timeout during the shutdown
        self.swept: list[tuple[int, str]] = []  # processes that escaped their group, killed at the end
        self.stopped = asyncio.Event()  # the shutdown is over (what `down` waits for)
        self._stop_waiters: set[asyncio.Task] = set()
        self._trim_scheduled = False
        self.engine = None  # a Docker client, made when a container service needs one (revostack.containers)
        self.background: set[asyncio.Task] = set()  # fire-and-forget tasks, held until done

    def _state_for(self, inst: Instance) -> InstanceState:
        svc = inst.service
        tracker = policy.RestartTracker(svc.restart, svc.max_restarts, svc.backoff, _stable_after())
        st = self.instances[inst.name] = InstanceState(inst, tracker, port=inst.port.port)
        self.sink.add(inst.name, svc.name)
        return st

    def add_instance(self, inst: Instance) -> InstanceState:
        """A new instance of the running stack (scale, reload): it starts once its dependencies
        have reached their conditions."""
        st = self._state_for(inst)
        st.task = asyncio.create_task(self.lifecycle(st))
        return st

    # -- the whole run ----------------------------------------------------------------------
    async def run(self) -> int:
        self.loop = asyncio.get_running_loop()
        self.sink.loop = self.loop
        procs.become_subreaper()
        if self.options.detached:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # no terminal to lose: a stray HUP changes nothing
        for sig in (signal.SIGINT, signal.SIGTERM) + (() if self.options.detached else (signal.SIGHUP,)):
            self.loop.add_signal_handler(sig, self._on_signal, sig)
        server = None
        if self.rundir is not None:
            from revostack import control

            server = await control.serve(self, self.rundir.socket_path)
        await self.open_public_ports_for(self.plan)
        watcher = None
        if self.options.watch and (self.stack.files or any(st.inst.service.watch for st in self.instances.values())):
            from revostack import watch

            watcher = asyncio.create_task(watch.run(self))
        self.save_state()
        for st in self.instances.values():
            st.task = asyncio.create_task(self.lifecycle(st))
        try:
            await self.stop_event.wait()
        finally:
            await self.shutdown()
            if watcher is not None:
                watcher.cancel()
            if server is not None:
                server.close()
                try:
                    os.unlink(self.rundir.socket_path)
                except OSError:
                    pass
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self.loop.remove_signal_handler(sig)  # False for one never added
            self.stopped.set()
            waiting = [t for t in self._stop_waiters if not t.done()]
            if waiting:  # a `down` waits for the summary: let it be written
                await asyncio.wait(waiting, timeout=2.0)
        return self.exit_code()

    async def stop_and_wait(self, reason: str) -> dict:
        """Stop the stack and return, once it is stopped, what happened (for `down`)."""
        before = {st.name: _shown_pid(st) for st in self.instances.values()}
        failed = [st.name for st in self.instances.values() if st.state is State.FAILED]
        self._stop_waiters.add(asyncio.current_task())
        self.request_stop(reason)
        await self.stopped.wait()
        return {"pid": os.getpid(), "instances": before, "failed": failed, "forced": list(self.forced),
                "swept": [list(x) for x in self.swept]}

    async def open_public_ports_for(self, plan: Plan) -> None:
        """A handoff's public port listens from now until the stack stops (the socket reserved
        since planning, handed over)."""
        for inst in plan.instances:
            svc = inst.service
            if svc.handoff is Handoff.NONE or svc.name in self.public or inst.port.port is None:
                continue
            port = inst.port.port
            sock = self.reservations.take(port) if self.reservations is not None else None
            if sock is None:
                sock = probe.Reservations(self.stack.host)
                if not sock.reserve(port):
                    raise OSError(f"{svc.name}: public port {port} could not be bound")
                sock = sock.take(port)
            hold = svc.health.start_period if svc.health is not None else 60.0
            self.public[svc.name] = pp = PublicPort(svc, sock, self.stack.host, hold)
            await pp.open()

    def exit_code(self) -> int:
        return 1 if self.any_failed else 0

    def _on_signal(self, sig: int) -> None:
        if self.stopping or self.stop_event.is_set():
            if sig == signal.SIGINT:
                self.kill_now.set()  # a second Ctrl-C: kill at once
            return
        self.signal_received = sig
        self.sink.system(f"{signal.Signals(sig).name} received, stopping")
        self.request_stop(f"{signal.Signals(sig).name}")

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop_event.set()

    def _check_all_ended(self) -> None:
        """When every instance has ended for good by itself, there is nothing left to run: stop.
        (Instances stopped with `revostack stop` wait for a `restart`.)"""
        if not self.stopping and all(st.ended.is_set() for st in self.instances.values()) \
                and not any(st.held for st in self.instances.values()):
            self.request_stop("all services ended")

    # -- one instance -----------------------------------------------------------------------
    async def lifecycle(self, st: InstanceState) -> None:
        while True:
            if not await self.wait_dependencies(st):
                return
            st.restart_request.clear()
            if not await self.start(st):
                return
            outcome, code = await self.supervise(st)
            while outcome == "replaced":  # blue/green: the new generation is supervised from here
                outcome, code = await self.supervise(st)
            if self.stopping:
                return
            if outcome == "restart":
                st.restarts += 1
                self.sink.system(f"{st.name} restarting ({st.restart_reason})")
                st.state = State.RESTARTING
                self.save_state()
                continue
            if outcome == "exit" and code != 0 and st.port is not None and st.inst.service.handoff is Handoff.NONE \
                    and await conflicts.migrate(self, st):
                continue
            decision = st.tracker.on_exit(code, st.stable_since, time.monotonic(), unhealthy=outcome != "exit")
            if decision.completed:
                st.completed.set()
                self._ended(st, State.COMPLETED)
                return
            if not decision.restart:
                if decision.failed:
                    self.sink.system(f"{st.name} failed: {decision.why}" + (
                        "" if st.inst.service.restart is Restart.NO else ", not restarting"))
                self._ended(st, State.FAILED if decision.failed else State.COMPLETED)
                if decision.failed:
                    self.any_failed = True
                return
            st.state = State.RESTARTING
            st.restarts += 1
            self.save_state()
            self.sink.system(f"{st.name} restarting in {decision.delay:g}s "
                             f"({st.tracker.count}/{st.inst.service.max_restarts} in a row)")
            if await self._sleep_or_request(st, decision.delay):
                return

    async def _sleep_or_request(self, st: InstanceState, delay: float) -> bool:
        """Sleep the backoff delay; a restart request cuts it short. True when stopping."""
        try:
            async with asyncio.timeout(delay):
                await st.restart_request.wait()
        except asyncio.TimeoutError:
            pass
        return self.stopping

    def _ended(self, st: InstanceState, state: State) -> None:
        st.state = state
        st.gen = None
        st.ended.set()
        st.console.end(f"{st.name} {state.value}: it will not start again by itself")
        self.save_state()
        self._check_all_ended()
        if self.options.abort_on_exit and not self.stopping:
            self.request_stop(f"{st.name} ended")

    async def wait_dependencies(self, st: InstanceState) -> bool:
        deps = st.inst.service.depends_on
        if not deps:
            return True
        st.state = State.WAITING
        for dep in deps:
            for other in self.instances.values():
                if other.service != dep.name:
                    continue
                ok, why = await self.wait_condition(other, dep.condition)
                if not ok:
                    self.sink.system(f"{st.name} not started: {other.name} {why}")
                    self._ended(st, State.FAILED)
                    self.any_failed = True
                    return False
        return True

    async def wait_condition(self, dep: InstanceState, cond: Condition) -> tuple[bool, str]:
        target = {Condition.STARTED: dep.started, Condition.HEALTHY: dep.healthy, Condition.COMPLETED: dep.completed}[cond]
        while not target.is_set():
            if dep.ended.is_set() and not target.is_set():
                if cond is Condition.STARTED and dep.ever_started:
                    return True
                return False, ("failed" if dep.state is State.FAILED else f"ended ({dep.state.value})") + \
                    f" before it was {cond.value if cond is not Condition.STARTED else 'started'}"
            waiters = [asyncio.ensure_future(target.wait()), asyncio.ensure_future(dep.ended.wait())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
        return True, ""

    async def start(self, st: InstanceState) -> bool:
        inst = st.inst
        if self.reservations is not None and inst.service.handoff is Handoff.NONE:
            self.reservations.release(st.port)
        try:
            if st.service in self.unavailable:
                raise OSError(self.unavailable[st.service])
            if inst.service.image is not None and inst.index == 1:
                from revostack import containers

                await containers.warn_loopback(self, st)
            st.gen = await generations.spawn(self, st)
        except OSError as e:
            self.sink.system(f"{st.name} could not start: {procs.why_not_started(e)}")
            self._ended(st, State.FAILED)
            self.any_failed = True
            return False
        self._trim_soon()
        st.ever_started = True
        st.stopped_by_us = False
        st.started_wall = time.time()
        st.returncode = None
        st.healthy.clear()
        st.completed.clear()
        st.state = State.STARTING if inst.health else State.RUNNING
        st.stable_since = None if inst.health else time.monotonic()
        st.health = "starting" if inst.health else None
        port = f", port {st.port}" if st.port is not None else ""
        if st.gen.backend is not None and st.gen.backend.port is not None:
            port += f" via private port {st.gen.backend.port}"
        self.sink.system(f"{st.name} started (pid={st.child.pid}{port})")
        st.console.notice(f"{st.name} started (pid {st.child.pid})")
        st.started.set()
        self.save_state()
        return True

    def _trim_soon(self) -> None:
        """Once the spawns of a burst are over, return the memory their environments used."""
        if not self._trim_scheduled and self.loop is not None:
            self._trim_scheduled = True
            self.loop.call_later(TRIM_AFTER, self._trim)

    def _trim(self) -> None:
        self._trim_scheduled = False
        procs.trim_memory()

    async def supervise(self, st: InstanceState) -> tuple[str, int | None]:
        """Wait for the child's exit, a failed health check or a restart request.
        -> ("exit", code) | ("unhealthy", None) | ("restart", None)"""
        child = st.child
        assert child is not None
        exit_task = asyncio.ensure_future(child.wait())
        tasks = {exit_task}
        health_task = None
        if st.inst.health is not None:
            health_task = asyncio.ensure_future(generations.watch_health(self, st))
            tasks.add(health_task)
        request = asyncio.ensure_future(st.restart_request.wait())
        tasks.add(request)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
        if exit_task in done:
            code = exit_task.result()
            self.container_gone(st, child.pid, code)
            self._exited(st, code)
            return "exit", code
        if self.stopping:
            return "exit", None
        if st.inst.service.handoff is not Handoff.NONE and st.child is not None:
            why = st.restart_reason if request in done else "unhealthy"
            st.restart_request.clear()
            if await generations.takeover(self, st, why):
                st.restarts += 1
                st.state, st.health, st.stable_since = State.HEALTHY, "healthy", time.monotonic()
            return "replaced", None  # taken over, or not: the serving generation goes on
        if request in done:
            await self.stop_instance(st, quiet=True)
            return "restart", None
        await self.stop_instance(st)
        return "unhealthy", None

    def _exited(self, st: InstanceState, code: int) -> None:
        st.returncode = code
        if not st.draining:
            self.sink.end(st.name)
        if st.gen is not None:
            st.gen.child.close()
            if st.service in self.public:
                self.public[st.service].remove(st.gen.backend)
        st.gen = None
        if self.stopping or st.restart_request.is_set() or st.stopped_by_us:
            self.sink.system(f"{st.name} stopped ({policy.describe_exit(code)})")
        else:
            self.sink.system(f"{st.name} {policy.describe_exit(code)}")
        st.console.notice(f"{st.name} {policy.describe_exit(code)}")
        st.started.clear()
        st.healthy.clear()
        if st.state is State.HEALTHY or st.state is State.RUNNING or st.state is State.STARTING:
            st.state = State.STOPPED if self.stopping else st.state
        self.save_state()

    # -- stopping ----------------------------------------------------------------------------
    async def stop_instance(self, st: InstanceState, quiet: bool = False) -> None:
        """Stop the serving generation: stop signal to the group, SIGKILL after stop_timeout."""
        gen = st.gen
        if gen is None:
            return
        st.stopped_by_us = True
        code = await generations.stop(self, st, gen, quiet)
        if st.gen is gen and code is not None:
            self._exited(st, code)

    async def wait_group(self, pgid: int, timeout: float, allow_kill_now: bool = True) -> bool:
        """Wait until no process of the group is left. False on timeout (or a second Ctrl-C)."""
        deadline = time.monotonic() + timeout
        delay = 0.001  # a child usually dies within a millisecond of its signal
        while procs.group_alive(pgid):
            procs.reap_orphans()
            if not procs.group_alive(pgid):
                break
            if time.monotonic() >= deadline or (allow_kill_now and self.kill_now.is_set()):
                return False
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))  # no overshoot of stop_timeout
            delay = min(delay * 2, 0.05)
        return True

    async def shutdown(self) -> None:
        self.stopping = True
        for pp in self.public.values():  # no new connection from now on
            pp.close_listener()
        for st in self.instances.values():
            st.console.end("the stack is stopping")
        for st in self.instances.values():
            if st.task is not None and not st.task.done():
                st.task.cancel()
        await asyncio.gather(*(st.task for st in self.instances.values() if st.task), return_exceptions=True)
        for level in reversed(self.plan.levels):
            group = [st for st in self.instances.values() if st.service in level]
            await asyncio.gather(*(self.stop_instance(st) for st in group),
                                 *(generations.stop_draining(self, st) for st in group))
            for st in group:
                if st.state not in ENDED:
                    st.state = State.STOPPED
        for pp in self.public.values():
            pp.close()
        await self.sweep()
        if any(s.image is not None for s in self.stack.services.values()):
            from revostack import containers

            await containers.clean_all(self)
        if self.reservations is not None:
            self.reservations.release_all()
        self.sink.close()
        self.save_state(now=True, final=True)

    async def sweep(self) -> None:
        """Kill whatever escaped its group: our descendants and processes carrying our marker."""
        leftovers = await asyncio.to_thread(probe.kill_escaped, self.stack.id)
        if not leftovers:
            return
        self.swept += leftovers
        for pid, name in leftovers:
            self.sink.system(f"killed pid {pid} ({name}), left behind by the stack")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            procs.reap_orphans()
            if not any(procs.is_alive(pid) for pid, _ in leftovers):
                break
            await asyncio.sleep(0.01)

    # -- containers (revostack/containers.py) ---------------------------------------------------
    def container_gone(self, st: InstanceState, helper: int, code: int | None) -> None:
        if st.inst.service.image is not None and (code is None or code < 0):
            from revostack import containers

            containers.remove_for_helper(self, helper)

    # -- requests from the control socket ------------------------------------------------------
    def restart(self, names: Iterable[str], deps: bool = False, reason: str = "requested") -> list[str]:
        services = set(names)
        if deps:
            services = graph.dependents(self.stack.deps, services)
        order = [n for level in self.plan.levels for n in level if n in services]
        done = []
        for sname in order:
            for st in self.instances.values():
                if st.service != sname:
                    continue
                st.restart_reason = reason
                if st.inst.service.handoff is Handoff.NONE:  # with one, the serving generation stays ready
                    st.healthy.clear()
                st.completed.clear()
                if st.task is None or st.task.done():
                    st.held = False
                    st.ended.clear()
                    st.tracker.count = 0
                    st.state = State.WAITING
                    st.task = asyncio.create_task(self.lifecycle(st))
                else:
                    st.restart_request.set()
                done.append(st.name)
        return done

    # -- state ---------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {
            "stack": self.stack.id,
            "name": self.stack.name,
            "stackfile": str(self.stack.path.resolve()),
            "pid": os.getpid(),
            "create_time": procs.create_time(os.getpid()),
            "started_at": self.started_at,
            "instances": {
                st.name: {
                    "service": st.service,
                    "pid": st.child.pid if st.child else None,
                    "pgid": st.child.pgid if st.child else None,
                    "create_time": st.child.create_time if st.child else None,
                    "port": st.port,
                    "preferred": st.inst.port.preferred,
                    "reason": st.inst.port.reason,
                    "env": st.inst.service.port_env,
                    "state": st.state.value,
                    "health": st.health,
                    "restarts": st.restarts,
                    "started_at": st.started_wall if st.child else None,
                    "last_exit": None if st.returncode is None else policy.describe_exit(st.returncode),
                    "last_check": st.last_check,
                    **self._handoff_fields(st),
                    **self._container_fields(st),
                }
                for st in self.instances.values()
            },
        }

    def _container_fields(self, st: InstanceState) -> dict:
        svc = st.inst.service
        if svc.image is None:
            return {}
        c = st.gen.container if st.gen is not None else None
        return {"image": svc.image, "container_port": svc.container_port, "container": c["id"] if c else None,
                "container_name": c["name"] if c else None, "container_pid": c["pid"] if c else None}

    def _handoff_fields(self, st: InstanceState) -> dict:
        public = self.public.get(st.service)
        if public is None:
            return {}
        backend = st.gen.backend if st.gen is not None else None
        proxy = public.mode is Handoff.PROXY
        return {"handoff": public.mode.value, "private_port": backend.port if proxy and backend else None,
                "connections": public.connections(st.name) if proxy else None,
                "draining": [g.pid for g in st.draining]}

    def save_state(self, now: bool = False, final: bool = False) -> None:
        if self.rundir is None:
            return
        if final:
            self.rundir.clear_state()
            return
        if now:
            self._state_dirty = False
            try:
                self.rundir.write_state(self.snapshot())
            except OSError:
                pass
            return
        if not self._state_dirty and self.loop is not None:
            self._state_dirty = True
            self.loop.call_soon(self._flush_state)

    def _flush_state(self) -> None:
        if self._state_dirty and not self.stopping:
            self.save_state(now=True)


def _shown_pid(st: InstanceState) -> int | None:
    """The pid a user knows an instance by: its process's, or its container's main process."""
    if st.gen is None:
        return None
    return st.gen.container["pid"] if st.gen.container else st.gen.pid


def _stable_after() -> float:
    """How long a run must stay healthy to reset the restart count (60 s). The variable
    REVOSTACK_STABLE_AFTER changes it, for tests and for impatient users."""
    try:
        return float(os.environ.get("REVOSTACK_STABLE_AFTER", policy.STABLE_AFTER))
    except ValueError:
        return policy.STABLE_AFTER

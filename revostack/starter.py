"""``revostack start``: honcho's start, run by a small loop of its own.

honcho's contract is narrow: start every process of the Procfile at once, show their output,
and at the first exit (or a signal) stop them all and exit with that first code. No
dependencies, health checks, restarts, file watching or control socket — everything the asyncio
supervisor is for. So ``start`` does not pay for it: importing asyncio alone costs more here
than half of honcho's whole start-up (docs/performance.md, "Start-up"). This is the same model
as the runtime's, one thread waiting on readiness, only smaller: a ``poll`` loop over the
children's pipes and a signal wakeup pipe, with the timers the sink asks for. It imports the C
modules (``select``, ``_signal``) rather than their Python wrappers, which cost ~4 ms to import.

Children are spawned with ``posix_spawn`` (``procs.spawn_piped``) in their own sessions, stopped
as the supervisor stops them (stop signal to the group, SIGKILL after ``stop_timeout``, a
second Ctrl-C kills at once), reaped by pid (never ``waitpid(-1)``), and whatever escaped its
group is swept at the end, as after ``up``.
"""

from __future__ import annotations

import _signal
import os
import select
import time

from revostack import procs
from revostack.plan import Plan
from revostack.sink import Sink

READ = 65536
SIGNAL_NAMES = {_signal.SIGINT: "SIGINT", _signal.SIGTERM: "SIGTERM", _signal.SIGHUP: "SIGHUP"}
EXIT_DRAIN = 0.5  # seconds a child's pipe may stay open after it exited (a grandchild holds it)
QUIET = 0.02  # seconds without output after which the loop does its deferred work


class _Timer:
    __slots__ = ("when", "fn", "args", "cancelled")

    def __init__(self, when: float, fn, args):
        self.when, self.fn, self.args, self.cancelled = when, fn, args, False

    def cancel(self) -> None:
        self.cancelled = True


class _Clock:
    """What the sink needs of an event loop: ``call_soon`` and ``call_later``."""

    def __init__(self):
        self.soon: list = []
        self.timers: list[_Timer] = []

    def call_soon(self, fn, *args) -> None:
        self.soon.append((fn, args))

    def call_later(self, delay: float, fn, *args) -> _Timer:
        t = _Timer(time.monotonic() + delay, fn, args)
        self.timers.append(t)  # a few at most: one per child with a partial line
        return t

    def run_due(self) -> None:
        if self.timers:
            now = time.monotonic()
            due = [t for t in self.timers if not t.cancelled and t.when <= now]
            self.timers = [t for t in self.timers if not t.cancelled and t.when > now]
            for t in due:
                t.fn(*t.args)
        while self.soon:
            soon, self.soon = self.soon, []
            for fn, args in soon:
                fn(*args)

    def timeout(self, limit: float | None) -> float | None:
        if self.timers:  # (asked on every turn of the loop: nothing to do in the common case)
            self.timers = [t for t in self.timers if not t.cancelled]
        if not self.timers:
            return limit
        wait = max(0.0, min(t.when for t in self.timers) - time.monotonic())
        return wait if limit is None else min(wait, limit)


class _Proc:
    __slots__ = ("name", "pid", "fd", "code", "exited_at", "stop_signal", "stop_name", "stop_timeout", "said_stopped")

    def __init__(self, name: str, pid: int, fd: int, svc):
        self.name, self.pid, self.fd = name, pid, fd
        self.code: int | None = None
        self.exited_at: float | None = None
        self.stop_signal, self.stop_name, self.stop_timeout = svc.signal_number, svc.stop_signal, svc.stop_timeout
        self.said_stopped = False


class Starter:
    def __init__(self, plan: Plan, sink: Sink):
        self.plan = plan
        self.sink = sink
        self.clock = _Clock()
        sink.loop = self.clock
        self.poll = select.poll()
        self.by_fd: dict[int, _Proc | None] = {}  # what each polled fd is (None: the wakeup pipe)
        self.procs: dict[int, _Proc] = {}  # by pid
        self.first_exit: int | None = None
        self.signal_received: int | None = None
        self.stop_wanted = False
        self.kill_now = False
        self.lingering: set[_Proc] = set()  # exited, with their pipe still open
        self.idle = [procs.become_subreaper]  # deferred work (see _idle)

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> int:
        too_few = procs.ensure_open_files(len(self.plan.instances))
        if too_few:
            self.sink.system(too_few)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)  # set_wakeup_fd wants it so: a full pipe must not block a signal
        sigs = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGCHLD)
        previous = {s: _signal.signal(s, _note) for s in sigs}  # the handler only wakes the loop
        old_wakeup = _signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self._watch(wake_r, None)
        try:
            for inst in self.plan.instances:
                self.sink.add(inst.name, inst.service.name)
            for inst in self.plan.instances:
                if self.stop_wanted:
                    break  # one could not start: the others would only be stopped again
                self._spawn(inst)
            self._reap()  # a child that is gone already
            self._loop(lambda: self.stop_wanted)
            self._shutdown()
        finally:
            _signal.set_wakeup_fd(old_wakeup)
            for s, h in previous.items():
                _signal.signal(s, h if h is not None else _signal.SIG_DFL)
            os.close(wake_r)
            os.close(wake_w)
            self.sink.close()
        if self.first_exit is not None:
            return self.first_exit
        if self.signal_received is not None:
            return 128 + self.signal_received
        return 0

    def _spawn(self, inst) -> None:
        try:
            pid, fd = procs.spawn_piped(procs.argv_for(inst.cmd), str(inst.cwd), inst.env)
        except OSError as e:
            self.sink.system(f"{inst.name} could not start: {procs.why_not_started(e)}")
            if self.first_exit is None:  # the shell's codes for a program it cannot run
                self.first_exit = 127 if isinstance(e, FileNotFoundError) else 126
            self.stop_wanted = True
            return
        p = self.procs[pid] = _Proc(inst.name, pid, fd, inst.service)
        self._watch(fd, p)
        self.sink.system(f"{inst.name} started (pid={pid})")

    def _loop(self, done, deadline: float | None = None, every: float | None = None) -> None:
        """Pump output, signals and exits until ``done()`` or the deadline; ``every``: ask
        ``done()`` at least this often (a grandchild's exit wakes nothing of ours)."""
        while not done():
            limit = every
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                limit = left if limit is None else min(limit, left)
            if self.lingering:
                limit = EXIT_DRAIN / 10 if limit is None else min(limit, EXIT_DRAIN / 10)
            timeout = self.clock.timeout(limit)
            idle_first = self.idle and (timeout is None or timeout > QUIET)
            wait = QUIET if idle_first else timeout
            ready = self.poll.poll(None if wait is None else 1000 * wait)
            if idle_first and not ready:
                self._idle()
                continue
            for fd, _ in ready:
                p = self.by_fd.get(fd, False)
                if p is None:
                    self._signals(fd)
                elif p is not False and p.fd == fd:
                    self._read(p)
            if self.lingering:
                self._close_held_pipes()
            self.clock.run_due()

    def _idle(self) -> None:
        """What can wait until the children's first output has been shown: becoming their
        subreaper costs ~5 ms (ctypes). Until then, a grandchild orphaned by a daemonising
        child is found by its marker instead."""
        while self.idle:
            self.idle.pop()()

    def _watch(self, fd: int, p: _Proc | None) -> None:
        self.poll.register(fd, select.POLLIN)
        self.by_fd[fd] = p

    def _read(self, p: _Proc) -> None:
        try:
            data = os.read(p.fd, READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.sink.feed(p.name, data)
        else:
            self._close(p)

    def _close(self, p: _Proc) -> None:
        self.lingering.discard(p)
        self.poll.unregister(p.fd)
        del self.by_fd[p.fd]
        os.close(p.fd)
        p.fd = None
        self.sink.end(p.name)
        self._say_stopped(p)

    def _drain(self, p: _Proc) -> None:
        """Everything the exited child wrote, read now so it comes before its "stopped" line."""
        while p.fd is not None:
            try:
                data = os.read(p.fd, READ)
            except BlockingIOError:
                return  # a grandchild holds the pipe: its output goes on; we do not wait for it
            except OSError:
                data = b""
            if not data:
                self._close(p)
                return
            self.sink.feed(p.name, data)

    def _close_held_pipes(self) -> None:
        """A child exited a while ago and its pipe is still open: a grandchild holds it. Its
        "stopped" line comes now; the grandchild's output goes on until the end."""
        now = time.monotonic()
        for p in list(self.lingering):
            if now - p.exited_at >= EXIT_DRAIN:
                self.lingering.discard(p)
                self.sink.end(p.name)
                self._say_stopped(p)

    def _signals(self, fd: int) -> None:
        try:
            got = os.read(fd, 512)
        except BlockingIOError:
            return
        if _signal.SIGCHLD in got:
            self._reap()
        for sig in SIGNAL_NAMES:
            if sig in got:
                self._on_signal(sig)

    def _on_signal(self, sig: int) -> None:
        if self.stop_wanted:
            if sig == _signal.SIGINT:
                self.kill_now = True  # a second Ctrl-C: kill at once
            return
        self.signal_received = sig
        self.sink.system(f"{SIGNAL_NAMES[sig]} received, stopping")
        self.stop_wanted = True

    def _reap(self) -> None:
        """Collect every child that has exited (a SIGCHLD says only that one did), and the
        orphans re-parented to us: ``waitid`` names each exited child without reaping it, so
        each exit costs one call, not one per child. (This loop is the only one that waits for
        children in this process: no asyncio watcher shares them.)"""
        seen = set()
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or not info.si_pid or info.si_pid in seen:
                return  # (the same one twice: it could not be reaped; never spin on it)
            seen.add(info.si_pid)
            p = self.procs.get(info.si_pid)
            if p is not None and p.code is None:
                self._reap_one(p)
            else:
                try:
                    os.waitpid(info.si_pid, os.WNOHANG)  # an orphan re-parented to us
                except ChildProcessError:
                    pass

    def _reap_one(self, p: _Proc) -> None:
        try:
            pid, status = os.waitpid(p.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = p.pid, 255 << 8  # reaped elsewhere: its code is lost
        if pid == 0:
            return
        p.code = os.waitstatus_to_exitcode(status)
        p.exited_at = time.monotonic()
        procs.spawned.discard(p.pid)
        if self.first_exit is None and not self.stop_wanted:
            self.first_exit = p.code if p.code >= 0 else 128 - p.code
            self.stop_wanted = True
        self._drain(p)
        if p.fd is None:  # its output had ended before its exit was seen
            self._say_stopped(p)
        else:
            self.lingering.add(p)

    def _say_stopped(self, p: _Proc) -> None:
        if p.code is not None and not p.said_stopped:
            p.said_stopped = True
            self.sink.system(f"{p.name} stopped (rc={p.code})")

    # -- stopping ----------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """The stop signal to every group still alive, SIGKILL to those left after their
        ``stop_timeout`` (at once on a second Ctrl-C), then reap and sweep."""
        self._idle()
        now = time.monotonic()
        deadlines = {}
        for p in self.procs.values():
            if procs.group_alive(p.pid):
                self.sink.system(f"sending {p.stop_name} to {p.name} (pid {p.pid})")
                procs.signal_group(p.pid, p.stop_signal)
                deadlines[p.pid] = now + p.stop_timeout
        self.clock.run_due()
        pending = dict(deadlines)
        while pending:
            self._loop(lambda: self.kill_now or not self._still(pending), min(pending.values()), every=0.05)
            for pid in list(pending):
                if not self._group_gone(pid) and (self.kill_now or time.monotonic() >= pending[pid]):
                    p = self.procs[pid]
                    procs.signal_group(pid, _signal.SIGKILL)
                    self.sink.system(f"{p.name} killed at once (second Ctrl-C)" if self.kill_now
                                     else f"{p.name} did not stop within {p.stop_timeout:g}s: killed")
                    pending.pop(pid)
            if self.kill_now or not pending:
                break
        end = time.monotonic() + 5.0  # after SIGKILL: the kernel's part
        self._loop(lambda: all(self._group_gone(p.pid) for p in self.procs.values()), end, every=0.05)
        for p in self.procs.values():
            if p.fd is not None:
                self._drain(p)
            if p.fd is not None:
                self._close(p)
        self.clock.run_due()
        self._sweep()

    def _still(self, pending: dict[int, float]) -> bool:
        """Whether a group in ``pending`` is still alive (gone ones are taken out)."""
        for pid in list(pending):
            if self._group_gone(pid):
                pending.pop(pid)
        return bool(pending)

    def _group_gone(self, pgid: int) -> bool:
        p = self.procs[pgid]
        if p.code is None:  # its exit is collected by _reap, on SIGCHLD
            return False
        if procs.group_alive(pgid):
            procs.reap_orphans()  # a zombie member re-parented to us counts until it is reaped
            return not procs.group_alive(pgid)
        return True

    def _sweep(self) -> None:
        """Kill whatever escaped its group: our descendants and processes with our marker."""
        from revostack import probe

        leftovers = probe.kill_escaped(self.plan.stack.id)
        for pid, name in leftovers:
            self.sink.system(f"killed pid {pid} ({name}), left behind by the stack")
        deadline = time.monotonic() + 5
        while leftovers and time.monotonic() < deadline:
            procs.reap_orphans()
            if not any(procs.is_alive(pid) for pid, _ in leftovers):
                break
            time.sleep(0.01)
        self.sink.flush()


def _note(signum, frame) -> None:
    """A signal's handler: nothing, the wakeup pipe tells the loop."""

"""The workloads. Each one prepares its files once, then measures one variant at a time
(the runner interleaves the variants, round after round), and cleans up after every variant.

A variant is an orchestrator (or the floor: the same children run by bash with ``&`` and
``wait``, writing straight to the file). ``measure`` returns ``{metric: value}`` and a list of
problems (lost or torn lines, leftover processes, a bad exit code); the numbers are kept even
when there is a problem, and the problem is printed next to them.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks import harness
from benchmarks.harness import BenchError, Session, Tail, Tools

FLOOR = "floor"
HONCHO = "honcho start"
START = "revostack start"
UP = "revostack up"
UP_PROXY = "revostack up, proxied"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_better: bool = False
    digits: int = 3
    ratios: bool = True  # show ×honcho and ×floor for this metric


@dataclass
class Sample:
    values: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class Sizes:
    throughput_children: int = 4
    throughput_lines: int = 200_000
    start_small: int = 30
    start_large: int = 100
    chain_levels: int = 10
    shutdown_children: int = 10
    stop_timeout: float = 2.0
    idle_children: int = 10
    idle_window: float = 10.0
    cli_services: int = 20
    cli_reps: int = 3
    change_reps: int = 3
    scan_ports: int = 1000
    idle_settle: float = 1.5  # seconds after the last "healthy" before the window (fast polling is over)
    fixed_waits: bool = True  # also run the variants that wait a fixed 5 s (start/honcho, one child ignoring)
    big_sizes: tuple[int, ...] = (50, 200, 1000)
    soak_minutes: float = 30.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(throughput_children=4, throughput_lines=2_000, start_small=5, start_large=10, chain_levels=3,
                   shutdown_children=3, stop_timeout=0.5, idle_children=3, idle_window=1.0, cli_services=5,
                   cli_reps=1, change_reps=1, scan_ports=100, idle_settle=0.3, fixed_waits=False,
                   big_sizes=(5, 10), soak_minutes=0.15)


@dataclass
class Context:
    tools: Tools
    folder: Path  # a temporary folder that the runner removes at the end
    sizes: Sizes
    log: callable = print


class Workload:
    name = ""
    title = ""
    optional = False  # long: run only when named in --only
    metrics: tuple[Metric, ...] = ()

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.dir = ctx.folder / self.name
        self.dir.mkdir(parents=True, exist_ok=True)

    def variants(self) -> list[str]:
        return [FLOOR, START, UP] + ([HONCHO] if self.ctx.tools.honcho else [])

    def reference(self, variant: str, kind: str) -> str | None:
        """The variant that ``variant`` is compared to for ``kind`` ("honcho" or "floor")."""
        ref = HONCHO if kind == "honcho" else FLOOR
        return None if variant == ref else ref

    def prepare(self) -> None:
        pass

    def measure(self, variant: str) -> Sample:
        raise NotImplementedError

    def derive(self, run: dict[str, Sample]) -> None:
        """Add values computed from several variants of the same round (e.g. minus the floor)."""

    # -- helpers ----------------------------------------------------------------------------
    def session(self, variant: str) -> Session:
        return Session(self.dir, variant.replace(" ", "_").replace("-", ""))

    def argv(self, variant: str, procfile: Path | None = None, stackfile: Path | None = None,
             floor: Path | None = None, extra: tuple[str, ...] = ()) -> list[str]:
        t = self.ctx.tools
        if variant == FLOOR:
            return ["bash", str(floor)]
        if variant == START:
            return [*t.revostack, "start", "-f", str(procfile), "--no-colour", *extra]
        if variant == UP:
            return [*t.revostack, "up", "-f", str(stackfile), "--no-watch", "--no-color"]
        if variant == HONCHO:
            return [*t.honcho, "start", "-f", str(procfile), "--no-colour", *extra]
        raise ValueError(variant)


# -- files ----------------------------------------------------------------------------------------

def toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_procfile(path: Path, entries: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{name}: {cmd}\n" for name, cmd in entries))
    return path


def write_stackfile(path: Path, name: str, services: list[dict], stack: dict | None = None) -> Path:
    """``services``: dicts with name, cmd and optional port, depends_on (name -> condition),
    health (inline TOML), watch (list), restart, stop_timeout, env (dict)."""
    out = ["[stack]", f"name = {toml_str(name)}"]
    for k, v in (stack or {}).items():
        out.append(f"{k} = {v}")
    for s in services:
        out += ["", f"[services.{s['name']}]", f"cmd = {toml_str(s['cmd'])}"]
        if s.get("port") is not None:
            out.append(f"port = {s['port']}")
        if s.get("depends_on"):
            out.append("depends_on = { " + ", ".join(f"{k} = {toml_str(v)}" for k, v in s["depends_on"].items()) + " }")
        if s.get("health"):
            out.append(f"health = {s['health']}")
        if s.get("handoff"):
            out.append(f"handoff = {toml_str(s['handoff'])}")
        if s.get("watch"):
            out.append("watch = [" + ", ".join(toml_str(w) for w in s["watch"]) + "]")
        if s.get("env"):
            out.append("env = { " + ", ".join(f"{k} = {toml_str(v)}" for k, v in s["env"].items()) + " }")
        out.append(f"restart = {toml_str(s.get('restart', 'no'))}")
        if s.get("stop_timeout") is not None:
            out.append(f"stop_timeout = {s['stop_timeout']}")
    path.write_text("\n".join(out) + "\n")
    return path


FLOOR_TRAP = "kill $PIDS 2>/dev/null; wait; exit 130"


def write_floor(path: Path, commands: list[str], trap: str = FLOOR_TRAP) -> Path:
    """bash with ``&`` and ``wait``: the children write straight to bash's stdout (the file).
    Each child gets its own session (``setsid``), as revostack's and honcho's children do: with
    the kernel's autogroup scheduling a session is a CPU share, and 30 children crammed into one
    would lose to the other sessions of a busy machine and make the floor look slow. ``trap``
    says what bash does on Ctrl-C (by default: SIGTERM to the children, wait)."""
    lines = ["set -u", "PIDS=''", f"trap {shlex.quote(trap)} INT TERM"]
    for c in commands:
        lines.append(f"setsid {c} &")
        lines.append('PIDS="$PIDS $!"')
    lines.append("wait")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_until(session: Session, argv: list[str], cwd: Path, tail: Tail, done, timeout: float,
              interval: float = 0.001, what: str = "output") -> tuple[subprocess.Popen, float, float]:
    """Launch, then poll the output until ``done()``: (popen, t_launch, t_done).
    An orchestrator that exits before is an error with its stderr."""
    t0 = time.perf_counter()
    p = session.launch(argv, cwd)
    t1 = harness.wait_until(lambda: done() or p.poll() is not None, timeout, interval, what, before=tail.poll)
    if not done():
        tail.poll()
        if not done():
            raise BenchError(f"{argv[0]} exited (rc={p.returncode}) before {what}: {session.stderr_text().strip()[-400:]}")
    return p, t0, t1


def stop_and_check(session: Session, sample: Sample, grace: float = 15.0) -> None:
    harness.stop(session, signal.SIGINT, grace)
    left = harness.finish(session)
    if left:
        sample.problems.append(f"{left} process(es) left running")


# -- 1. throughput ---------------------------------------------------------------------------------

class Throughput(Workload):
    name = "throughput"
    title = "4 children x 200,000 lines of 80 B -> file"
    metrics = (
        Metric("lines_per_s", "lines/s (launch -> last line in file)", "lines/s", higher_better=True, digits=0),
        Metric("steady_lines_per_s", "lines/s (first line in file -> last; start-up left out)", "lines/s",
               higher_better=True, digits=0),
        Metric("seconds", "launch -> last line", "s"),
        Metric("cpu_us_per_line", "orchestrator CPU per line, start-up included (tree but the children)", "us",
               digits=3),
        Metric("steady_cpu_us_per_line", "orchestrator CPU per line, first line -> last (the hot path)", "us",
               digits=3),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        n, lines = ctx.sizes.throughput_children, ctx.sizes.throughput_lines
        self.title = f"{n} children x {lines:,} lines of 80 B -> file"

    def prepare(self) -> None:
        s = self.ctx.sizes
        t = self.ctx.tools
        cmds = [(f"w{i}", t.child("flood", i, s.throughput_lines)) for i in range(1, s.throughput_children + 1)]
        self.procfile = write_procfile(self.dir / "Procfile", cmds)
        self.stackfile = write_stackfile(self.dir / "Stackfile.toml", "bench-throughput",
                                         [{"name": n, "cmd": c} for n, c in cmds])
        self.floor = write_floor(self.dir / "floor.sh", [c for _, c in cmds])

    def measure(self, variant: str) -> Sample:
        s = self.ctx.sizes
        n, lines = s.throughput_children, s.throughput_lines
        sample = Sample()
        sess = self.session(variant)
        tail = Tail(sess.out, (b"DONE c=", b"BENCH c="))
        timeout = max(60.0, n * lines / 5000)
        at_first_line: list[float | None] = []  # the orchestrator's CPU when the first line showed

        def first_line() -> None:
            pid = sess.popens[-1].pid
            at_first_line.append(_schedstat(harness.orchestrator_tree(pid, _children_by_cmdline(pid))))

        tail.on_first[b"BENCH c="] = first_line
        try:
            p, t0, t1 = run_until(sess, self.argv(variant, self.procfile, self.stackfile, self.floor), self.dir, tail,
                                  lambda: tail.counts[b"DONE c="] >= n, timeout, 0.002, "every DONE line")
            sample.values["seconds"] = t1 - t0
            sample.values["lines_per_s"] = n * lines / (t1 - t0)
            first = tail.first_seen.get(b"BENCH c=")
            if first is not None and t1 > first:
                sample.values["steady_lines_per_s"] = n * lines / (t1 - first)
            own = harness.orchestrator_tree(p.pid, _children_by_cmdline(p.pid))
            cpu = _schedstat(own)
            if cpu is not None:
                sample.values["cpu_us_per_line"] = cpu / (n * lines) * 1e6
                if at_first_line and at_first_line[0] is not None:
                    sample.values["steady_cpu_us_per_line"] = (cpu - at_first_line[0]) / (n * lines) * 1e6
        finally:
            tail.close()
            stop_and_check(sess, sample)
        sample.problems += check_lines(sess.out, n, lines)
        for f in (sess.out, sess.err):
            f.unlink(missing_ok=True)
        return sample


def _children_by_cmdline(pid: int) -> set[int]:
    """The measured children in a tree: the processes running child.py (a shell wrapper that
    did not exec shows child.py too, and is counted as a child: it costs nothing while idle)."""
    out = set()
    for p in harness.tree(pid):
        try:
            if any(str(harness.CHILD) in a for a in p.cmdline()):
                out.add(p.pid)
        except psutil.Error:
            pass
    return out


def check_lines(path: Path, children: int, lines: int) -> list[str]:
    """Every payload line arrived whole, exactly once, in order per child."""
    data = path.read_bytes()
    problems = []
    expected = [b"%09d" % i for i in range(lines)]
    whole = 0
    for c in range(1, children + 1):
        seqs = re.findall(rb"BENCH c=%d n=(\d{9}) x{53} END\n" % c, data)
        whole += len(seqs)
        if seqs == expected:
            continue
        got = set(seqs)
        missing = lines - len(got & set(expected))
        dups = len(seqs) - len(got)
        order = "" if sorted(seqs) == seqs else ", out of order"
        problems.append(f"child {c}: {missing} lines missing, {dups} duplicated{order}")
    starts, ends = data.count(b"BENCH "), data.count(b" END\n")
    torn = (starts - whole) + (ends - whole)
    if torn:
        problems.append(f"{torn} torn line pieces")
    return problems


# -- 2a. start-up: N children printing one line -------------------------------------------------

class Startup(Workload):
    metrics = (
        Metric("seconds", "launch -> all lines in file", "s"),
        Metric("overhead", "the same minus the floor's (same round)", "s"),
    )
    memory_metrics = (
        Metric("rss_mb", "orchestrator RSS", "MB", digits=1),
        Metric("pss_mb", "orchestrator PSS", "MB", digits=1),
        Metric("tree_pss_mb", "orchestrator + helpers PSS", "MB", digits=1),
        Metric("tree_procs", "orchestrator processes", "", digits=0, ratios=False),
    )

    def __init__(self, ctx, count: int, name: str, with_memory: bool = False, shell: bool = False):
        self.name = name
        super().__init__(ctx)
        self.count = count
        self.with_memory = with_memory
        self.shell = shell  # issue 12's children: `sh -c 'echo ready; exec sleep ...'`, not Python
        self.title = (f"{count} children print one line at once" + (" (sh -c 'echo; exec sleep')" if shell else "")
                      + (" (+ memory once all are up)" if with_memory else ""))
        if with_memory:
            self.metrics = Startup.metrics + Startup.memory_metrics

    def prepare(self) -> None:
        t = self.ctx.tools
        if self.shell:
            cmds = [(f"h{i}", f"sh -c 'echo HELLO c={i} pid=$$; exec sleep 600'") for i in range(1, self.count + 1)]
        else:
            cmds = [(f"h{i}", t.child("hello", i)) for i in range(1, self.count + 1)]
        self.procfile = write_procfile(self.dir / "Procfile", cmds)
        self.stackfile = write_stackfile(self.dir / "Stackfile.toml", f"bench-{self.name}",
                                         [{"name": n, "cmd": c} for n, c in cmds])
        self.floor = write_floor(self.dir / "floor.sh", [c for _, c in cmds])

    def measure(self, variant: str) -> Sample:
        sample = Sample()
        sess = self.session(variant)
        tail = Tail(sess.out, (b"HELLO c=",), rb"HELLO c=\d+ pid=(\d+)")
        base = harness.free_ports(1)[0]
        try:
            p, t0, t1 = run_until(sess, self.argv(variant, self.procfile, self.stackfile, self.floor,
                                                  extra=("-p", str(base))), self.dir, tail,
                                  lambda: tail.counts[b"HELLO c="] >= self.count, 60.0, 0.001, "every HELLO line")
            sample.values["seconds"] = t1 - t0
            if self.with_memory:
                time.sleep(0.5)
                children = {int(m) for m in tail.matches}
                orch = harness.tree(p.pid)[:1]
                own = harness.orchestrator_tree(p.pid, children)
                m1, mt = harness.memory(orch), harness.memory(own)
                sample.values.update(rss_mb=m1["rss"] / 2**20, pss_mb=m1["pss"] / 2**20,
                                     tree_pss_mb=mt["pss"] / 2**20, tree_procs=len(own))
        finally:
            tail.close()
            stop_and_check(sess, sample)
        return sample

    def derive(self, run: dict[str, Sample]) -> None:
        floor = run.get(FLOOR)
        if floor and "seconds" in floor.values:
            for s in run.values():
                if "seconds" in s.values:
                    s.values["overhead"] = s.values["seconds"] - floor.values["seconds"]


# -- 2b. start-up: a dependency chain of TCP servers ------------------------------------------------

class Chain(Workload):
    name = "chain"
    metrics = (
        Metric("seconds", "up -> last one healthy (floor: N x one server's start)", "s"),
        Metric("overhead_per_level", "overhead per level (incl. revostack's own start)", "s", ratios=False),
        Metric("overhead_per_level_after_spawn", "overhead per level (from the first spawn)", "s", ratios=False),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        self.title = f"{ctx.sizes.chain_levels}-level dependency chain of TCP servers, tcp health, each 'healthy'"

    def variants(self) -> list[str]:
        return [FLOOR, UP]

    def measure(self, variant: str) -> Sample:
        levels = self.ctx.sizes.chain_levels
        ports = harness.free_ports(levels)
        return self._floor(ports) if variant == FLOOR else self._up(ports)

    def _floor(self, ports: list[int]) -> Sample:
        """The children's own start: spawn one server, connect every millisecond until it
        accepts; N of them one after the other."""
        sample = Sample()
        sess = self.session(FLOOR)
        total = 0.0
        try:
            for i, port in enumerate(ports, 1):
                t0 = time.perf_counter()
                p = subprocess.Popen(shlex.split(self.ctx.tools.child("server", i)), cwd=self.dir,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                     env=sess.env({"PORT": str(port)}))
                sess.popens.append(p)
                t1 = harness.wait_until(lambda p=p, port=port: _connects(port) or p.poll() is not None, 10.0, 0.001, f"port {port}")
                if p.poll() is not None:
                    raise BenchError(f"server on {port} exited rc={p.returncode}")
                total += t1 - t0
                harness.kill_groups(sess)
                sess.popens.clear()
            sample.values["seconds"] = total
        finally:
            left = harness.finish(sess)
            if left:
                sample.problems.append(f"{left} process(es) left running")
        return sample

    def _up(self, ports: list[int]) -> Sample:
        levels = len(ports)
        t = self.ctx.tools
        services = []
        for i, port in enumerate(ports, 1):
            svc = {"name": f"s{i}", "cmd": t.child("server", i), "port": port}
            if i > 1:
                svc["depends_on"] = {f"s{i - 1}": "healthy"}
            services.append(svc)
        folder = self.dir / f"up-{ports[0]}"
        folder.mkdir()
        stackfile = write_stackfile(folder / "Stackfile.toml", "bench-chain", services)
        sample = Sample()
        sess = self.session(UP)
        first, last = b" s1.1 started (", b" s%d.1 healthy (" % levels
        tail = Tail(sess.out, (first, last))
        try:
            _, t0, t1 = run_until(sess, self.argv(UP, stackfile=stackfile), folder, tail,
                                  lambda: tail.counts[last] >= 1, 60.0, 0.001, f"s{levels}.1 healthy")
            sample.values["seconds"] = t1 - t0
            sample.values["after_spawn"] = t1 - tail.first_seen[first]
        finally:
            tail.close()
            stop_and_check(sess, sample)
        return sample

    def derive(self, run: dict[str, Sample]) -> None:
        floor, up = run.get(FLOOR), run.get(UP)
        if not floor or not up or "seconds" not in floor.values or "seconds" not in up.values:
            return
        levels = self.ctx.sizes.chain_levels
        up.values["overhead_per_level"] = (up.values["seconds"] - floor.values["seconds"]) / levels
        up.values["overhead_per_level_after_spawn"] = (up.values.pop("after_spawn") - floor.values["seconds"]) / levels


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# -- 3. shutdown ---------------------------------------------------------------------------------------

class Shutdown(Workload):
    """SIGINT to the orchestrator's process group (what Ctrl-C does) -> it has exited and no
    process of its tree (taken just before the signal) is alive."""

    name = "shutdown"
    metrics = (
        Metric("seconds", "Ctrl-C -> orchestrator gone, no child left", "s"),
        Metric("overhead", "beyond the floor (children's own exit), same round", "s", ratios=False),
    )

    def __init__(self, ctx, ignore: bool = False):
        if ignore:
            self.name = "shutdown-ignore"
        super().__init__(ctx)
        self.ignore = ignore
        n, st = ctx.sizes.shutdown_children, ctx.sizes.stop_timeout
        if ignore:
            self.title = (f"{n} children, one ignores SIGTERM/SIGINT/SIGHUP; stop_timeout = {st:g} s "
                          f"(start and honcho: fixed 5 s)")
            self.metrics = (Shutdown.metrics[0],
                            Metric("overhead", "beyond the grace period (2 s; 5 s for start/honcho)", "s", ratios=False))
        else:
            self.title = f"{n} children, Ctrl-C"

    def variants(self) -> list[str]:
        out = super().variants()
        if self.ignore and not self.ctx.sizes.fixed_waits:
            out = [v for v in out if v in (FLOOR, UP)]
        return out

    def grace(self, variant: str) -> float:
        if not self.ignore:
            return 0.0
        return self.ctx.sizes.stop_timeout if variant in (FLOOR, UP) else 5.0

    def prepare(self) -> None:
        t = self.ctx.tools
        n = self.ctx.sizes.shutdown_children
        cmds = [(f"z{i}", t.child("sleep", i, *(("ignore",) if self.ignore and i == 1 else ())))
                for i in range(1, n + 1)]
        self.procfile = write_procfile(self.dir / "Procfile", cmds)
        self.stackfile = write_stackfile(self.dir / "Stackfile.toml", f"bench-{self.name}",
                                         [{"name": n_, "cmd": c} for n_, c in cmds],
                                         {"stop_timeout": self.ctx.sizes.stop_timeout})
        trap = FLOOR_TRAP
        if self.ignore:
            trap = f'kill $PIDS 2>/dev/null; sleep {self.ctx.sizes.stop_timeout:g}; kill -9 $PIDS 2>/dev/null; wait; exit 130'
        self.floor = write_floor(self.dir / "floor.sh", [c for _, c in cmds], trap)

    def measure(self, variant: str) -> Sample:
        n = self.ctx.sizes.shutdown_children
        sample = Sample()
        sess = self.session(variant)
        tail = Tail(sess.out, (b"READY c=",), rb"READY c=\d+ pid=(\d+)")
        base = harness.free_ports(1)[0]
        try:
            p, _, _ = run_until(sess, self.argv(variant, self.procfile, self.stackfile, self.floor,
                                                extra=("-p", str(base))), self.dir, tail,
                                lambda: tail.counts[b"READY c="] >= n, 60.0, 0.002, "every READY line")
            time.sleep(0.3)  # let the orchestrator settle (state files, health loops)
            pids = {q.pid for q in harness.tree(p.pid)} | {int(m) for m in tail.matches}
            t0 = time.perf_counter()
            os.killpg(p.pid, signal.SIGINT)
            t1 = harness.wait_until(lambda: p.poll() is not None and not any(harness.is_alive(x) for x in pids),
                                    self.grace(variant) + 20.0, 0.0005, "orchestrator and children gone")
            sample.values["seconds"] = t1 - t0
            if self.ignore:
                sample.values["overhead"] = t1 - t0 - self.grace(variant)
        finally:
            tail.close()
            stop_and_check(sess, sample)
        return sample

    def derive(self, run: dict[str, Sample]) -> None:
        if self.ignore:
            return
        floor = run.get(FLOOR)
        if not floor or "seconds" not in floor.values:
            return
        for v, s in run.items():
            if v != FLOOR and "seconds" in s.values:
                s.values["overhead"] = s.values["seconds"] - floor.values["seconds"]


# -- 4. idle cost --------------------------------------------------------------------------------------

class Idle(Workload):
    name = "idle"
    metrics = (
        Metric("cpu_ms", "orchestrator CPU per 10 s (psutil cpu_times)", "ms", digits=1),
        Metric("cpu_ms_precise", "orchestrator CPU per 10 s (schedstat, all threads)", "ms", digits=2),
        Metric("cpu_pct", "of one core (from schedstat when there is one)", "%", digits=3),
        Metric("rss_mb", "orchestrator RSS", "MB", digits=1),
        Metric("tree_pss_mb", "orchestrator + helpers PSS", "MB", digits=1),
        Metric("tree_procs", "orchestrator processes", "", digits=0, ratios=False),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        s = ctx.sizes
        self.title = (f"{s.idle_children} idle TCP servers, {s.idle_window:g} s window "
                      f"(up: tcp health every 1 s, proxied: each behind handoff = \"proxy\"; "
                      f"start/honcho: no health checks)")

    def variants(self) -> list[str]:
        return [UP, UP_PROXY, START] + ([HONCHO] if self.ctx.tools.honcho else [])

    def measure(self, variant: str) -> Sample:
        n = self.ctx.sizes.idle_children
        t = self.ctx.tools
        sample = Sample()
        sess = self.session(variant)
        ports = _foreman_ports(n)
        folder = self.dir / f"{sess.name}-{ports[0]}"
        folder.mkdir()
        cmds = [(f"i{i}", t.child("server", i)) for i in range(1, n + 1)]
        procfile = write_procfile(folder / "Procfile", cmds)
        stackfile = write_stackfile(folder / "Stackfile.toml", "bench-idle", [
            {"name": name, "cmd": c, "port": port, "health": '{ tcp = "${host}:${port}", interval = 1.0 }',
             "handoff": "proxy" if variant == UP_PROXY else None}
            for (name, c), port in zip(cmds, ports)])
        want = (b" healthy (",) if variant in (UP, UP_PROXY) else ()
        variant = UP if variant == UP_PROXY else variant
        tail = Tail(sess.out, (b"READY c=", *want), rb"READY c=\d+ pid=(\d+)")
        try:
            p, _, _ = run_until(sess, self.argv(variant, procfile, stackfile, extra=("-p", str(ports[0]))), folder,
                                tail, lambda: tail.counts[b"READY c="] >= n and all(tail.counts[w] >= n for w in want),
                                60.0, 0.01, "every server ready (and healthy)")
            time.sleep(self.ctx.sizes.idle_settle)  # past the fast readiness polling
            children = {int(m) for m in tail.matches}
            own = harness.orchestrator_tree(p.pid, children)
            c0, s0 = harness.cpu_seconds(own), _schedstat(own)
            time.sleep(self.ctx.sizes.idle_window)
            c1, s1 = harness.cpu_seconds(own), _schedstat(own)
            window = self.ctx.sizes.idle_window
            if p.poll() is not None:
                raise BenchError(f"orchestrator exited during the window (rc={p.returncode})")
            sample.values["cpu_ms"] = (c1 - c0) / window * 10 * 1000
            if s0 is not None and s1 is not None:
                sample.values["cpu_ms_precise"] = (s1 - s0) / window * 10 * 1000
            # percent of one core from the precise count when there is one: cpu_times moves in 10 ms
            # ticks, so 0.5 % over 10 s would be a coin toss between 40 and 50 ms
            precise = sample.values.get("cpu_ms_precise")
            sample.values["cpu_pct"] = precise / 10 / 1000 * 100 if precise is not None else (c1 - c0) / window * 100
            sample.values["rss_mb"] = harness.memory(own[:1])["rss"] / 2**20
            sample.values["tree_pss_mb"] = harness.memory(own)["pss"] / 2**20
            sample.values["tree_procs"] = len(own)
        finally:
            tail.close()
            stop_and_check(sess, sample)
        return sample


def _foreman_ports(n: int) -> list[int]:
    """A base port whose foreman ports (base + 100 * i) are all free: the same ports for the
    Stackfile, ``revostack start -p`` and ``honcho start -p``."""
    for _ in range(200):
        base = harness.free_ports(1, 20000, 32000 - 100 * n)[0]
        ports = [base + 100 * i for i in range(n)]
        if all(harness.port_free(p) for p in ports):
            return ports
    raise BenchError("no free base port for foreman's rule")


def _schedstat(procs: list[psutil.Process]) -> float | None:
    """CPU time in seconds, nanosecond precision, summed over every thread (cpu_times counts
    10 ms clock ticks, too coarse for a few milliseconds over 10 s)."""
    total = 0
    try:
        for p in procs:
            for task in os.listdir(f"/proc/{p.pid}/task"):
                with open(f"/proc/{p.pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


# -- 5. CLI latency -------------------------------------------------------------------------------------

class Cli(Workload):
    name = "cli"
    metrics = (Metric("seconds", "process start -> exit", "s"),)

    def __init__(self, ctx):
        super().__init__(ctx)
        self.title = (f"CLI latency on a {ctx.sizes.cli_services}-service Stackfile (median of {ctx.sizes.cli_reps} per "
                      f"round; floor: `python -c pass`, the same interpreter with its site-packages)")

    def variants(self) -> list[str]:
        out = [FLOOR, "revostack ports", "revostack check", "revostack --version",
               "python -m revostack ports", "python -m revostack check", "python -m revostack --version"]
        if self.ctx.tools.honcho:
            out += ["honcho check", "honcho --version"]
        return out

    def reference(self, variant: str, kind: str) -> str | None:
        if kind == "floor":
            return None if variant == FLOOR else FLOOR
        if variant.startswith("honcho") or variant == FLOOR:
            return None
        if variant.endswith("check"):
            return "honcho check"
        if variant.endswith("--version"):
            return "honcho --version"
        return None

    def prepare(self) -> None:
        n = self.ctx.sizes.cli_services
        t = self.ctx.tools
        ports = harness.free_ports(n)
        services = []
        for i, port in enumerate(ports, 1):
            svc = {"name": f"svc{i}", "cmd": t.child("server", i), "port": port,
                   "env": {"UPSTREAM": f"http://${{host}}:${{svc{max(1, i - 1)}.port}}", "LEVEL": "info"}}
            if i > 1:
                svc["depends_on"] = {f"svc{i - 1}": "healthy"}
            if i % 4 == 0:
                svc["health"] = '{ http = "http://${host}:${port}/health", interval = 1.0 }'
            services.append(svc)
        write_stackfile(self.dir / "Stackfile.toml", "bench-cli", services)
        write_procfile(self.dir / "Procfile", [(f"svc{i}", t.child("server", i)) for i in range(1, n + 1)])

    def measure(self, variant: str) -> Sample:
        t = self.ctx.tools
        words = variant.split()
        if variant == FLOOR:
            argv = [t.python, "-c", "pass"]  # the interpreter's own start-up: what any Python CLI pays
        elif words[0] == "revostack":
            argv = [*t.revostack, *words[1:]]
        elif words[0] == "python":
            argv = [t.python, *words[1:]]
        else:
            argv = [*t.honcho, *words[1:]]
        sample = Sample()
        sess = self.session(variant)
        times = []
        try:
            for _ in range(self.ctx.sizes.cli_reps):
                t0 = time.perf_counter()
                r = subprocess.run(argv, cwd=self.dir, env=sess.env(), stdin=subprocess.DEVNULL,
                                   capture_output=True, start_new_session=True, timeout=60, check=False)
                times.append(time.perf_counter() - t0)
                if r.returncode != 0:
                    sample.problems.append(f"exit {r.returncode}: {r.stderr.decode(errors='replace').strip()[-200:]}")
                    break
            sample.values["seconds"] = statistics.median(times)
        finally:
            left = harness.finish(sess, grace=0)
            if left:
                sample.problems.append(f"{left} process(es) left running")
        return sample


# -- 6. restart on file change ---------------------------------------------------------------------------

class FileChange(Workload):
    name = "filechange"
    metrics = (
        Metric("seconds", "file written -> new child's first line", "s"),
        Metric("after_debounce", "the same minus the watcher's quiet step", "s", ratios=False),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        self.step = _watch_step()
        self.title = (f"restart on file change (Stackfile watch glob; median of {ctx.sizes.change_reps} "
                      f"changes per round; quiet step {self.step * 1000:g} ms; floor: the child's own start)")

    def variants(self) -> list[str]:
        return [FLOOR, UP]

    def prepare(self) -> None:
        self.genfile = self.dir / "gen.txt"
        self.genfile.write_text("0\n")
        self.stackfile = write_stackfile(self.dir / "Stackfile.toml", "bench-change", [
            {"name": "app", "cmd": self.ctx.tools.child("watched", "gen.txt"), "watch": ["gen.txt"],
             "restart": "always"}])
        self.gen = 0

    def measure(self, variant: str) -> Sample:
        return self._floor() if variant == FLOOR else self._up()

    def _floor(self) -> Sample:
        sample = Sample()
        sess = self.session(FLOOR)
        times = []
        try:
            for _ in range(self.ctx.sizes.change_reps):
                t0 = time.perf_counter()
                p = subprocess.Popen(shlex.split(self.ctx.tools.child("watched", "gen.txt")), cwd=self.dir,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                                     env=sess.env())
                sess.popens.append(p)
                p.stdout.readline()
                times.append(time.perf_counter() - t0)
                p.stdout.close()
                harness.kill_groups(sess)
                sess.popens.clear()
            sample.values["seconds"] = statistics.median(times)
        finally:
            left = harness.finish(sess)
            if left:
                sample.problems.append(f"{left} process(es) left running")
        return sample

    def _up(self) -> Sample:
        sample = Sample()
        sess = self.session(UP)
        tail = Tail(sess.out, (), rb"GEN (\d+) pid=")
        self.genfile.write_text(f"{self.gen}\n")
        argv = [*self.ctx.tools.revostack, "up", "-f", str(self.stackfile), "--no-color"]
        times = []
        try:
            first = b"%d" % self.gen
            run_until(sess, argv, self.dir, tail, lambda: first in tail.matches, 60.0, 0.002, "the first GEN line")
            for _ in range(self.ctx.sizes.change_reps):
                time.sleep(0.5)  # the watcher is idle again
                self.gen += 1
                want = b"%d" % self.gen
                t0 = time.perf_counter()
                with open(self.genfile, "w") as f:
                    f.write(f"{self.gen}\n")
                t1 = harness.wait_until(lambda want=want: want in tail.matches, 30.0, 0.001, f"GEN {self.gen}", before=tail.poll)
                times.append(t1 - t0)
            sample.values["seconds"] = statistics.median(times)
            sample.values["after_debounce"] = sample.values["seconds"] - self.step
        finally:
            tail.close()
            stop_and_check(sess, sample)
        return sample


def _watch_step() -> float:
    try:
        from revostack import watch

        return watch.STEP_MS / 1000
    except (ImportError, AttributeError):
        return 0.1


# -- 7. scan --------------------------------------------------------------------------------------------------

class Scan(Workload):
    name = "scan"
    metrics = (Metric("seconds", "process start -> exit", "s"),)

    def __init__(self, ctx):
        super().__init__(ctx)
        self.title = f"revostack scan --range A-B over {ctx.sizes.scan_ports} ports (floor: `python -c pass`)"

    def variants(self) -> list[str]:
        return [FLOOR, "revostack scan --range"]

    def prepare(self) -> None:
        write_stackfile(self.dir / "Stackfile.toml", "bench-scan",
                        [{"name": "web", "cmd": self.ctx.tools.child("server", 1), "port": harness.free_ports(1)[0]}])

    def measure(self, variant: str) -> Sample:
        lo, hi = harness.free_range(self.ctx.sizes.scan_ports)
        sample = Sample()
        sess = self.session(variant)
        argv = [*self.ctx.tools.revostack, "scan", "--range", f"{lo}-{hi}"]
        if variant == FLOOR:
            argv = [self.ctx.tools.python, "-c", "pass"]
        t0 = time.perf_counter()
        r = subprocess.run(argv, cwd=self.dir, env=sess.env(), stdin=subprocess.DEVNULL, capture_output=True,
                           start_new_session=True, timeout=60)
        sample.values["seconds"] = time.perf_counter() - t0
        if r.returncode != 0:
            sample.problems.append(f"exit {r.returncode}: {r.stderr.decode(errors='replace').strip()[-200:]}")
        elif variant != FLOOR and f"of {hi - lo + 1} ports free".encode() not in r.stdout:
            sample.problems.append("no summary line in the output")
        left = harness.finish(sess, grace=0)
        if left:
            sample.problems.append(f"{left} process(es) left running")
        return sample


# -- the list ---------------------------------------------------------------------------------------------------

def all_workloads(ctx: Context) -> list[Workload]:
    s = ctx.sizes
    return [
        Throughput(ctx),
        Startup(ctx, s.start_small, "start"),
        Startup(ctx, s.start_large, "start-many", with_memory=True),
        Startup(ctx, s.start_small, "start-sh", shell=True),
        Startup(ctx, s.start_large, "start-sh-many", shell=True),
        Chain(ctx),
        Shutdown(ctx),
        Shutdown(ctx, ignore=True),
        Idle(ctx),
        Cli(ctx),
        FileChange(ctx),
        Scan(ctx),
        *handoff_workloads(ctx),
        *scale_workloads(ctx),
    ]


def handoff_workloads(ctx: Context) -> list[Workload]:
    from benchmarks.handoff import HandoffRestarts, ProxyCost

    return [HandoffRestarts(ctx), ProxyCost(ctx)]



def scale_workloads(ctx: Context) -> list[Workload]:
    from benchmarks.big import Big
    from benchmarks.containers import Containers
    from benchmarks.soak import Soak
    from benchmarks.ui_view import UiView

    return [Big(ctx), Soak(ctx), UiView(ctx), Containers(ctx)]

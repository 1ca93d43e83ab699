"""The interactive view (issue 19), run as a person runs it: `revostack ui` in a pseudo-terminal of
ours (160 x 40), against a stack started with `up -d`.

- idle: four quiet services; the time from launch to the first frame showing the services, and
  the view's CPU over the idle window;
- firehose: four services printing ~100,000 lines a second between them (each line carries its
  sequence number and the time it was printed). While it runs: how old the newest line on screen
  is each time the screen changes, how long `?` takes to show the help (10 presses), the view's
  RSS once a million lines went by; at the end, the view's own count of what it received and
  whether each instance's scrollback holds consecutive lines (nothing lost).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time

from benchmarks import harness
from benchmarks.harness import BenchError
from benchmarks.workloads import UP, Metric, Sample, Workload, _schedstat, write_stackfile

FIREHOSE = r'''
import os, sys, time
ident, rate = sys.argv[1], int(sys.argv[2])
pad = "x" * 30
out = sys.stdout
n = 0
tick = 0.01
while True:
    t0 = time.time()
    block = [f"FH c={ident} n={n + i:09d} t={t0:.3f} {pad}\n" for i in range(int(rate * tick))]
    n += len(block)
    out.write("".join(block))
    out.flush()
    time.sleep(max(0.0, tick - (time.time() - t0)))
'''
QUIET = "import time\nprint('quiet ready', flush=True)\nwhile True: time.sleep(3600)\n"
LINE = re.compile(rb"n=(\d{9}) t=(\d+\.\d{3})")
CATCH_UP = 1.5  # seconds after the first frame in which the view shows the log files' history first


class Terminal:
    """A process on a pseudo-terminal of ours; what it draws is read by a thread, with times."""

    def __init__(self, argv, cwd, env, rows=40, cols=160):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.t0 = time.perf_counter()
        self.chunks: list[tuple[float, bytes]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.chunks.append((time.perf_counter(), data))

    def since(self, index: int) -> list[tuple[float, bytes]]:
        with self.lock:
            return self.chunks[index:]

    def count(self) -> int:
        with self.lock:
            return len(self.chunks)

    def wait_for(self, needle: bytes, start: int = 0, timeout: float = 30.0) -> float:
        """When ``needle`` was first drawn after chunk ``start``."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            for t, data in self.since(start):
                if needle in data:
                    return t
            time.sleep(0.002)
        raise BenchError(f"{needle!r} was never drawn")

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self):
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self.master)


class UiView(Workload):
    name = "ui"
    optional = True
    metrics = (
        Metric("first_frame_s", "`revostack ui` launched -> the services drawn", "s", ratios=False),
        Metric("idle_cpu_pct", "the view's CPU, idle stack", "%", digits=2, ratios=False),
        Metric("lines_per_s", "firehose: lines printed per second (all services)", "", digits=0, ratios=False),
        Metric("lag_p50_s", "firehose: age of the newest line drawn, median", "s", ratios=False),
        Metric("lag_max_s", "firehose: age of the newest line drawn, worst", "s", ratios=False),
        Metric("key_p50_s", "firehose: `?` -> help drawn, median", "s", ratios=False),
        Metric("key_max_s", "firehose: `?` -> help drawn, worst", "s", ratios=False),
        Metric("rss_mb", "the view's RSS after a million lines", "MB", digits=1, ratios=False),
        Metric("received", "lines the view received", "", digits=0, ratios=False),
        Metric("gaps", "lines missing inside the scrollback kept", "", digits=0, ratios=False),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        quick = not ctx.sizes.fixed_waits
        self.rate = 10_000 if quick else 100_000
        self.total = 50_000 if quick else 1_000_000
        self.title = (f"`revostack ui` in a 160x40 pseudo-terminal: idle, then 4 services printing "
                      f"{self.rate:,} lines/s between them until {self.total:,} lines")

    def variants(self) -> list[str]:
        return [UP]

    def measure(self, variant: str) -> Sample:
        sample = Sample()
        for phase in ("idle", "firehose"):
            self._phase(phase, sample)
        return sample

    def _phase(self, phase: str, sample: Sample) -> None:
        sess = self.session(f"{phase}")
        folder = self.dir / f"{sess.name}-{sess.token[:6]}"
        folder.mkdir()
        (folder / "fh.py").write_text(FIREHOSE)
        (folder / "quiet.py").write_text(QUIET)
        services = [{"name": f"s{i}", "cmd": (f"{sys.executable} -S fh.py {i} {self.rate // 4}" if phase == "firehose"
                                               else f"{sys.executable} -S quiet.py")} for i in range(4)]
        write_stackfile(folder / "Stackfile.toml", f"bench-ui-{phase}", services)
        rs = self.ctx.tools.revostack
        env = sess.env({"TERM": "xterm-256color", "REVOSTACK_UI_STATS": str(folder / "stats.json")})
        env.pop("NO_COLOR", None)
        term = None
        try:
            r = subprocess.run([*rs, "up", "-d"], cwd=folder, env=env, capture_output=True, timeout=120)
            if r.returncode != 0:
                raise BenchError(f"up -d exited {r.returncode}: {r.stderr.decode(errors='replace')[-300:]}")
            term = Terminal([*rs, "ui"], folder, env)
            drawn = term.wait_for(b"s3.1", timeout=30)
            if phase == "idle":
                sample.values["first_frame_s"] = drawn - term.t0
                time.sleep(self.ctx.sizes.idle_settle + 1)
                proc = [harness.psutil.Process(term.proc.pid)]
                c0 = _schedstat(proc)
                time.sleep(self.ctx.sizes.idle_window)
                c1 = _schedstat(proc)
                if c0 is not None and c1 is not None:
                    sample.values["idle_cpu_pct"] = (c1 - c0) / self.ctx.sizes.idle_window * 100
            else:
                self._firehose(term, sample)
            term.type(b"q")
            term.close()
            if phase == "firehose":
                stats = json.loads((folder / "stats.json").read_text())
                sample.values["received"] = stats["received"].get("*", 0)
                gaps = 0
                for name, seqs in stats["seqs"].items():
                    nums = [int(s) for s in seqs]
                    gaps += sum(b - a - 1 for a, b in zip(nums, nums[1:]) if b > a + 1)
                sample.values["gaps"] = gaps
                if gaps:
                    sample.problems.append(f"{gaps} lines missing inside the kept scrollback")
        finally:
            if term is not None and term.proc.poll() is None:
                term.proc.kill()
            subprocess.run([*rs, "down"], cwd=folder, env=env, capture_output=True, timeout=120)
            left = harness.finish(sess)
            if left:
                sample.problems.append(f"{left} process(es) left running")

    def _firehose(self, term: Terminal, sample: Sample) -> None:
        t_start = time.time()
        lags: list[float] = []
        keys: list[float] = []
        seen = term.count()
        next_key = time.perf_counter() + 1.0
        rss = None
        while True:
            time.sleep(0.01)
            elapsed = time.time() - t_start
            for t, data in term.since(seen):
                stamps = [float(m.group(2)) for m in LINE.finditer(data)]
                if stamps and elapsed > CATCH_UP:  # the newest line in this screen update: how old when drawn
                    lags.append(time.time() - (time.perf_counter() - t) - max(stamps))
            seen = term.count()
            if len(keys) < 10 and time.perf_counter() >= next_key:
                mark = term.count()
                pressed = time.perf_counter()
                term.type(b"?")
                keys.append(term.wait_for(b"this help", mark, timeout=10) - pressed)
                term.type(b"?")
                next_key = time.perf_counter() + 0.5
            if rss is None and elapsed * self.rate >= self.total:
                rss = harness.psutil.Process(term.proc.pid).memory_info().rss
            if rss is not None and len(keys) >= 10:
                break
            if elapsed > 300:
                raise BenchError("the firehose phase took more than 5 minutes")
        sample.values["lines_per_s"] = self.rate
        if lags:
            lags.sort()
            sample.values["lag_p50_s"] = statistics.median(lags)
            sample.values["lag_max_s"] = lags[-1]
        sample.values["key_p50_s"] = statistics.median(keys)
        sample.values["key_max_s"] = max(keys)
        sample.values["rss_mb"] = rss / 2**20

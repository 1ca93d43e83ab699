"""The handoff workloads: failed requests through restarts, what the proxy costs against a direct
connection, and how fast a saved file's new generation takes the connections.

The child is ``webchild.py`` (HTTP, stdlib). Load comes from ``load.py`` (threads, a fresh
connection per request).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import time

from benchmarks import harness
from benchmarks.harness import BenchError, Tail
from benchmarks.load import Load, get
from benchmarks.workloads import UP, Metric, Sample, Workload, run_until, stop_and_check

NONE, PROXY, SOCKET = "up, handoff none", "up, handoff proxy", "up, handoff socket"
KINDS = ("save", "restart", "crash")
WEBCHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "webchild.py")


def web_stackfile(folder, port: int, handoff: str, extra: str = "") -> None:
    health = 'health = { log = "READY", start_period = 20 }' if handoff == "socket" else \
        'health = { tcp = "${host}:${port}", start_period = 20 }'
    (folder / "web.py").write_text(open(WEBCHILD).read())
    (folder / "Stackfile.toml").write_text(f"""[stack]
name = "bench-handoff"

[services.web]
cmd = ["{harness.sys.executable}", "web.py"]
port = {port}
fallback = []
handoff = "{handoff}"
{health}
restart = "always"
max_restarts = 1000
backoff = 0.05
stop_timeout = 5
drain_timeout = 5
watch = ["web.py"]
{extra}
""")


def web_session(wl: Workload, variant: str, handoff: str):
    """A session, a free public port, a folder with the web child's Stackfile, a tail of the output."""
    sess = wl.session(variant)
    port = harness.free_ports(1)[0]
    folder = wl.dir / f"{sess.name}-{port}"
    folder.mkdir()
    web_stackfile(folder, port, handoff)
    return sess, port, folder, Tail(sess.out, (b" healthy",))


def body_pid(host: str, port: int) -> int | None:
    try:
        return int(get(host, port, timeout=2).split(b"\r\n\r\n", 1)[1])
    except (OSError, ValueError, IndexError):
        return None


def serving(folder) -> dict:
    r = subprocess.run([*_revostack(), "ps", "--json"], cwd=folder, capture_output=True, timeout=30,
                       env=harness.bench_env())
    rows = json.loads(r.stdout or b"{}").get("instances", [])
    return rows[0] if rows else {}


def _revostack() -> list[str]:
    return harness.Tools.find(with_honcho=False).revostack


class HandoffRestarts(Workload):
    name = "handoff"
    metrics = (
        Metric("failed_save", "failed requests over the saves", "", digits=0, ratios=False),
        Metric("failed_restart", "failed requests over `revostack restart`", "", digits=0, ratios=False),
        Metric("failed_crash", "failed requests over the crashes (SIGKILL)", "", digits=0, ratios=False),
        Metric("requests", "requests in all", "", digits=0, ratios=False),
        Metric("takeover_s", "save -> first answer from the new process (median)", "s", ratios=False),
        Metric("child_start_s", "the child's own start -> first answer, under the same load (median)", "s",
               ratios=False),
        Metric("takeover_overhead_s", "takeover - child's start - watcher's quiet step", "s", ratios=False),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        self.reps = 1 if not ctx.sizes.fixed_waits else 10
        self.title = (f"restarts under load: {self.reps} of each kind (save, restart, crash), 2 clients making "
                      "fresh-connection GETs")

    def variants(self) -> list[str]:
        return [NONE, PROXY, SOCKET]

    def measure(self, variant: str) -> Sample:
        from benchmarks.workloads import _watch_step

        sample = Sample()
        sess, port, folder, tail = web_session(self, variant, variant.rsplit(" ", 1)[1])
        argv = [*self.ctx.tools.revostack, "up", "--no-color"]
        takeovers: list[float] = []
        try:
            p = sess.launch(argv, folder, {"REVOSTACK_STABLE_AFTER": "0.3"})
            harness.wait_until(lambda: body_pid("127.0.0.1", port), 60, 0.01, "the first answer")
            for kind in KINDS:
                with Load("127.0.0.1", port, workers=2) as load:
                    for _ in range(self.reps):
                        time.sleep(0.3)
                        took = self._one(kind, folder, port)
                        if kind == "save":
                            takeovers.append(took)
                    if kind == "save":  # the floor, under the same load
                        sample.values["child_start_s"] = self._child_start(folder)
                    time.sleep(0.3)
                sample.values[f"failed_{kind}"] = load.failed
                sample.values["requests"] = sample.values.get("requests", 0) + load.total
            if p.poll() is not None:
                raise BenchError(f"up exited (rc={p.returncode})")
            sample.values["takeover_s"] = statistics.median(takeovers)
            sample.values["takeover_overhead_s"] = (sample.values["takeover_s"] - sample.values["child_start_s"]
                                                    - _watch_step())
        finally:
            tail.close()
            stop_and_check(sess, sample)
        return sample

    def _one(self, kind: str, folder, port: int) -> float:
        """One restart; waits until the new process answers. The time from the action to that."""
        before = serving(folder).get("pid")
        t0 = time.perf_counter()
        if kind == "save":
            os.utime(folder / "web.py")
        elif kind == "restart":
            subprocess.run([*self.ctx.tools.revostack, "restart", "web"], cwd=folder, capture_output=True,
                           timeout=30, env=harness.bench_env())
        elif before:
            os.kill(before, signal.SIGKILL)
        t1 = harness.wait_until(lambda: body_pid("127.0.0.1", port) not in (None, before), 60, 0.002,
                                f"a new process after {kind}")
        harness.wait_until(lambda: serving(folder).get("state") == "healthy", 60, 0.05, "healthy again")
        return t1 - t0

    def _child_start(self, folder) -> float:
        """The floor: the same child started by hand, until it answers on its own port."""
        times = []
        for _ in range(3):
            port = harness.free_ports(1)[0]
            t0 = time.perf_counter()
            p = subprocess.Popen([harness.sys.executable, "web.py"], cwd=folder, env={**harness.bench_env(),
                                 "PORT": str(port)}, stdout=subprocess.DEVNULL, start_new_session=True)
            try:
                times.append(harness.wait_until(lambda: body_pid("127.0.0.1", port), 30, 0.002, "the child") - t0)
            finally:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        return statistics.median(times)


class ProxyCost(Workload):
    name = "proxy"
    metrics = (
        Metric("direct_p50_ms", "small GET, fresh connection, direct: p50", "ms", ratios=False),
        Metric("proxy_p50_ms", "the same through the proxy: p50", "ms", ratios=False),
        Metric("added_p50_ms", "added by the proxy: p50", "ms", ratios=False),
        Metric("direct_p99_ms", "direct: p99", "ms", ratios=False),
        Metric("proxy_p99_ms", "through the proxy: p99", "ms", ratios=False),
        Metric("added_p99_ms", "added by the proxy: p99", "ms", ratios=False),
        Metric("direct_mb_s", "bulk download, direct", "MB/s", higher_better=True, digits=0, ratios=False),
        Metric("proxy_mb_s", "bulk download through the proxy", "MB/s", higher_better=True, digits=0, ratios=False),
        Metric("bulk_ratio", "proxy / direct throughput", "x", higher_better=True, ratios=False),
        Metric("cpu_ms_per_mb", "orchestrator CPU per proxied MB", "ms", ratios=False),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        full = ctx.sizes.fixed_waits
        self.requests = 2000 if full else 100
        self.bulk = (200 if full else 5) * 10**6
        self.title = (f"the proxy against a direct connection to the private port, interleaved in one run "
                      f"({self.requests} GETs each, {self.bulk // 10**6} MB download)")

    def variants(self) -> list[str]:
        return [UP]

    def measure(self, variant: str) -> Sample:
        sample = Sample()
        sess, port, folder, tail = web_session(self, variant, "proxy")
        try:
            p, _, _ = run_until(sess, [*self.ctx.tools.revostack, "up", "--no-color", "--no-watch"], folder, tail,
                                lambda: tail.counts[b" healthy"] >= 1, 60, 0.01, "healthy")
            private = serving(folder)["private_port"]
            lat = {"direct": [], "proxy": []}
            batch = 50
            for i in range(0, self.requests, batch):  # interleaved batches
                for key, target in (("direct", private), ("proxy", port))[:: 1 if (i // batch) % 2 else -1]:
                    for _ in range(batch):
                        t0 = time.perf_counter()
                        get("127.0.0.1", target)
                        lat[key].append(time.perf_counter() - t0)
            for key in ("direct", "proxy"):
                xs = sorted(lat[key])
                sample.values[f"{key}_p50_ms"] = statistics.median(xs) * 1000
                sample.values[f"{key}_p99_ms"] = xs[int(len(xs) * 0.99) - 1] * 1000
            sample.values["added_p50_ms"] = sample.values["proxy_p50_ms"] - sample.values["direct_p50_ms"]
            sample.values["added_p99_ms"] = sample.values["proxy_p99_ms"] - sample.values["direct_p99_ms"]
            own = [harness.psutil.Process(p.pid)]
            for key, target in (("direct", private), ("proxy", port)):
                c0 = harness.cpu_seconds(own)
                t0 = time.perf_counter()
                got = _download(target, self.bulk)
                dt = time.perf_counter() - t0
                if got != self.bulk:
                    sample.problems.append(f"{key}: {got} of {self.bulk} bytes")
                sample.values[f"{key}_mb_s"] = self.bulk / 10**6 / dt
                if key == "proxy":
                    sample.values["cpu_ms_per_mb"] = (harness.cpu_seconds(own) - c0) * 1000 / (self.bulk / 10**6)
            sample.values["bulk_ratio"] = sample.values["proxy_mb_s"] / sample.values["direct_mb_s"]
        finally:
            tail.close()
            stop_and_check(sess, sample)
        return sample


def _download(port: int, n: int) -> int:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"GET /bulk/{n} HTTP/1.0\r\n\r\n".encode())
        total = 0
        buf = bytearray(1 << 18)
        while True:
            k = s.recv_into(buf)
            if not k:
                break
            total += k
    return total - len(b"HTTP/1.0 200 OK\r\n\r\n")

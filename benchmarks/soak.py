"""The soak (issue 20): the demo's backend behind its proxy, under a steady client load, for a
long time — a blue/green `revostack restart` every 30 s and a SIGKILL of the serving process
every 2 minutes. Failed requests (goal 0), the supervisor's RSS and open descriptors at minute 5
(or a sixth of a shorter run) and at the end (goal: growth <= 5 %), the log folder against its
rotation bound, and the supervisor's CPU per request.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from benchmarks import harness
from benchmarks.harness import BenchError
from benchmarks.load import Load, get
from benchmarks.workloads import UP, Metric, Sample, Workload, _schedstat

DEMO = Path(__file__).resolve().parent.parent / "examples" / "fullstack"
RESTART_EVERY = 30.0
CRASH_EVERY = 120.0
LOG_ROTATE = 10 * 1024 * 1024  # revostack.sink.LOG_ROTATE: a log and its one previous file each


class Soak(Workload):
    name = "soak"
    optional = True  # 30 minutes by default: only with --only soak
    metrics = (
        Metric("minutes", "length of the run", "min", digits=1, ratios=False),
        Metric("requests", "requests", "", digits=0, ratios=False),
        Metric("failed", "failed requests", "", digits=0, ratios=False),
        Metric("restarts", "blue/green restarts (revostack restart)", "", digits=0, ratios=False),
        Metric("crashes", "SIGKILLs of the serving process", "", digits=0, ratios=False),
        Metric("rss_early_mb", "supervisor RSS at minute 5", "MB", digits=2, ratios=False),
        Metric("rss_end_mb", "supervisor RSS at the end", "MB", digits=2, ratios=False),
        Metric("rss_growth_pct", "RSS growth, minute 5 -> end", "%", digits=1, ratios=False),
        Metric("fds_early", "supervisor open descriptors at minute 5", "", digits=0, ratios=False),
        Metric("fds_end", "supervisor open descriptors at the end", "", digits=0, ratios=False),
        Metric("fds_growth_pct", "descriptor growth, minute 5 -> end", "%", digits=1, ratios=False),
        Metric("logs_mb", "log folder at the end", "MB", digits=2, ratios=False),
        Metric("logs_bound_mb", "its rotation bound (2 x 10 MiB per log file)", "MB", digits=0, ratios=False),
        Metric("cpu_us_per_request", "supervisor CPU per request (proxy, checks, restarts)", "us", digits=1,
               ratios=False),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        self.minutes = ctx.sizes.soak_minutes
        self.title = (f"{self.minutes:g} min: the demo's backend behind its proxy, 2 clients, a restart every "
                      f"{RESTART_EVERY:g} s, a SIGKILL every {CRASH_EVERY:g} s")

    def variants(self) -> list[str]:
        return [UP]

    def measure(self, variant: str) -> Sample:
        sample = Sample()
        sess = self.session(variant)
        folder = self.dir / sess.name
        shutil.copytree(DEMO, folder, ignore=shutil.ignore_patterns(".revostack", "__pycache__"))
        rs = self.ctx.tools.revostack
        env = sess.env()

        def cli(*args, timeout=120):
            return subprocess.run([*rs, *args], cwd=folder, env=env, capture_output=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)

        def backend() -> dict:
            rows = json.loads(cli("ps", "--json").stdout or b"{}").get("instances", [])
            return next((r for r in rows if r["instance"] == "backend.1"), {})

        try:
            r = cli("up", "-d", "backend", timeout=300)
            if r.returncode != 0:
                raise BenchError(f"up -d exited {r.returncode}: {r.stderr.decode(errors='replace')[-300:]}")
            port = backend()["port"]
            get("127.0.0.1", port, "/api/hello")
            sup = harness.psutil.Process(json.loads((folder / ".revostack" / "state.json").read_text())["pid"])
            duration = self.minutes * 60
            early_at = min(300.0, duration / 6)
            t0 = time.monotonic()
            cpu0 = _schedstat([sup])
            next_restart, next_crash = RESTART_EVERY, CRASH_EVERY
            early = None
            restarts = crashes = 0
            with Load("127.0.0.1", port, workers=2, path="/api/hello", pause=0.002) as load:
                while (elapsed := time.monotonic() - t0) < duration:
                    if early is None and elapsed >= early_at:
                        early = (sup.memory_info().rss, sup.num_fds())
                    if elapsed >= next_crash:
                        pid = backend().get("pid")
                        if pid:
                            os.kill(pid, signal.SIGKILL)
                            crashes += 1
                        next_crash += CRASH_EVERY
                        next_restart = max(next_restart, elapsed + 10)  # not both at once
                    elif elapsed >= next_restart:
                        if cli("restart", "backend").returncode == 0:
                            restarts += 1
                        next_restart += RESTART_EVERY
                    time.sleep(0.2)
                time.sleep(2)  # the last restart settles under load
            cpu1 = _schedstat([sup])
            end = (sup.memory_info().rss, sup.num_fds())
            if early is None:
                early = end
            logs = folder / ".revostack" / "logs"
            files = list(logs.glob("*.log"))
            sample.values.update({
                "minutes": (time.monotonic() - t0) / 60,
                "requests": load.total, "failed": load.failed, "restarts": restarts, "crashes": crashes,
                "rss_early_mb": early[0] / 2**20, "rss_end_mb": end[0] / 2**20,
                "rss_growth_pct": (end[0] - early[0]) / early[0] * 100,
                "fds_early": early[1], "fds_end": end[1], "fds_growth_pct": (end[1] - early[1]) / early[1] * 100,
                "logs_mb": sum(f.stat().st_size for f in logs.iterdir() if f.is_file()) / 2**20,
                "logs_bound_mb": len(files) * 2 * LOG_ROTATE / 2**20,
            })
            if cpu0 is not None and cpu1 is not None and load.total:
                sample.values["cpu_us_per_request"] = (cpu1 - cpu0) / load.total * 1e6
            if load.failed:
                sample.problems.append(f"{load.failed} failed requests: {load.errors[:3]}")
            if backend().get("state") != "healthy":
                sample.problems.append("backend not healthy at the end")
        finally:
            r = cli("down", timeout=120)
            if r.returncode != 0:
                sample.problems.append(f"down exited {r.returncode}")
            left = harness.finish(sess)
            if left:
                sample.problems.append(f"{left} process(es) left running")
        return sample

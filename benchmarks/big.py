"""Big stacks: how the cost grows with the number of services (issue 20).

For each size (50, 200 and 1,000 small TCP servers, ``child.py server``, each with the default
TCP check): ``revostack up -d`` until every one is healthy, against a floor — the same children
started by a bash script that then waits until every port answers — and on the running stack
``ps --json``, ``ports``, the supervisor's idle CPU and PSS, and ``down`` until nothing is left.
"""

from __future__ import annotations

import json
import subprocess
import time

from benchmarks import harness
from benchmarks.harness import BenchError, Tail
from benchmarks.workloads import Metric, Sample, Workload, _schedstat, write_stackfile

FLOOR_WAIT = """
for p in {ports}; do
  until (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; do sleep 0.01; done
done
echo "ALL UP"
wait
"""


class Big(Workload):
    name = "big"
    optional = True  # minutes per round at 1,000 services: only with --only big
    metrics = (
        Metric("up_s", "start -> every service answering (up -d: healthy, returned)", "s"),
        Metric("ps_s", "`ps --json` (0.2 s sampling interval included)", "s", ratios=False),
        Metric("ports_s", "`ports`", "s", ratios=False),
        Metric("idle_cpu_pct", "supervisor idle CPU (TCP check every 1 s each)", "%", digits=2, ratios=False),
        Metric("pss_mb", "supervisor PSS", "MB", digits=1, ratios=False),
        Metric("down_s", "`down` -> nothing left", "s", ratios=False),
        Metric("down_lines", "lines `down` printed", "", digits=0, ratios=False),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        self.sizes = ctx.sizes.big_sizes
        self.title = (f"stacks of {', '.join(map(str, self.sizes))} TCP servers: up -d against a shell floor, "
                      f"ps, ports, idle CPU ({ctx.sizes.idle_window:g} s), PSS, down")

    def variants(self) -> list[str]:
        return [f"{kind} {n}" for n in self.sizes for kind in ("floor", "up -d")]

    def reference(self, variant: str, kind: str) -> str | None:
        n = variant.rsplit(" ", 1)[1]
        return f"floor {n}" if kind == "floor" and not variant.startswith("floor") else None

    def measure(self, variant: str) -> Sample:
        kind, n = variant.rsplit(" ", 1)
        n = int(n)
        sample = Sample()
        sess = self.session(variant)
        ports = harness.free_ports(n)
        folder = self.dir / f"{sess.name}-{ports[0]}"
        folder.mkdir()
        cmds = [self.ctx.tools.child("server", i) for i in range(n)]
        if kind == "floor":
            script = folder / "floor.sh"
            script.write_text("".join(f"PORT={p} setsid {c} >/dev/null &\n" for p, c in zip(ports, cmds))
                              + FLOOR_WAIT.format(ports=" ".join(map(str, ports))))
            tail = Tail(sess.out, (b"ALL UP",))
            try:
                t0 = time.perf_counter()
                p = sess.launch(["bash", str(script)], folder)
                harness.wait_until(lambda: tail.counts[b"ALL UP"] >= 1 or p.poll() is not None, 600, 0.005,
                                   "every port answering", before=tail.poll)
                if not tail.counts[b"ALL UP"]:
                    raise BenchError(f"the floor script exited (rc={p.returncode}): {sess.stderr_text()[-300:]}")
                sample.values["up_s"] = time.perf_counter() - t0
            finally:
                tail.close()
                harness.finish(sess)  # the floor's children run until killed here: not a leftover
            return sample
        write_stackfile(folder / "Stackfile.toml", f"bench-big-{n}",
                        [{"name": f"s{i}", "cmd": c, "port": port} for i, (c, port) in enumerate(zip(cmds, ports))])
        rs = self.ctx.tools.revostack
        env = sess.env()

        def run(*args, timeout=900):
            t0 = time.perf_counter()
            r = subprocess.run([*rs, *args], cwd=folder, env=env, capture_output=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
            return time.perf_counter() - t0, r

        try:
            took, r = run("up", "-d")
            if r.returncode != 0:
                raise BenchError(f"up -d exited {r.returncode}: {r.stderr.decode(errors='replace')[-300:]}")
            sample.values["up_s"] = took
            took, r = run("ps", "--json")
            rows = json.loads(r.stdout)["instances"]
            if len(rows) != n or any(row["state"] != "healthy" for row in rows):
                sample.problems.append(f"ps: {len(rows)} rows, not all healthy")
            if any(row["memory_bytes"] is None for row in rows):
                sample.problems.append("ps: a row without its memory")
            sample.values["ps_s"] = took
            sample.values["ports_s"] = run("ports")[0]
            sup = json.loads((folder / ".revostack" / "state.json").read_text())["pid"]
            own = [harness.psutil.Process(sup)]
            time.sleep(self.ctx.sizes.idle_settle)
            s0 = _schedstat(own)
            time.sleep(self.ctx.sizes.idle_window)
            s1 = _schedstat(own)
            if s0 is not None and s1 is not None:
                sample.values["idle_cpu_pct"] = (s1 - s0) / self.ctx.sizes.idle_window * 100
            sample.values["pss_mb"] = harness.memory(own)["pss"] / 2**20
            took, r = run("down")
            sample.values["down_s"] = took
            sample.values["down_lines"] = len(r.stdout.splitlines())
            if r.returncode != 0:
                sample.problems.append(f"down exited {r.returncode}")
        finally:
            left = harness.finish(sess)
            if left:
                sample.problems.append(f"{left} process(es) left running")
        return sample

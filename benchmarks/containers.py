"""Containers (issue 18): what revostack adds over the engine itself.

Three container services (busybox httpd, each published on its own port) brought up
``revostack up -d`` until every one is healthy, against a floor: the same three containers
started with ``docker run -d -p`` by a shell script that then waits until every port serves a
page. Also the memory of the helper process that runs each container (its RSS), and ``down``
until no container of the stack is left. Needs a Docker engine and a static busybox (the image
is imported from it, as the tests do); optional: ``--only containers``.
"""

from __future__ import annotations

import subprocess
import time

from benchmarks import harness
from benchmarks.harness import BenchError
from benchmarks.workloads import Metric, Sample, Workload

IMAGE = "revostack-bench/busybox:1"
N = 3
SERVE = "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"
WAIT = """
for p in {ports}; do
  until wget -q -O /dev/null http://127.0.0.1:$p/ 2>/dev/null || curl -fs -o /dev/null http://127.0.0.1:$p/; do sleep 0.01; done
done
"""


class Containers(Workload):
    name = "containers"
    optional = True  # needs a Docker engine
    title = f"{N} busybox httpd containers: up -d to all healthy against docker run + a wait, helper RSS, down"
    metrics = (
        Metric("up_s", "start -> every container serving", "s"),
        Metric("helper_rss_mb", "RSS of the helper that runs one container", "MB", digits=1, ratios=False),
        Metric("down_s", "`down` -> no container of the stack left", "s", ratios=False),
    )

    def variants(self) -> list[str]:
        return ["docker run", "up -d"]

    def reference(self, variant: str, kind: str) -> str | None:
        return "docker run" if kind == "floor" and variant != "docker run" else None

    def measure(self, variant: str) -> Sample:
        _image()
        sample = Sample()
        sess = self.session(variant)
        ports = harness.free_ports(N)
        folder = self.dir / f"{sess.name}-{ports[0]}"
        folder.mkdir()
        names = [f"bench-{ports[0]}-{i}" for i in range(N)]
        if variant == "docker run":
            script = "".join(f"docker run -d --name {n} -p 127.0.0.1:{p}:8080 {IMAGE} sh -c \"{SERVE}\" >/dev/null\n"
                             for n, p in zip(names, ports)) + WAIT.format(ports=" ".join(map(str, ports)))
            try:
                t0 = time.perf_counter()
                subprocess.run(["sh", "-c", script], check=True, timeout=300)
                sample.values["up_s"] = time.perf_counter() - t0
            finally:
                subprocess.run(["docker", "rm", "-f", *names], capture_output=True, timeout=120)
            return sample
        (folder / "Stackfile.toml").write_text("[stack]\nname = \"bench-containers\"\n" + "".join(
            f"\n[services.c{i}]\nimage = \"{IMAGE}\"\npull = \"never\"\ncmd = \"{SERVE}\"\nport = {p}\n"
            f"container_port = 8080\nhealth = {{ http = \"http://127.0.0.1:${{port}}/\" }}\n"
            for i, p in enumerate(ports)))
        rs, env = self.ctx.tools.revostack, sess.env()
        try:
            t0 = time.perf_counter()
            r = subprocess.run([*rs, "up", "-d"], cwd=folder, env=env, capture_output=True, timeout=300)
            if r.returncode != 0:
                raise BenchError(f"up -d exited {r.returncode}: {r.stderr.decode(errors='replace')[-300:]}")
            sample.values["up_s"] = time.perf_counter() - t0
            helpers = [p for p in harness.psutil.process_iter(["cmdline"])
                       if "revostack.container" in " ".join(p.info["cmdline"] or []) and _in(p, folder)]
            if helpers:
                sample.values["helper_rss_mb"] = sum(p.memory_info().rss for p in helpers) / len(helpers) / 2**20
            t0 = time.perf_counter()
            subprocess.run([*rs, "down"], cwd=folder, env=env, capture_output=True, timeout=300)
            sample.values["down_s"] = time.perf_counter() - t0
            left = subprocess.run(["docker", "ps", "-aq", "--filter", "label=revostack.stackfile="
                                   + str((folder / "Stackfile.toml").resolve())], capture_output=True, text=True)
            if left.stdout.strip():
                sample.problems.append("containers left after down")
        finally:
            if harness.finish(sess):
                sample.problems.append("processes left running")
        return sample


def _in(proc, folder) -> bool:
    try:
        return str(folder) in proc.cwd()
    except Exception:
        return False


def _image() -> None:
    """The benchmark's image, imported from the host's busybox once."""
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return
    script = ("set -e; R=$(mktemp -d); mkdir -p $R/bin $R/www $R/tmp; cp \"$(command -v busybox)\" $R/bin/; "
              "for a in sh httpd sleep; do ln -s busybox $R/bin/$a; done; echo ok > $R/www/index.html; "
              f"tar -C $R -c . | docker import - {IMAGE} >/dev/null; rm -rf $R")
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise BenchError(f"could not build {IMAGE} (a Docker engine and busybox are needed): {r.stderr[-300:]}")

"""The compose export runs under a real Docker engine: the exported demo comes up in order and
healthy (db healthy, then migrate completed, then backend healthy, then frontend), the backend
answers from the host on 127.0.0.1, and `down` leaves nothing.

No registry can be reached, so the image is made here: `docker import` of a tiny root file
system (merged-/usr symlinks, /etc/passwd), with this machine's /usr and Python bind-mounted
read-only by a compose override file that belongs to the test."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import cli, wait_for
from helpers_runtime import free_base

REPO = Path(__file__).resolve().parent.parent
IMAGE = "revostack-test-base:2"


def _docker_ok() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client"
    if shutil.which("docker-compose") is None and subprocess.run(["docker", "compose", "version"],
                                                                 capture_output=True).returncode != 0:
        return "no docker compose (v1 or v2)"
    r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=20)
    return None if r.returncode == 0 else "no Docker daemon answers (start dockerd)"


WHY = _docker_ok()
pytestmark = [pytest.mark.skipif(WHY is not None, reason=f"needs a Docker engine: {WHY}"), pytest.mark.timeout(300)]


def read_yaml(text: str):
    import yaml

    return yaml.safe_load(text)


def compose() -> list[str]:
    return ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]


def base_image() -> None:
    """A root file system of symlinks and a passwd file: the host's /usr comes in by mount."""
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes | None = None, link: str | None = None, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, mode
            else:
                info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
        # /sbin is a real folder: docker mounts its init (`init: true`) at /sbin/docker-init
        for d in ("usr", "etc", "tmp", "root", "proc", "sys", "dev", "app", "sbin"):
            add(d, mode=0o1777 if d == "tmp" else 0o755)
        for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
            add(link, link=target)
        add("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", b"root:x:0:\n")
    subprocess.run(["docker", "import", "-", IMAGE], input=buf.getvalue(), check=True, capture_output=True)


def override(folder: Path, services: list[str]) -> Path:
    py = Path(sys.prefix).resolve()
    mounts = ["/usr:/usr:ro", f"{py}:{py}:ro"]
    text = "services:\n" + "".join(
        f"  {name}:\n    volumes:\n" + "".join(f'      - "{m}"\n' for m in mounts)
        + f'    environment:\n      PATH: "{py}/bin:/usr/local/bin:/usr/bin:/bin"\n' for name in services)
    path = folder / "compose.override.yaml"
    path.write_text(text)
    return path


def states(folder: Path, files: list[str]) -> dict[str, dict]:
    ids = subprocess.run([*compose(), *files, "ps", "-q"], cwd=folder, capture_output=True, text=True).stdout.split()
    if not ids:
        return {}
    info = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout)
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c["State"] for c in info}


def test_the_exported_demo_runs_under_docker_compose(tmp_path):
    base_image()
    demo = tmp_path / "fullstack"
    shutil.copytree(REPO / "examples" / "fullstack", demo, ignore=shutil.ignore_patterns(".revostack"))
    base = free_base((0, 100, 200, 300, 400))
    out = tmp_path / "out"
    r = cli("-f", str(demo / "Stackfile.toml"), "export", "compose", str(out), "--image", IMAGE,
            "--port-base", str(base), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names = ["db", "events", "migrate", "backend", "frontend", "worker"]
    files = ["-f", "compose.yaml", "-f", str(override(out, names))]
    project = (out / ".env").read_text().split("COMPOSE_PROJECT_NAME=")[1].strip()
    try:
        up = subprocess.run([*compose(), *files, "up", "-d"], cwd=out, capture_output=True, text=True, timeout=240)
        assert up.returncode == 0, up.stdout + up.stderr
        wait_for(lambda: (lambda s: s.get("backend", {}).get("Health", {}).get("Status") == "healthy"
                          and s.get("frontend", {}).get("Running") and s)(states(out, files)), 120, 0.5,
                 what="backend healthy and frontend running")
        s = states(out, files)
        assert s["db"]["Health"]["Status"] == "healthy"
        assert s["migrate"]["Status"] == "exited" and s["migrate"]["ExitCode"] == 0
        # the order: db healthy before migrate starts, migrate done before backend, backend before frontend
        assert s["db"]["StartedAt"] < s["migrate"]["StartedAt"] <= s["migrate"]["FinishedAt"] <= s["backend"]["StartedAt"]
        assert s["backend"]["StartedAt"] < s["frontend"]["StartedAt"]
        backend_port = base + 200  # --port-base: 100 per service in file order (db, migrate, backend, ...)
        with urllib.request.urlopen(f"http://127.0.0.1:{backend_port}/api/hello", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body.get("message") == "hello from the backend" and body.get("schema") == "3", body
        ports = subprocess.run(["docker", "port", f"{project}_backend_1" if "docker-compose" in compose()[0]
                                else f"{project}-backend-1"], capture_output=True, text=True).stdout
        assert f"127.0.0.1:{backend_port}" in ports and "0.0.0.0" not in ports, ports  # only on the stack's host
        t0 = time.monotonic()
        down = subprocess.run([*compose(), *files, "down"], cwd=out, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - t0
        assert down.returncode == 0, down.stderr
        assert took < 8, f"down took {took:.1f}s: the stop signal did not reach the programs"
    finally:
        subprocess.run([*compose(), *files, "down", "-v", "--remove-orphans", "-t", "1"], cwd=out, capture_output=True,
                       timeout=120)
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
                          capture_output=True, text=True).stdout.split()
    assert left == []


RICH_SERVICE = r'''
import os, signal, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

mode = sys.argv[1]
def stop(sig, _):
    print(f"{mode} got {signal.Signals(sig).name}", flush=True)
    os._exit(0)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
bind, port = os.environ.get("BIND", "127.0.0.1"), int(os.environ.get("PORT", "0") or 0)
if mode == "once":
    print("init done", flush=True)
    sys.exit(0)
if mode == "http":
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = os.environ["HOSTNAME"].encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    srv = ThreadingHTTPServer((bind, port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
elif mode == "tcp":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((bind, port)); s.listen()
    threading.Thread(target=lambda: [c.close() for c, _ in iter(s.accept, None)], daemon=True).start()
elif mode == "touch":
    open("/tmp/ready", "w").close()
print(f"{mode} ready", flush=True)
while True:
    time.sleep(1)
'''


def test_a_richer_stack_runs_under_docker_compose(tmp_path):
    """scale, every health kind, every dependency condition, custom stop settings."""
    base_image()
    app = tmp_path / "rich"
    app.mkdir()
    (app / "svc.py").write_text(RICH_SERVICE)
    b = free_base((0, 100, 200, 201, 300, 400, 500))
    (app / "Stackfile.toml").write_text(f"""
[stack]
name = "rich"

[services.db]
cmd = "python svc.py tcp"
port = {b}
env = {{ BIND = "${{host}}" }}

[services.cache]
cmd = "python svc.py touch"
health = {{ cmd = "test -e /tmp/ready", interval = 0.5 }}

[services.setup]
cmd = "python svc.py once"
depends_on = {{ db = "started" }}
restart = "no"

[services.api]
cmd = "python svc.py http"
port = {b + 200}
scale = 2
env = {{ BIND = "${{host}}", DB = "tcp://${{host}}:${{db.port}}" }}
depends_on = {{ db = "healthy", cache = "healthy", setup = "completed" }}
health = {{ http = "http://${{host}}:${{port}}/", interval = 0.5, start_period = 30 }}
stop_signal = "SIGINT"
stop_timeout = 3

[services.worker]
cmd = "python svc.py log"
health = {{ log = "log ready" }}
depends_on = ["api"]
""")
    out = tmp_path / "out"
    r = cli("-f", str(app / "Stackfile.toml"), "export", "compose", str(out), "--image", IMAGE, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (out / "compose.yaml").read_text()
    rich = read_yaml(text)["services"]
    assert {"api-1", "api-2"} <= set(rich) and rich["api-1"]["stop_signal"] == "SIGINT"
    names = ["db", "cache", "setup", "api-1", "api-2", "worker"]
    files = ["-f", "compose.yaml", "-f", str(override(out, names))]
    try:
        up = subprocess.run([*compose(), *files, "up", "-d"], cwd=out, capture_output=True, text=True, timeout=240)
        assert up.returncode == 0, up.stdout + up.stderr
        wait_for(lambda: (lambda s: all(s.get(n, {}).get("Health", {}).get("Status") == "healthy"
                                        for n in ("db", "cache", "api-1", "api-2")) and s.get("worker", {}).get("Running")
                          and s)(states(out, files)), 120, 0.5, what="every service up and healthy")
        s = states(out, files)
        assert s["setup"]["ExitCode"] == 0 and s["setup"]["FinishedAt"] <= s["api-1"]["StartedAt"]
        assert s["cache"]["StartedAt"] < s["api-1"]["StartedAt"] and s["api-1"]["StartedAt"] < s["worker"]["StartedAt"]
        for i, port in ((1, b + 200), (2, b + 201)):  # each instance its own port, published on 127.0.0.1
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
                assert resp.status == 200
        t0 = time.monotonic()
        down = subprocess.run([*compose(), *files, "stop"], cwd=out, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0 and time.monotonic() - t0 < 10, down.stderr
        logs = subprocess.run([*compose(), *files, "logs", "--no-color", "api-1", "db"], cwd=out,
                              capture_output=True, text=True).stdout
        assert "http got SIGINT" in logs and "tcp got SIGTERM" in logs, logs  # the stop signals arrived
    finally:
        subprocess.run([*compose(), *files, "down", "-v", "--remove-orphans", "-t", "1"], cwd=out, capture_output=True,
                       timeout=120)

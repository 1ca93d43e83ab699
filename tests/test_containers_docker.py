"""Containers against a real Docker engine: a mixed stack (container db, process backend that
depends on it, container that reaches the process), published ports and their conflicts (held by
a process, held by a foreign container), labels, logs, restart, `run -s` inside the container, a
SIGKILLed `up` then `down` leaving nothing, stale containers reclaimed, a failed image, no engine.

The image is built here (`docker import` of a rootfs holding the host's static busybox: no
registry is needed). Every test skips, saying why, when no engine answers or busybox is missing.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import cli, wait_for
from helpers_runtime import clean_env, free_base, stack_id

IMAGE = "revostack-test/busybox:tests-1"
APPLETS = ("sh", "httpd", "nc", "sleep", "echo", "cat", "ls", "env", "printf", "wget", "mkdir", "true", "false",
           "kill", "head", "hostname", "date")
# a web server that stops on SIGTERM (busybox httpd as PID 1 would ignore it)
HTTPD = "trap 'exit 0' TERM; echo serving on $PORT; httpd -f -v -p $PORT -h /www & wait"


def _engine():
    try:
        from revostack import engine

        return engine.connect(timeout=5)
    except Exception as e:
        pytest.skip(f"no Docker engine answers ({e}); .ci/run starts one")


def _busybox() -> Path:
    for p in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(p).exists() and _static(Path(p)):
            return Path(p)
    pytest.skip("no static busybox to build the test image from (apt-get install busybox-static)")


def _static(path: Path) -> bool:
    """An ELF with no program interpreter (it needs no library from the host)."""
    import struct

    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    size, count = struct.unpack_from("<HH", data, 0x36)
    return all(struct.unpack_from("<I", data, phoff + i * size)[0] != 3 for i in range(count))  # PT_INTERP = 3


@pytest.fixture(scope="module")
def docker():
    client = _engine()
    try:
        client.api.inspect_image(IMAGE)
    except Exception:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(str(_busybox()), arcname="bin/busybox")
            for name in APPLETS:
                info = tarfile.TarInfo(f"bin/{name}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
            for d in ("tmp", "www", "etc"):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
                tar.addfile(info)
            for name, data in (("www/index.html", b"hello from the container\n"),
                               ("etc/passwd", b"root:x:0:0:root:/:/bin/sh\n")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        client.api.import_image_from_data(buf.getvalue(), repository=IMAGE.split(":")[0], tag=IMAGE.split(":")[1])
    return client


class Stack:
    """A Stackfile in a folder of its own; at the end `down`, then whatever carries its label."""

    def __init__(self, client, root: Path, text: str):
        self.client, self.root = client, root
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "Stackfile.toml"
        self.path.write_text(text)
        self.id = stack_id(self.path)
        self.procs: list[subprocess.Popen] = []

    def cli(self, *args: str, timeout: float = 90, **env):
        return cli(*args, cwd=self.root, env=clean_env(**env), timeout=timeout)

    def up_foreground(self) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-m", "revostack", "up"], cwd=self.root, env=clean_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def ps(self) -> dict[str, dict]:
        r = self.cli("ps", "--json")
        if r.returncode != 0:
            return {}
        return {i["instance"]: i for i in json.loads(r.stdout)["instances"]}

    def containers(self) -> list[dict]:
        return self.client.api.containers(all=True, filters={"label": f"revostack.stack={self.id}"})

    def network(self) -> bool:
        return bool(self.client.api.networks(names=[f"revostack_{self.id}"]))

    def cleanup(self) -> None:
        self.cli("down", timeout=120)
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait(timeout=10)
        for c in self.containers():
            self.client.api.remove_container(c["Id"], force=True)
        for n in self.client.api.networks(names=[f"revostack_{self.id}"]):
            self.client.api.remove_network(n["Id"])


@pytest.fixture
def stacks(docker, tmp_path):
    made: list[Stack] = []

    def make(text: str, name: str = "s") -> Stack:
        s = Stack(docker, tmp_path / name, text)
        made.append(s)
        return s

    yield make
    for s in made:
        s.cleanup()


def web(base: int, extra: str = "", image: str = IMAGE) -> str:
    """A container service "web": busybox httpd published on ``base``."""
    return f"""
[services.web]
image = "{image}"
cmd = "{HTTPD}"
port = {base}
container_port = 8080
stop_timeout = 5
{extra}"""


def settled(s: Stack, *names: str, state: str = "healthy"):
    """ps once the instances are in ``state`` and each container service's container is known."""
    def ready(rows: dict) -> dict | None:
        for n in names:
            row = rows.get(n, {})
            if row.get("state") != state or ("image" in row and not row.get("container")):
                return None
        return rows

    return wait_for(lambda: ready(s.ps()), timeout=60, interval=0.2, what=f"{names} {state}")


def http(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    return data.decode("utf-8", "replace")


BACKEND = ("import http.server, os\n"
           "class H(http.server.BaseHTTPRequestHandler):\n"
           "    def do_GET(self):\n"
           "        body = f\"backend sees db at {os.environ['DB_HOST']}:{os.environ['DB_PORT']}\\n\".encode()\n"
           "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
           "    def log_message(self, *a): pass\n"
           "http.server.HTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n")


def mixed_stack(base: int) -> str:
    return f"""
[stack]
name = "mixed"

[services.db]
image = "{IMAGE}"
cmd = "{HTTPD}"
port = {base}
container_port = 8080
stop_timeout = 5

[services.backend]
cmd = ["{sys.executable}", "backend.py"]
port = {base + 1}
depends_on = {{ db = "healthy" }}
health = {{ http = "http://127.0.0.1:${{port}}/" }}

[services.client]
image = "{IMAGE}"
cmd = "wget -q -O - http://$BACKEND_HOST:$BACKEND_PORT/; wget -q -O - http://$DB_HOST:$DB_PORT/; echo client done; sleep 300"
depends_on = {{ backend = "healthy" }}
stop_timeout = 1
"""


def test_mixed_stack_in_order_healthy_labelled_and_gone_after_down(stacks):
    base = free_base((0, 1))
    s = stacks(mixed_stack(base))
    (s.root / "backend.py").write_text(BACKEND)
    r = s.cli("up", "-d")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = settled(s, "db.1", "backend.1")
    wait_for(lambda: "client done" in s.cli("logs", "client").stdout, timeout=30, what="the client's output")
    # published on the planned port, seen by the host and by the process as that port
    assert "hello from the container" in http(base)
    assert f"backend sees db at 127.0.0.1:{base}" in http(base + 1)
    # the container reached the process through the host gateway, and the db by its name
    logs = s.cli("logs", "client").stdout
    assert f"backend sees db at 127.0.0.1:{base}" in logs and "hello from the container" in logs
    db = rows["db.1"]
    assert db["image"] == IMAGE and len(db["container"]) == 12
    info = s.client.api.inspect_container(db["container"])
    assert info["State"]["Pid"] == db["pid"]  # the container's main process as the host sees it
    labels = info["Config"]["Labels"]
    assert labels["revostack.stack"] == s.id and labels["revostack.instance"] == "db.1"
    assert info["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"] == str(base)
    assert db["memory_bytes"] and db["memory_bytes"] < 64 * 2**20  # the container's tree, not the helper's
    ports = {i["instance"]: i for i in json.loads(s.cli("ports", "--json").stdout)["instances"]}
    assert ports["db.1"]["assigned"] == base and ports["db.1"]["container_port"] == 8080
    assert "serving on 8080" in s.cli("logs", "db").stdout  # PORT inside is container_port
    assert len(s.containers()) == 2 and s.network()
    r = s.cli("down")
    assert r.returncode == 0, r.stderr
    assert s.containers() == [] and not s.network()


def test_conflicts_move_to_a_fallback_and_a_foreign_container_is_untouched(stacks):
    base = free_base((0, 1, 2))
    s = stacks(f"""
[services.web]
image = "{IMAGE}"
cmd = "{HTTPD}"
port = {base}
fallback = [{base + 1}, {base + 2}]
container_port = 8080
stop_timeout = 5
""")
    client = s.client
    c = client.api.create_container(IMAGE, command=["httpd", "-f", "-p", "8080", "-h", "/www"], ports=[(8080, "tcp")],
                                    host_config=client.api.create_host_config(port_bindings={8080: ("127.0.0.1", base)}),
                                    name=f"foreign-{base}")
    holder = socket.socket()
    try:
        client.api.start(c["Id"])
        holder.bind(("127.0.0.1", base + 1))
        holder.listen()
        r = s.cli("scan", "--json")
        rows = {p["port"]: p for p in json.loads(r.stdout)["ports"]}
        h = rows[base]["holder"]
        assert h["container"]["name"] == f"foreign-{base}" and h["container"]["image"] == IMAGE
        assert h["class"] == "external"
        assert f"container foreign-{base} ({IMAGE})" in s.cli("scan").stdout
        r = s.cli("up", "-d")
        assert r.returncode == 0, r.stdout + r.stderr
        rows = settled(s, "web.1")
        assert rows["web.1"]["port"] == base + 2  # past the container and the process
        reason = json.loads(s.cli("ports", "--json").stdout)["instances"][0]["reason"]
        assert f"container foreign-{base}" in reason
        assert "hello" in http(base + 2)
        # restart: a new container on the same port
        before = rows["web.1"]["container"]
        assert s.cli("restart", "web").returncode == 0
        rows = wait_for(lambda: (lambda r: r if r.get("web.1", {}).get("container") not in (None, before)
                                 and r["web.1"]["state"] == "healthy" else None)(s.ps()), timeout=60, interval=0.2,
                        what="a new container")
        assert rows["web.1"]["port"] == base + 2 and "hello" in http(base + 2)
        assert s.cli("down").returncode == 0
        assert client.api.inspect_container(c["Id"])["State"]["Running"]  # never touched
        assert "hello" in http(base)
    finally:
        holder.close()
        client.api.remove_container(c["Id"], force=True)


def test_sigkilled_up_then_down_leaves_nothing_and_up_reclaims(stacks):
    base = free_base((0,))
    s = stacks(web(base) + f"""
[services.side]
image = "{IMAGE}"
cmd = "trap 'exit 0' TERM; sleep 300 & wait"
""")
    up = s.up_foreground()
    settled(s, "web.1")
    settled(s, "side.1", state="running")
    os.kill(up.pid, signal.SIGKILL)
    up.wait(timeout=10)
    assert len(s.containers()) == 2  # the helpers keep them until `down`
    r = s.cli("down")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not s.containers(), timeout=30, what="no container left")
    assert not s.network()
    import psutil

    assert not [p for p in psutil.process_iter() if _marker(p) == s.id]
    # a helper killed too: its container stays behind; the next `up` removes it first
    up = s.up_foreground()
    rows = settled(s, "web.1")
    helper = rows["web.1"]
    os.kill(up.pid, signal.SIGKILL)
    up.wait(timeout=10)
    for p in psutil.process_iter():
        if _marker(p) == s.id:
            p.kill()
    assert s.containers(), "the containers outlive their killed helpers"
    r = s.cli("up", "-d")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "removed container" in r.stderr and "left from an earlier run" in r.stderr
    rows = settled(s, "web.1")
    assert rows["web.1"]["port"] == base and rows["web.1"]["container"] != helper["container"]
    assert s.cli("down").returncode == 0
    assert s.containers() == [] and not s.network()


def _marker(p) -> str | None:
    try:
        return p.environ().get("REVOSTACK_STACK")
    except Exception:
        return None


def test_run_inside_the_container_and_a_completed_job(stacks):
    base = free_base((0,))
    s = stacks(f"""
[services.migrate]
image = "{IMAGE}"
cmd = ["sh", "-c", "echo migrated > /tmp/done; echo migration ran"]
restart = "no"

[services.web]
image = "{IMAGE}"
cmd = "{HTTPD}"
port = {base}
container_port = 8080
stop_timeout = 5
depends_on = {{ migrate = "completed" }}
env = {{ GREETING = "hi from ${{port}}" }}
""")
    r = s.cli("run", "-s", "web", "--", "true")
    assert r.returncode == 4 and "not running" in r.stderr
    assert s.cli("up", "-d").returncode == 0
    rows = settled(s, "web.1")
    assert rows["migrate.1"]["state"] == "completed"
    assert "migration ran" in s.cli("logs", "migrate").stdout
    r = s.cli("run", "-s", "web", "--", "sh", "-c", "echo $GREETING; cat /www/index.html; exit 7")
    assert r.returncode == 7, r.stderr
    assert "hi from 8080" in r.stdout and "hello from the container" in r.stdout
    assert s.cli("down").returncode == 0 and s.containers() == []


def test_a_missing_image_fails_its_service_and_its_dependents_only(stacks):
    s = stacks(f"""
[services.db]
image = "revostack-test/not-here:1"
pull = "never"
cmd = "true"

[services.app]
cmd = "sleep 300"
depends_on = ["db"]

[services.other]
cmd = "sleep 300"
""")
    s.cli("up", "-d")
    rows = settled(s, "other.1", state="running")
    rows = wait_for(lambda: (lambda r: r if r.get("app.1", {}).get("state") == "failed" else None)(s.ps()),
                    timeout=30, what="app failed")
    assert rows["db.1"]["state"] == "failed"
    everything = wait_for(lambda: (lambda t: t if "app.1 not started" in t else None)(
        (s.root / ".revostack" / "logs" / "system.log").read_text()), timeout=10, what="the system log")
    assert 'image "revostack-test/not-here:1" is not present and pull = "never"' in everything, everything
    assert "app.1 not started: db.1 failed" in everything


def test_no_engine_is_one_line_exit_2_and_nothing_starts(tmp_path):
    (tmp_path / "Stackfile.toml").write_text(f"""
[services.db]
image = "{IMAGE}"
port = 18999
[services.app]
cmd = "sleep 300"
""")
    for args in (("up",), ("up", "-d")):
        r = cli(*args, cwd=tmp_path, env=clean_env(DOCKER_HOST="unix:///nonexistent/docker.sock"), timeout=30)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr
        assert "db runs as a container" in lines[0] and "DOCKER_HOST=unix:///nonexistent/docker.sock" in lines[0]
    assert not (tmp_path / ".revostack" / "state.json").exists()
    # a stack without an image never needs the engine
    (tmp_path / "Stackfile.toml").write_text('[services.app]\ncmd = "true"\nrestart = "no"\n')
    r = cli("up", cwd=tmp_path, env=clean_env(DOCKER_HOST="unix:///nonexistent/docker.sock"), timeout=60)
    assert r.returncode == 0, r.stderr


def test_blue_green_restart_of_a_container_drops_no_request(stacks):
    import threading

    base = free_base((0,))
    s = stacks(web(base, 'handoff = "proxy"\ndrain_timeout = 1\n'))
    assert s.cli("up", "-d").returncode == 0
    before = settled(s, "web.1")["web.1"]
    results: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                results.append("ok" if "hello" in http(base) else "bad")
            except OSError as e:
                results.append(f"failed: {e}")

    t = threading.Thread(target=client)
    t.start()
    try:
        wait_for(lambda: len(results) > 20, timeout=30, what="requests before the restart")
        assert s.cli("restart", "web").returncode == 0
        after = wait_for(lambda: (lambda r: r["web.1"] if r.get("web.1", {}).get("container") not in (None, before[
            "container"]) and r["web.1"].get("memory_bytes") else None)(s.ps()), timeout=60, interval=0.2,
            what="the new generation's container in ps")
        n = len(results)
        wait_for(lambda: len(results) > n + 20, timeout=30, what="requests after the restart")
    finally:
        stop.set()
        t.join(timeout=30)
    assert [r for r in results if r != "ok"] == []
    assert after["port"] == base and after["restarts"] == 1
    assert s.cli("down").returncode == 0 and s.containers() == []


def test_the_containers_demo_runs(docker, tmp_path):
    """examples/containers as the README says: make its image, `up`, and the three sides talk."""
    if not any(Path(d, "busybox").exists() for d in os.environ.get("PATH", "").split(":")):
        pytest.skip("no busybox on PATH for the demo's make-image.sh (apt-get install busybox-static)")
    import shutil

    root = tmp_path / "containers"
    shutil.copytree(Path(__file__).resolve().parent.parent / "examples" / "containers", root)
    r = subprocess.run(["sh", "make-image.sh"], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    s = Stack(docker, root, (root / "Stackfile.toml").read_text())
    try:
        if not all(_free(p) for p in (18600, 18610)):
            pytest.skip("the demo's ports 18600/18610 are taken here")
        r = s.cli("up", "-d")
        assert r.returncode == 0, r.stdout + r.stderr
        settled(s, "assets.1", "backend.1")
        assert "got from assets: <h1>served by the assets container</h1>" in http(18610)
        wait_for(lambda: "assets reachable by name" in s.cli("logs", "checker").stdout, timeout=30,
                 what="the checker container's output")
        assert "got from assets" in s.cli("logs", "checker").stdout  # it reached the process
    finally:
        s.cleanup()
    assert s.containers() == []


def _free(port: int) -> bool:
    from revostack import probe

    return probe.is_free(port, "0.0.0.0")


def test_images_are_pulled_for_real_and_a_failed_pull_says_why(stacks):
    """A registry of the test's own on loopback: `pull = "missing"` pulls (a summary line
    without a terminal), the service runs the pulled image; `always` with the registry gone
    keeps the image present; a missing one with the registry gone fails with the engine's words."""
    from fake_registry import Registry, busybox_layer

    layer = busybox_layer(_busybox(), APPLETS, {"www/index.html": b"pulled for real\n"})
    reg = Registry("revostack/pulled", "1", layer)
    image = f"127.0.0.1:{reg.port}/revostack/pulled:1"
    base = free_base((0,))
    try:
        s = stacks(web(base, image=image))
        r = s.cli("up", "-d")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"pulled {image}" in r.stderr and reg.pulls >= 1
        settled(s, "web.1")
        assert "pulled for real" in http(base)
        assert s.cli("down").returncode == 0
    finally:
        reg.close()
    # the registry is gone: "always" keeps the image here, with a line saying so
    s.path.write_text(s.path.read_text().replace("stop_timeout = 5", 'stop_timeout = 5\npull = "always"'))
    r = s.cli("up", "-d")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"could not pull {image}" in r.stderr and "using the image present" in r.stderr
    settled(s, "web.1")
    assert s.cli("down").returncode == 0
    s.client.api.remove_image(image, force=True)
    # and now it is not here either: the service fails with the engine's reason, `up -d` says so
    s.path.write_text(s.path.read_text().replace('pull = "always"', 'pull = "missing"'))
    r = s.cli("up", "-d")
    assert r.returncode == 1
    log = (s.root / ".revostack" / "logs" / "system.log").read_text()
    assert f"web.1 could not start: could not pull image {image}:" in log
    assert "connection refused" in log.lower() or "connect" in log.lower(), log


def test_conservative_keeps_a_stale_container_and_moves_around_it(stacks):
    import psutil

    base = free_base((0, 1))
    s = stacks(web(base))
    up = s.up_foreground()
    settled(s, "web.1")
    os.kill(up.pid, signal.SIGKILL)
    up.wait(timeout=10)
    for p in psutil.process_iter():
        if _marker(p) == s.id:
            p.kill()  # its helper too: the container is left, as after a crash of everything
    stale = [c["Id"] for c in s.containers()]
    assert len(stale) == 1
    r = s.cli("up", "-d", "--strategy", "conservative")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is left from an earlier run; conservative: not removed" in r.stderr
    rows = settled(s, "web.1")
    assert rows["web.1"]["port"] == base + 1 and rows["web.1"]["container"] != stale[0][:12]
    assert "hello" in http(base) and "hello" in http(base + 1)  # the leftover still serves, untouched
    assert s.cli("down").returncode == 0
    assert s.containers() == []  # down leaves nothing of the stack, leftovers included


def test_watch_restarts_a_container_and_scale_adds_one(stacks, tmp_path):
    """`watch` on bind-mounted code restarts the container (a new one, same port); `scale`
    adds an instance with a port of its own, reachable from the other containers as NAME-2."""
    base = free_base((0, 1))
    (tmp_path / "s" / "site").mkdir(parents=True)  # a volume's host folder must exist
    s = stacks(web(base, 'volumes = ["./site:/www:ro"]\nwatch = ["site/*.conf"]\n'))
    (s.root / "site" / "index.html").write_text("served from the host folder\n")
    (s.root / "site" / "app.conf").write_text("v1\n")
    assert s.cli("up", "-d").returncode == 0
    first = settled(s, "web.1")["web.1"]
    assert "served from the host folder" in http(base)
    (s.root / "site" / "app.conf").write_text("v2\n")
    after = wait_for(lambda: (lambda r: r["web.1"] if r.get("web.1", {}).get("restarts") == 1
                              and r["web.1"].get("container") not in (None, first["container"])
                              and r["web.1"]["state"] == "healthy" else None)(s.ps()),
                     timeout=60, interval=0.2, what="a restart on the change")
    assert after["port"] == base
    r = s.cli("scale", "web=2")
    assert r.returncode == 0, r.stderr
    rows = settled(s, "web.1", "web.2")
    assert rows["web.2"]["port"] == base + 1 and rows["web.2"]["container"] != rows["web.1"]["container"]
    assert "served from the host folder" in http(base + 1)
    r = s.cli("run", "-s", "web", "--", "wget", "-q", "-O", "-", "http://web-2:8080/")
    assert r.returncode == 0 and "served from the host folder" in r.stdout, r.stderr
    assert s.cli("down").returncode == 0 and s.containers() == []


def test_connect_types_into_a_container(stacks):
    s = stacks(f"""
[services.echo]
image = "{IMAGE}"
cmd = "while read line; do echo got $line; done"
stop_timeout = 1
""")
    assert s.cli("up", "-d").returncode == 0
    settled(s, "echo.1", state="running")
    r = cli("connect", "echo", cwd=s.root, env=clean_env(), timeout=60, input="hello container\n")
    assert r.returncode == 0, r.stderr
    assert "got hello container" in r.stdout
    assert "got hello container" in s.cli("logs", "echo").stdout
    assert s.cli("down").returncode == 0 and s.containers() == []

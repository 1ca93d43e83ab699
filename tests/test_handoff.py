"""Zero-downtime handoff (issue 11): a public port held by revostack (proxy or socket
activation), blue/green restarts, held connections, scale behind one port, the proxy's byte
handling. Real processes, real sockets, real signals."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in __import__("sys").path:  # `benchmarks` lives next to `revostack`
    __import__("sys").path.insert(0, str(REPO))

from benchmarks.load import Load, get  # noqa: E402
from conftest import cli, wait_for  # noqa: E402
from helpers_runtime import PY, Run, assert_nothing_left, clean_env, free_base, stack_id, write  # noqa: E402

pytestmark = pytest.mark.timeout(150)

# An HTTP server on fd 3 (socket activation) or on $PORT; stops gracefully on SIGTERM.
# GET / -> its pid; /slow -> after SLOW seconds. A file "broken" makes a new process never ready.
SERVER = r'''
import os, signal, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if os.path.exists("broken"):
    print("broken: not starting", flush=True)
    time.sleep(600)
delay = float(os.environ.get("START_DELAY", "0"))
time.sleep(delay)

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(float(os.environ.get("SLOW", "2")))
        body = f"{os.getpid()}".encode()  # the whole answer in one write: a kill lands before or after it
        self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    def log_message(self, *a):
        pass

with open(f"env.{os.getpid()}", "w") as f:
    f.write("\n".join(f"{k}={os.environ.get(k, '')}" for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "PORT")))
if os.environ.get("LISTEN_FDS") == "1":
    s = socket.socket(fileno=3)
    srv = ThreadingHTTPServer(s.getsockname()[:2], H, bind_and_activate=False)
    srv.socket.close()
    srv.socket = s
else:
    srv = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
srv.daemon_threads = False
srv.block_on_close = True
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
print(f"READY {os.getpid()}", flush=True)
srv.serve_forever()
srv.server_close()
'''

# A raw TCP server: "SINK\n" then bytes until EOF -> their sha256; "SOURCE n\n" -> n bytes of a
# pattern, then close; "ECHO\n" -> echoes until EOF, then closes.
RAW = r'''
import hashlib, os, socket, threading
def serve(c):
    f = c.makefile("rb")
    head = f.readline().split()
    if head[0] == b"SINK":
        h = hashlib.sha256()
        while True:
            d = f.read1(65536)
            if not d:
                break
            h.update(d)
        c.sendall(h.hexdigest().encode())
    elif head[0] == b"SOURCE":
        n = int(head[1]); block = bytes(range(256)) * 256
        while n > 0:
            c.sendall(block[:n]); n -= len(block)
    else:
        while True:
            d = f.read1(65536)
            if not d:
                break
            c.sendall(d)
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen(512)
print("READY", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


def stack(tmp_path: Path, body: str) -> Path:
    write(tmp_path / "server.py", SERVER)
    write(tmp_path / "raw.py", RAW)
    return write(tmp_path / "Stackfile.toml", body)


def up(tmp_path, reaper, *args) -> Run:
    reaper.stacks.append(stack_id(tmp_path / "Stackfile.toml"))
    return Run(reaper, ["up", *args], tmp_path)


def ps(tmp_path) -> dict[str, dict]:
    r = cli("ps", "--json", cwd=tmp_path, env=clean_env())
    return {i["instance"]: i for i in json.loads(r.stdout)["instances"]}


def serving_pid(tmp_path, instance: str) -> int | None:
    return ps(tmp_path).get(instance, {}).get("pid")


def web(mode: str, port: int, extra: str = "") -> str:
    health = 'health = { log = "READY" }' if mode == "socket" else ""
    return f"""
        [services.web]
        cmd = ["{PY}", "server.py"]
        port = {port}
        handoff = "{mode}"
        drain_timeout = 5
        stop_timeout = 5
        watch = ["*.py"]
        {health}
        {extra}
        """


def restart_and_wait(tmp_path, run: Run, kind: str, instance: str = "web.1") -> None:
    before = serving_pid(tmp_path, instance)
    n = len([line for line in run.system() if "took over" in line or " started (pid=" in line])
    if kind == "restart":
        assert cli("restart", "web", cwd=tmp_path, env=clean_env()).returncode == 0
    elif kind == "save":
        os.utime(tmp_path / "server.py")
    elif kind == "crash":
        os.kill(before, signal.SIGKILL)
    wait_for(lambda: len([line for line in run.system() if "took over" in line or " started (pid=" in line]) > n
             and serving_pid(tmp_path, instance) not in (None, before), 30, what=f"a new generation after {kind}")
    if kind == "crash":  # the replacement must be ready again before the next round
        wait_for(lambda: ps(tmp_path)[instance]["state"] == "healthy", 30, what="healthy again")


@pytest.mark.parametrize("mode,kinds", [("proxy", ("restart", "save", "crash")), ("socket", ("restart", "save"))])
def test_no_failed_request_through_restarts(tmp_path, reaper, mode, kinds):
    port = free_base((0,))
    stack(tmp_path, web(mode, port) + f"""
        [services.client]
        cmd = ["{PY}", "-c", "import time; time.sleep(600)"]
        depends_on = ["web"]
        """)
    run = up(tmp_path, reaper)
    run.wait_line(r"client\.1 started", 30, system=True)
    client = serving_pid(tmp_path, "client.1")
    with Load("127.0.0.1", port, workers=2) as load:
        for kind in kinds:
            for _ in range(3):
                restart_and_wait(tmp_path, run, kind)
                time.sleep(0.2)
    assert load.failed == 0, (load.failed, load.ok, load.errors)
    assert load.ok > 100
    assert len(load.bodies) >= 1 + 3 * len(kinds) - 1, load.bodies  # answered by every generation
    # the dependent was not touched; the public port never moved
    assert serving_pid(tmp_path, "client.1") == client
    assert ps(tmp_path)["client.1"]["restarts"] == 0
    assert ps(tmp_path)["web.1"]["port"] == port
    assert any("took over from pid" in line for line in run.system())
    assert run.stop() == 0
    assert_nothing_left(stack_id(tmp_path / "Stackfile.toml"))
    with pytest.raises(OSError):  # nothing listens on the public port after up ends
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.parametrize("mode", ["proxy", "socket"])
def test_slow_request_in_flight_completes_across_a_takeover(tmp_path, reaper, mode):
    port = free_base((0,))
    stack(tmp_path, web(mode, port))
    run = up(tmp_path, reaper, "--no-watch")
    run.wait_line(r"web\.1 healthy", 30, system=True)
    old = serving_pid(tmp_path, "web.1")
    result = {}
    t = threading.Thread(target=lambda: result.update(body=get("127.0.0.1", port, "/slow")))
    t.start()
    wait_for(lambda: (mode == "socket" or ps(tmp_path)["web.1"]["connections"] == 1) or None, 10, what="in flight")
    time.sleep(0.2)
    assert cli("restart", "web", cwd=tmp_path, env=clean_env()).returncode == 0
    run.wait_line(rf"web\.1 pid \d+ healthy: took over from pid {old}", 30, system=True)
    t.join(30)
    assert result["body"].endswith(str(old).encode()), result  # answered by the old generation
    run.wait_line(rf"web\.1 pid {old} \(replaced\) stopped after its connections closed", 30, system=True)
    new = serving_pid(tmp_path, "web.1")
    assert new != old and get("127.0.0.1", port).endswith(str(new).encode())
    assert run.stop() == 0


@pytest.mark.parametrize("mode", ["proxy", "socket"])
def test_a_new_generation_that_is_never_ready_leaves_the_old_one_serving(tmp_path, reaper, mode):
    port = free_base((0,))
    health = ('health = { log = "READY", start_period = 2 }' if mode == "socket"
              else 'health = { tcp = "${host}:${port}", start_period = 2 }')
    stack(tmp_path, web(mode, port).replace('health = { log = "READY" }', "") + health)
    run = up(tmp_path, reaper, "--no-watch")
    run.wait_line(r"web\.1 healthy", 30, system=True)
    old = serving_pid(tmp_path, "web.1")
    (tmp_path / "broken").write_text("")
    with Load("127.0.0.1", port, workers=1) as load:
        assert cli("restart", "web", cwd=tmp_path, env=clean_env()).returncode == 0
        m = run.wait_line(rf"web\.1 pid (\d+) not healthy within 2s .*: stopped; pid {old} keeps serving", 30,
                          system=True)
    assert load.failed == 0 and load.ok > 10, (load.failed, load.errors)
    assert load.bodies == {str(old).encode()}
    assert serving_pid(tmp_path, "web.1") == old
    assert not psutil.pid_exists(int(m.group(1))) or psutil.Process(int(m.group(1))).status() == psutil.STATUS_ZOMBIE
    assert run.stop() == 0


def test_scale_three_behind_one_port_survives_a_killed_instance(tmp_path, reaper):
    port = free_base((0,))
    stack(tmp_path, web("proxy", port, "scale = 3"))
    run = up(tmp_path, reaper, "--no-watch")
    for i in (1, 2, 3):
        run.wait_line(rf"web\.{i} healthy", 30, system=True)
    rows = ps(tmp_path)
    assert {rows[f"web.{i}"]["port"] for i in (1, 2, 3)} == {port}
    assert len({rows[f"web.{i}"]["private_port"] for i in (1, 2, 3)}) == 3
    with Load("127.0.0.1", port, workers=3) as load:
        wait_for(lambda: len(load.bodies) == 3 or None, 20, what="answers from all three")
        victim = rows["web.2"]["pid"]
        os.kill(victim, signal.SIGKILL)
        run.wait_line(r"web\.2 killed by SIGKILL", 20, system=True)
        wait_for(lambda: ps(tmp_path)["web.2"]["state"] == "healthy" or None, 30, what="web.2 back")
        time.sleep(0.5)
    assert load.failed == 0, (load.failed, load.errors)
    assert str(victim).encode() in load.bodies and len(load.bodies) == 4
    assert run.stop() == 0


def test_connections_are_held_until_the_first_generation_is_ready(tmp_path, reaper):
    port = free_base((0,))
    stack(tmp_path, web("proxy", port, 'env = { START_DELAY = "1.5" }'))
    run = up(tmp_path, reaper, "--no-watch")
    run.wait_line(r"web\.1 started", 30, system=True)
    t0 = time.monotonic()
    body = get("127.0.0.1", port)  # accepted at once, answered once the process is ready
    assert body.split(b"\r\n\r\n")[-1].isdigit()
    assert time.monotonic() - t0 > 0.5
    assert run.stop() == 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_proxy_bytes_checksums_half_close_many_clients_and_no_fd_leak(tmp_path, reaper):
    port = free_base((0,))
    stack(tmp_path, f"""
        [services.raw]
        cmd = ["{PY}", "raw.py"]
        port = {port}
        handoff = "proxy"
        health = {{ log = "READY" }}
        """)
    run = up(tmp_path, reaper, "--no-watch")
    run.wait_line(r"raw\.1 healthy", 30, system=True)
    sup = run.proc.pid
    # warm up the proxy once, then count the descriptors of `up`
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(b"ECHO\nx")
        c.shutdown(socket.SHUT_WR)
        assert c.recv(10) == b"x"
    fds_before = _fds(sup)

    # 50 MB up, checksum back after our half-close
    payload = os.urandom(1 << 20) * 50
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(b"SINK\n")
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)  # half-close: the answer must still come back
        got = b""
        while chunk := c.recv(65536):
            got += chunk
    assert got.decode() == hashlib.sha256(payload).hexdigest()

    # 50 MB down
    n = 50 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(f"SOURCE {n}\n".encode())
        h, total = hashlib.sha256(), 0
        while chunk := c.recv(1 << 16):
            h.update(chunk)
            total += len(chunk)
    block = bytes(range(256)) * 256
    want = hashlib.sha256()
    left = n
    while left > 0:
        want.update(block[:left])
        left -= len(block)
    assert total == n and h.hexdigest() == want.hexdigest()

    # 200 concurrent echo connections
    def echo(i: int, out: list) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
            msg = f"hello {i} ".encode() * 100
            c.sendall(b"ECHO\n" + msg)
            c.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := c.recv(65536):
                data += chunk
            out.append(data == msg)
    results: list[bool] = []
    threads = [threading.Thread(target=echo, args=(i, results)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results.count(True) == 200

    # clients that vanish: a reset, and a close mid-stream
    for i in range(50):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(f"SOURCE {10 * 1024 * 1024}\n".encode())
        c.recv(1000)
        if i % 2:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
    # 1,000 more short connections
    for _ in range(1000):
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"ECHO\nping")
            c.shutdown(socket.SHUT_WR)
            assert c.recv(10) == b"ping"
    wait_for(lambda: _fds(sup) <= fds_before or None, 20, what=f"the fds of up back to {fds_before}")
    wait_for(lambda: ps(tmp_path)["raw.1"]["connections"] == 0 or None, 10, what="no open connection")
    assert run.stop() == 0


@pytest.mark.parametrize("cmd", ["string", "array"])
def test_socket_activation_gets_fd_3_listen_pid_and_port(tmp_path, reaper, cmd):
    port = free_base((0,))
    command = f'"{PY} server.py"' if cmd == "string" else f'["{PY}", "server.py"]'
    stack(tmp_path, f"""
        [services.web]
        cmd = {command}
        port = {port}
        handoff = "socket"
        health = {{ log = "READY" }}
        """)
    run = up(tmp_path, reaper, "--no-watch")
    m = run.wait_line(r"READY (\d+)", 30, of="web.1")
    pid = int(m.group(1))
    assert pid == serving_pid(tmp_path, "web.1")  # the shell exec'd: the server itself is tracked
    env = dict(line.split("=", 1) for line in (tmp_path / f"env.{pid}").read_text().splitlines())
    assert env == {"LISTEN_FDS": "1", "LISTEN_PID": str(pid), "LISTEN_FDNAMES": "web", "PORT": str(port)}
    assert get("127.0.0.1", port).endswith(str(pid).encode())
    fd3 = os.readlink(f"/proc/{pid}/fd/3")
    assert fd3.startswith("socket:")
    assert run.stop() == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

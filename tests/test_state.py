"""End-to-end tests of `.revostack/` as a second terminal sees it: modes, state.json, the lock,
`down` (graceful, and after a SIGKILLed `up`), and state that is missing, broken, stale or lies."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time

import psutil
import pytest

from helpers_runtime import assert_nothing_left
from helpers_stack import (PY, Bystanders, alive, clean_env, cli, free_base, install, leave_stale, listen_cmd, rc,
                           read_state, stack_id, stack_up, wait_for, write)

SLEEPER = json.dumps([PY, "-c", "import time; print('worker up', flush=True); time.sleep(300)"])


def two_services(folder, port, *extra):
    install(folder)
    return write(folder / "Stackfile.toml", f"""
        [stack]
        name = "second"
        stop_timeout = 5

        [services.web]
        cmd = {listen_cmd(folder, *extra)}
        port = {port}
        fallback = [{port + 1}]

        [services.worker]
        cmd = {SLEEPER}
    """)


def run(*args, folder, timeout=30):
    return cli(*args, cwd=folder, env=clean_env(), timeout=timeout)


@pytest.mark.timeout(90)
def test_rundir_state_lock_and_graceful_down(tmp_path, reaper):
    port = free_base((0, 1))
    sf = two_services(tmp_path, port)
    sid = stack_id(sf)
    up = stack_up(reaper, tmp_path)
    web_pid, web_port = up.started("web.1")
    worker_pid, _ = up.started("worker.1")
    assert web_port == port
    up.wait_line(r"^web\.1 healthy", 30, system=True)

    rd = tmp_path / ".revostack"
    assert stat.S_IMODE(rd.stat().st_mode) == 0o700
    sock = rd / "control.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600

    def settled():
        s = read_state(tmp_path)
        inst = (s or {}).get("instances", {})
        ok = inst.get("web.1", {}).get("state") == "healthy" and inst.get("worker.1", {}).get("state") == "running"
        return s if ok else None

    state = wait_for(settled, 15, what="state.json to show web healthy and worker running")
    assert state["pid"] == up.proc.pid
    assert abs(state["create_time"] - psutil.Process(up.proc.pid).create_time()) < 0.05
    for name, pid, want_port in (("web.1", web_pid, port), ("worker.1", worker_pid, None)):
        i = state["instances"][name]
        assert i["pid"] == pid, (name, i)
        assert i["pgid"] == pid == os.getpgid(pid), (name, i)  # each child leads its own group
        assert abs(i["create_time"] - psutil.Process(pid).create_time()) < 0.05, (name, i)
        assert i["port"] == want_port and i["restarts"] == 0, (name, i)

    # a second `up` of the same Stackfile is refused, naming the running one
    second = run("up", "--no-watch", folder=tmp_path)
    assert second.returncode == 4, rc(second)
    assert f"already running, pid {up.proc.pid}; use `revostack down`" in second.stderr, rc(second)
    assert "Traceback" not in second.stderr + second.stdout

    # state.json is replaced atomically: a reader never sees a half-written file, even while a
    # restart rewrites it many times; each write is a new file renamed over the old one
    old = open(rd / "state.json", "rb")  # an open file: a rewrite in place would change what it reads
    before = old.read()
    restart = subprocess.Popen([PY, "-m", "revostack", "restart", "web"], cwd=tmp_path, env=clean_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reads, bad = 0, []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            text = (rd / "state.json").read_text()
        except FileNotFoundError:
            bad.append("missing")
            continue
        reads += 1
        try:
            s = json.loads(text)
        except ValueError:
            bad.append(text[-80:])
            continue
        if restart.poll() is not None and s["instances"]["web.1"]["pid"] not in (None, web_pid) \
                and s["instances"]["web.1"]["state"] == "healthy":
            break
    out, err = restart.communicate(timeout=30)
    assert restart.returncode == 0, (out, err)
    assert not bad, bad[:3]
    assert reads > 10
    old.seek(0)
    assert old.read() == before != (rd / "state.json").read_bytes()
    old.close()
    assert not list(rd.glob("*.tmp")), list(rd.iterdir())

    # `down` from another terminal stops it gracefully and says what it stopped
    down = run("down", folder=tmp_path, timeout=60)
    assert down.returncode == 0, rc(down)
    assert re.search(rf'stopped stack "second" \(up pid {up.proc.pid}\b', down.stdout), rc(down)
    assert "web.1 pid" in down.stdout and f"worker.1 pid {worker_pid}" in down.stdout, rc(down)
    assert up.wait(30) == 0
    assert any(s.startswith("sending SIGTERM to web.1") for s in up.system()), up.text
    assert_nothing_left(sid, [web_pid, worker_pid])
    assert not sock.exists()

    # nothing runs now: `down` says so and exits 0
    again = run("down", folder=tmp_path)
    assert again.returncode == 0, rc(again)
    assert "not running" in again.stdout and not again.stderr.strip(), rc(again)


@pytest.mark.timeout(60)
def test_two_ups_at_the_same_moment_exactly_one_runs(tmp_path, reaper):
    port = free_base((0, 1))
    sf = two_services(tmp_path, port)
    sid = stack_id(sf)
    ups = [stack_up(reaper, tmp_path), stack_up(reaper, tmp_path)]
    loser = wait_for(lambda: next((u for u in ups if u.proc.poll() is not None), None), 30, what="one `up` to give up")
    winner = ups[1 - ups.index(loser)]
    assert loser.wait(10) == 4, loser.text
    assert re.search(r"already running, pid \d+; use `revostack down`", loser.text), loser.text
    assert f"pid {winner.proc.pid};" in loser.text, loser.text
    winner.started("web.1")
    winner.wait_line(r"^web\.1 healthy", 30, system=True)
    assert winner.proc.poll() is None
    webs = [p for p in psutil.process_iter() if _marker(p) == (sid, "web.1")]
    assert len(webs) == 1, webs
    assert winner.stop(signal.SIGTERM) == 0
    assert_nothing_left(sid)


def _marker(p):
    try:
        env = p.environ()
        return env.get("REVOSTACK_STACK"), env.get("REVOSTACK_SERVICE")
    except (psutil.Error, OSError):
        return None, None


@pytest.mark.timeout(60)
def test_down_after_sigkilled_up_stops_every_leftover(tmp_path, reaper):
    port = free_base((0, 1))
    sf = two_services(tmp_path, port, "--grandchild")
    sid = stack_id(sf)
    up = stack_up(reaper, tmp_path)
    web_pid, _ = up.started("web.1")
    worker_pid, _ = up.started("worker.1")
    # (a child that writes after its `up` died gets EPIPE: let both finish printing first)
    up.wait_line(r"^\d\d:\d\d:\d\d worker\.1 +\| worker up")
    up.wait_line(r"^\d\d:\d\d:\d\d web\.1 +\| LISTENING")
    gc_pid = int(wait_for(lambda: (tmp_path / "grandchild.pid").exists() and (tmp_path / "grandchild.pid").read_text(),
                          20, what="the grandchild"))
    wait_for(lambda: {i.get("pid") for i in (read_state(tmp_path) or {}).get("instances", {}).values()}
             >= {web_pid, worker_pid}, 15, what="state.json to record both pids")
    # the grandchild escaped into its own session; only the marker proves it is the stack's
    assert os.getsid(gc_pid) == gc_pid != os.getsid(web_pid)
    assert psutil.Process(gc_pid).environ()["REVOSTACK_STACK"] == sid

    os.kill(up.proc.pid, signal.SIGKILL)
    up.wait(15)
    assert all(alive(p) for p in (web_pid, worker_pid, gc_pid))
    assert (tmp_path / ".revostack" / "lock").exists()  # the dead `up`'s lock stays on disk

    down = run("down", folder=tmp_path, timeout=60)
    assert down.returncode == 0, rc(down)
    assert "Traceback" not in down.stdout + down.stderr
    for pid in (web_pid, worker_pid, gc_pid):
        assert re.search(rf"^stopped pid {pid} \(", down.stdout, re.M), rc(down)
    assert re.search(rf"^stopped pid {gc_pid} \(.*carries the stack marker", down.stdout, re.M), rc(down)
    assert_nothing_left(sid, [web_pid, worker_pid, gc_pid])

    again = run("down", folder=tmp_path)
    assert again.returncode == 0 and "not running" in again.stdout, rc(again)


@pytest.mark.timeout(60)
def test_lock_of_a_killed_up_never_blocks_and_the_new_up_stops_leftovers(tmp_path, reaper):
    port = free_base((0, 1))
    sf = two_services(tmp_path, port, "--grandchild")
    sid = stack_id(sf)
    pids = leave_stale(reaper, tmp_path, "web", "worker")
    gc_pid = int(wait_for(lambda: (tmp_path / "grandchild.pid").exists() and (tmp_path / "grandchild.pid").read_text(),
                          20, what="the grandchild"))
    (tmp_path / "grandchild.pid").unlink()

    up = stack_up(reaper, tmp_path)
    for pid in (*pids.values(), gc_pid):
        up.wait_line(rf"^revostack: stopped pid {pid} \(.*\) left from an earlier run", 30)
    new_web, new_port = up.started("web.1")
    assert new_port == port  # the leftover's port was taken back
    assert new_web not in pids.values()
    up.wait_line(r"^web\.1 healthy", 30, system=True)
    for pid in (*pids.values(), gc_pid):
        assert not alive(pid), pid
    assert (read_state(tmp_path) or {}).get("pid") == up.proc.pid

    down = run("down", folder=tmp_path, timeout=60)
    assert down.returncode == 0, rc(down)
    assert up.wait(30) == 0
    assert_nothing_left(sid)


@pytest.mark.timeout(60)
def test_state_naming_an_unrelated_process_never_gets_it_killed(tmp_path, reaper):
    port = free_base((0, 1))
    sf = two_services(tmp_path, port)
    sid = stack_id(sf)
    sleeper = reaper.popen(["sleep", "300"], env=clean_env())
    threading.Thread(target=sleeper.wait, daemon=True).start()
    bystanders = Bystanders(sleeper)
    ct = psutil.Process(sleeper.pid).create_time()
    rd = tmp_path / ".revostack"
    rd.mkdir(mode=0o700)
    lie = {"version": 1, "pid": sleeper.pid, "create_time": ct - 1000, "instances": {
        "web.1": {"service": "web", "pid": sleeper.pid, "pgid": sleeper.pid, "create_time": ct - 1000,
                  "port": port, "state": "running", "restarts": 0}}}
    (rd / "state.json").write_text(json.dumps(lie))

    down = run("down", folder=tmp_path)
    assert down.returncode == 0, rc(down)
    assert re.search(rf"pid {sleeper.pid} \(sleep\).*left alone", down.stdout + down.stderr), rc(down)
    assert "stopped pid" not in down.stdout, rc(down)
    assert bystanders.died() == []

    (rd / "state.json").write_text(json.dumps(lie))
    up = stack_up(reaper, tmp_path)
    up.wait_line(rf"pid {sleeper.pid} \(sleep\).*left alone", 30)
    up.started("web.1")
    up.wait_line(r"^web\.1 healthy", 30, system=True)
    assert bystanders.died() == []
    down = run("down", folder=tmp_path, timeout=60)
    assert down.returncode == 0, rc(down)
    assert up.wait(30) == 0
    assert_nothing_left(sid)
    assert bystanders.died() == []


@pytest.mark.timeout(60)
def test_down_of_a_frozen_up(tmp_path, reaper):
    """An `up` that holds the lock but cannot answer (SIGSTOPped): `down` still stops it and
    every process of the stack."""
    port = free_base((0, 1))
    sf = two_services(tmp_path, port)
    sid = stack_id(sf)
    up = stack_up(reaper, tmp_path)
    web_pid, _ = up.started("web.1")
    worker_pid, _ = up.started("worker.1")
    up.wait_line(r"^web\.1 healthy", 30, system=True)
    os.kill(up.proc.pid, signal.SIGSTOP)
    down = run("down", folder=tmp_path, timeout=60)
    assert down.returncode == 0, rc(down)
    assert f"up pid {up.proc.pid} did not answer on its socket: sent SIGTERM)" in down.stdout, rc(down)
    assert "did not answer" in down.stderr and len(down.stderr.strip().splitlines()) == 1, rc(down)
    up.wait(30)
    assert_nothing_left(sid, [web_pid, worker_pid])
    again = run("down", folder=tmp_path)
    assert again.returncode == 0 and "not running" in again.stdout, rc(again)


class SilentSocket:
    """A control socket that accepts connections and never answers."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.held = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(c)  # read nothing, answer nothing

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def _dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.mark.timeout(60)
@pytest.mark.parametrize("state,sock", [
    ("missing", None),
    ("truncated", None),
    ("garbage", None),
    ("dead", "plain file"),
    ("dead", "nobody listens"),
    ("truncated", "never answers"),
])
def test_broken_state_and_stale_sockets(tmp_path, state, sock):
    port = free_base((0, 1))
    two_services(tmp_path, port)
    rd = tmp_path / ".revostack"
    silent = None
    if state != "missing" or sock:
        rd.mkdir(mode=0o700)
        pid = _dead_pid()
        full = json.dumps({"version": 1, "pid": pid, "create_time": 1.0, "instances": {
            "web.1": {"service": "web", "pid": pid, "pgid": pid, "create_time": 1.0, "port": port,
                      "state": "healthy", "restarts": 0}}})
        text = {"truncated": full[: len(full) // 2], "garbage": "\x00\x01 not json at all ]]",
                "dead": full}.get(state)
        if text is not None:
            (rd / "state.json").write_text(text)
    if sock == "plain file":
        (rd / "control.sock").write_text("not a socket\n")
    elif sock == "nobody listens":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(rd / "control.sock"))
        s.close()
    elif sock == "never answers":
        silent = SilentSocket(rd / "control.sock")
    try:
        commands = [("ps",), ("ps", "--json"), ("ports",), ("down",), ("restart", "web")]

        def one(args):
            t0 = time.monotonic()
            try:
                return args, run(*args, folder=tmp_path, timeout=20), time.monotonic() - t0
            except subprocess.TimeoutExpired:
                return args, None, time.monotonic() - t0

        with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
            results = list(pool.map(one, commands))
    finally:
        if silent is not None:
            silent.close()
    for args, r, took in results:
        assert r is not None, f"{args} hung"
        assert took < 15, (args, took)
        assert "Traceback" not in r.stdout + r.stderr, (args, rc(r))
        err = [line for line in r.stderr.splitlines() if line.strip()]
        want = 4 if args[0] == "restart" else 0
        assert r.returncode == want, (args, rc(r))
        # one clear line per problem: the socket, the state file (named), and for `restart` the refusal
        problems = (sock == "never answers") + (state in ("truncated", "garbage")) + (args[0] == "restart")
        assert len(err) <= max(problems, 1), (args, rc(r))
        if state in ("truncated", "garbage") and args[0] == "down":  # (down removes it: the others may not see it)
            assert "state.json" in r.stderr and "cannot be read" in r.stderr, (args, rc(r))
        assert all(line.startswith("revostack: ") for line in err), (args, rc(r))
        if args[0] == "restart":
            assert "not running" in r.stderr, (args, rc(r))
        if args == ("ps",) or args[0] == "down":
            assert "not running" in r.stdout, (args, rc(r))
        if args == ("ps", "--json"):
            assert json.loads(r.stdout)["instances"] == []
        if args[0] == "ports":
            assert "(plan:" in r.stdout and str(port) in r.stdout, (args, rc(r))
        if sock == "never answers":
            assert "did not answer" in r.stderr, (args, rc(r))

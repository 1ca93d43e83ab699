"""The long-running stack (issue 13): `up -d`, `attach`, `stop`, `scale`, `reload` and the
automatic reload on save — real processes, a real pseudo-terminal, real signals."""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
import os
import pty
import signal
import subprocess
import termios
import time
from pathlib import Path

import pytest

from conftest import cli, wait_for
from helpers_runtime import PY, alive, assert_nothing_left, clean_env, free_base, stack_id, write

pytestmark = pytest.mark.timeout(120)

# prints "NAME tick N" every 0.2 s; records its pid, its env and the signals it gets
TICKER = r'''
import os, signal, sys, time
name = os.environ["REVOSTACK_SERVICE"]
with open(f"{name}.env.tmp", "w") as f:  # the env first, then the pid: a new pid means both are there
    f.write("\n".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.isupper()))
os.replace(f"{name}.env.tmp", f"{name}.env")
with open(f"{name}.pid.tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(f"{name}.pid.tmp", f"{name}.pid")
def term(sig, _):
    with open(f"{name}.signals", "a") as f:
        f.write(signal.Signals(sig).name + "\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
if os.environ.get("SLOW"):
    time.sleep(float(os.environ["SLOW"]))
if os.environ.get("FAIL"):
    print("failing on purpose", flush=True)
    sys.exit(3)
port = os.environ.get("PORT")
if port:
    import socket
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(port))); s.listen()
print(f"{name} ready", flush=True)
n = 0
while os.environ.get("QUIET"):  # prints nothing more: it outlives a killed supervisor's pipe
    time.sleep(1)
while True:
    print(f"{name} tick {n}", flush=True)
    n += 1
    time.sleep(0.2)
'''


@pytest.fixture
def stack(tmp_path, reaper):
    """A folder with the ticker; returns a writer for its Stackfile. Whatever runs is stopped."""
    write(tmp_path / "ticker.py", TICKER)
    sf = tmp_path / "Stackfile.toml"

    def writer(text: str) -> Path:
        write(sf, text)
        sid = stack_id(sf)
        if sid not in reaper.stacks:
            reaper.stacks.append(sid)
        return sf

    yield writer
    if sf.exists():
        cli("down", cwd=tmp_path, env=clean_env(), timeout=60)


def svc(name: str, port: int | None = None, extra: str = "") -> str:
    return (f'[services.{name}]\ncmd = ["{PY}", "ticker.py"]\n' + (f"port = {port}\n" if port else "")
            + ('health = { log = "ready" }\n' if not port else "") + extra + "\n")


def up_d(folder: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return cli("up", "-d", *args, cwd=folder, env=clean_env(), timeout=timeout)


def ps(folder: Path) -> dict[str, dict]:
    r = cli("ps", "--json", cwd=folder, env=clean_env())
    return {i["instance"]: i for i in json.loads(r.stdout)["instances"]}


def pid_of(folder: Path, instance: str) -> int:
    return int((folder / f"{instance}.pid").read_text())


def supervisor_pid(folder: Path) -> int:
    return json.loads((folder / ".revostack" / "state.json").read_text())["pid"]


def test_up_d_survives_its_terminal_closing(tmp_path, stack):
    stack(svc("a") + svc("b"))
    master, slave = pty.openpty()

    def controlling_tty():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    p = subprocess.Popen([PY, "-m", "revostack", "up", "-d"], cwd=tmp_path, env=clean_env(), stdin=slave,
                         stdout=slave, stderr=slave, preexec_fn=controlling_tty)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        try:
            out += os.read(master, 65536)
        except OSError:
            break
    assert p.wait(10) == 0, out
    assert b"a.1" in out and b"healthy" in out and b"runs in the background" in out
    sup = supervisor_pid(tmp_path)
    os.close(master)  # the terminal goes away
    os.kill(sup, signal.SIGHUP)  # and a stray hang-up changes nothing either
    time.sleep(0.5)
    assert alive(sup)
    rows = ps(tmp_path)
    assert {r["state"] for r in rows.values()} == {"healthy"}
    r = cli("down", cwd=tmp_path, env=clean_env(), timeout=60)
    assert r.returncode == 0
    assert_nothing_left(stack_id(tmp_path / "Stackfile.toml"), [sup])


def test_up_d_waits_for_a_slow_check_and_exits_1_when_one_fails(tmp_path, stack):
    stack(svc("slow", extra='env = { SLOW = "1.5" }') + svc("bad", extra='env = { FAIL = "1" }\nrestart = "no"')
          + svc("fine"))
    t0 = time.monotonic()
    r = up_d(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert time.monotonic() - t0 > 1.4  # it waited for the slow one
    rows = ps(tmp_path)
    assert rows["slow.1"]["state"] == "healthy" and rows["fine.1"]["state"] == "healthy"
    assert rows["bad.1"]["state"] == "failed"
    assert "failed" in r.stdout and "slow.1" in r.stdout
    again = up_d(tmp_path)
    assert again.returncode == 4 and "already running" in again.stderr


def test_attach_filters_and_leaving_it_stops_nothing(tmp_path, stack, reaper):
    stack(svc("a") + svc("b"))
    assert up_d(tmp_path).returncode == 0
    p = reaper.popen([PY, "-m", "revostack", "attach", "a"], cwd=tmp_path, env=clean_env(),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[bytes] = []
    import threading

    threading.Thread(target=lambda: [lines.append(line) for line in p.stdout], daemon=True).start()
    wait_for(lambda: sum(b"a.1 tick" in line for line in lines) >= 3 or None, 20, what="a's ticks")
    assert not any(b"b.1 tick" in line for line in lines)
    assert all(line.split(b" | ")[0].split()[-1] == b"a.1" for line in lines), lines[:3]
    p.send_signal(signal.SIGINT)
    assert p.wait(10) == 0
    before = pid_of(tmp_path, "a.1")
    time.sleep(0.3)
    assert ps(tmp_path)["a.1"]["pid"] == before and ps(tmp_path)["b.1"]["state"] == "healthy"
    every = reaper.popen([PY, "-m", "revostack", "attach"], cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE)
    got: list[bytes] = []
    threading.Thread(target=lambda: [got.append(line) for line in every.stdout], daemon=True).start()
    wait_for(lambda: any(b"a.1 tick" in x for x in got) and any(b"b.1 tick" in x for x in got) or None, 20,
             what="both services' ticks")
    every.terminate()
    bad = cli("attach", "nope", cwd=tmp_path, env=clean_env())
    assert bad.returncode == 2 and "unknown service" in bad.stderr


def test_stop_restart_and_scale(tmp_path, stack):
    base = free_base((0, 1, 2, 3, 4))
    stack(svc("db") + svc("web", base, 'depends_on = ["db"]\nfallback = []') + svc("api", extra='depends_on = ["db"]'))
    assert up_d(tmp_path).returncode == 0
    web = pid_of(tmp_path, "web.1")
    r = cli("stop", "web", cwd=tmp_path, env=clean_env())
    assert r.returncode == 0 and "stopped web.1" in r.stdout
    wait_for(lambda: not alive(web) or None, 10, what="web gone")
    assert (tmp_path / "web.1.signals").read_text() == "SIGTERM\n"
    rows = ps(tmp_path)
    assert rows["web.1"]["state"] == "stopped" and rows["db.1"]["state"] == "healthy"
    time.sleep(0.5)
    assert ps(tmp_path)["web.1"]["state"] == "stopped"  # it stays stopped
    assert cli("restart", "web", cwd=tmp_path, env=clean_env()).returncode == 0
    wait_for(lambda: ps(tmp_path)["web.1"]["state"] in ("healthy", "running") or None, 20, what="web back")
    assert pid_of(tmp_path, "web.1") != web and ps(tmp_path)["web.1"]["port"] == base

    # --deps stops the dependents first
    r = cli("stop", "db", "--deps", cwd=tmp_path, env=clean_env())
    assert r.returncode == 0 and r.stdout.index("web.1") < r.stdout.index("db.1")
    assert {ps(tmp_path)[n]["state"] for n in ("db.1", "web.1", "api.1")} == {"stopped"}
    assert cli("restart", "db", "--deps", cwd=tmp_path, env=clean_env()).returncode == 0
    wait_for(lambda: all(ps(tmp_path)[n]["state"] == "healthy" for n in ("db.1", "web.1", "api.1")) or None, 20,
             what="all back")

    r = cli("scale", "web=3", cwd=tmp_path, env=clean_env())
    assert r.returncode == 0 and "started web.2, web.3" in r.stdout
    wait_for(lambda: len(ps(tmp_path)) == 5 and ps(tmp_path)["web.3"]["state"] == "healthy" or None, 20, what="3 webs")
    rows = ps(tmp_path)
    assert sorted(rows[f"web.{i}"]["port"] for i in (1, 2, 3)) == [base, base + 1, base + 2]
    first = pid_of(tmp_path, "web.1")
    w3 = pid_of(tmp_path, "web.3")
    r = cli("scale", "web=2", cwd=tmp_path, env=clean_env())
    assert r.returncode == 0 and "stopped web.3" in r.stdout  # the highest index goes
    wait_for(lambda: not alive(w3) or None, 10, what="web.3 gone")
    assert "web.3" not in ps(tmp_path) and pid_of(tmp_path, "web.1") == first
    for bad, words in ((["scale", "wbe=2"], 'did you mean "web"'), (["scale", "web=two"], "is not SERVICE=N"),
                       (["stop", "nope"], "unknown service")):
        r = cli(*bad, cwd=tmp_path, env=clean_env())
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert len(ps(tmp_path)) == 4  # nothing changed


def test_reload_applies_each_kind_of_change(tmp_path, stack):
    base = free_base((0, 1, 50))
    text = ('[env]\nLEVEL = "info"\n' + svc("a", base) + svc("b", extra='depends_on = ["a"]\nenv = { X = "1" }')
            + svc("c"))
    sf = stack(text)
    assert up_d(tmp_path, "--no-watch").returncode == 0
    pids = {n: pid_of(tmp_path, f"{n}.1") for n in "abc"}

    def reload():
        return cli("reload", cwd=tmp_path, env=clean_env(), timeout=60)

    r = reload()
    assert r.returncode == 0 and r.stdout.strip() == "reload: nothing changed"
    assert {n: pid_of(tmp_path, f"{n}.1") for n in "abc"} == pids

    write(sf, text.replace('env = { X = "1" }', 'env = { X = "2" }'))  # one service's env
    r = reload()
    assert r.returncode == 0 and r.stdout.strip() == "reload: b changed (env X)"
    wait_for(lambda: pid_of(tmp_path, "b.1") != pids["b"] or None, 20, what="b restarted")
    assert pid_of(tmp_path, "a.1") == pids["a"] and pid_of(tmp_path, "c.1") == pids["c"]
    assert "X=2" in (tmp_path / "b.1.env").read_text()

    text2 = text.replace('env = { X = "1" }', 'env = { X = "2" }').replace(svc("c"), svc("d"))
    write(sf, text2)  # c removed, d added
    r = reload()
    assert r.returncode == 0 and r.stdout.strip() == "reload: d added, c removed", r.stdout
    wait_for(lambda: "d.1" in ps(tmp_path) and ps(tmp_path)["d.1"]["state"] == "healthy" or None, 20, what="d")
    assert "c.1" not in ps(tmp_path) and not alive(pids["c"])

    write(sf, text2 + "oops = [\n")  # invalid: nothing changes, exit 2 with located errors
    b_now = pid_of(tmp_path, "b.1")
    r = reload()
    assert r.returncode == 2 and r.stderr.startswith("Stackfile.toml:") and "Traceback" not in r.stderr
    assert pid_of(tmp_path, "b.1") == b_now

    write(sf, text2.replace(f"port = {base}", f"port = {base + 50}"))  # a's port moves: b gets A_PORT
    r = reload()
    assert r.returncode == 0 and "a changed (port" in r.stdout and "b dependent (A_PORT)" in r.stdout, r.stdout
    wait_for(lambda: pid_of(tmp_path, "b.1") != b_now or None, 20, what="b restarted for a's port")
    wait_for(lambda: f"A_PORT={base + 50}" in (tmp_path / "b.1.env").read_text() or None, 10, what="new A_PORT")
    assert ps(tmp_path)["a.1"]["port"] == base + 50
    assert ps(tmp_path)["d.1"]["restarts"] == 0


def test_saving_the_stackfile_reloads_unless_no_watch(tmp_path, stack):
    text = '[env]\nLEVEL = "info"\n' + svc("a")
    sf = stack(text)
    assert up_d(tmp_path).returncode == 0
    a = pid_of(tmp_path, "a.1")
    write(sf, text.replace('"info"', '"debug"'))
    wait_for(lambda: pid_of(tmp_path, "a.1") != a or None, 20, what="a restarted by the automatic reload")
    assert "LEVEL=debug" in (tmp_path / "a.1.env").read_text()
    write(sf, text + "broken = [\n")
    system_log = tmp_path / ".revostack" / "logs" / "system.log"  # (`logs` needs a valid Stackfile)
    wait_for(lambda: "the Stackfile is not valid; nothing changed" in system_log.read_text() or None, 20,
             what="the invalid reload said")
    assert "reload: Stackfile.toml:" in system_log.read_text()  # with its located problem
    write(sf, text)
    assert cli("down", cwd=tmp_path, env=clean_env(), timeout=60).returncode == 0
    assert up_d(tmp_path, "--no-watch").returncode == 0
    a = pid_of(tmp_path, "a.1")
    write(sf, text.replace('"info"', '"warn"'))
    time.sleep(2.5)  # longer than the watcher's debounce: nothing may happen
    assert pid_of(tmp_path, "a.1") == a


def test_a_watch_glob_added_by_a_reload_is_watched(tmp_path, stack):
    """The watched set follows the stack: a glob that a reload adds takes effect."""
    (tmp_path / "src").mkdir()
    text = svc("a")
    sf = stack(text)
    assert up_d(tmp_path).returncode == 0
    system_log = tmp_path / ".revostack" / "logs" / "system.log"
    write(sf, text.replace('health = ', 'watch = ["src/*.txt"]\nhealth = '))
    wait_for(lambda: "changed: reloading" in system_log.read_text() or None, 20, what="the reload")
    wait_for(lambda: ps(tmp_path)["a.1"]["state"] == "healthy" or None, 20, what="a healthy after the reload")
    a = pid_of(tmp_path, "a.1")

    def touched():  # saved until the new watch (started again after the reload) sees it
        (tmp_path / "src" / "x.txt").write_text(str(time.monotonic()))
        return pid_of(tmp_path, "a.1") != a or None

    wait_for(touched, 30, interval=0.5, what="a restarted for src/x.txt")
    assert "src/x.txt changed: restarting a" in system_log.read_text()


def test_two_commands_at_once(tmp_path, stack):
    stack(svc("a") + svc("b") + svc("c"))
    assert up_d(tmp_path).returncode == 0
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda args: cli(*args, cwd=tmp_path, env=clean_env(), timeout=60),
                                [("restart", "a"), ("scale", "b=2"), ("stop", "c")]))
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    wait_for(lambda: (lambda rows: rows.get("b.2", {}).get("state") == "healthy" and rows["c.1"]["state"] == "stopped"
                      and rows["a.1"]["state"] == "healthy")(ps(tmp_path)) or None, 20, what="all three applied")


def test_down_after_the_detached_supervisor_was_killed(tmp_path, stack):
    stack(svc("a", extra='env = { QUIET = "1" }') + svc("b", extra='env = { QUIET = "1" }'))
    assert up_d(tmp_path).returncode == 0
    sup = supervisor_pid(tmp_path)
    children = [pid_of(tmp_path, "a.1"), pid_of(tmp_path, "b.1")]
    os.kill(sup, signal.SIGKILL)
    wait_for(lambda: not alive(sup) or None, 10, what="the supervisor gone")
    assert all(alive(p) for p in children)
    r = cli("down", cwd=tmp_path, env=clean_env(), timeout=60)
    assert r.returncode == 0 and all(f"stopped pid {p}" in r.stdout for p in children), r.stdout
    assert_nothing_left(stack_id(tmp_path / "Stackfile.toml"), children)

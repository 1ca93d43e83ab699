"""End-to-end tests of the commands that talk to a running `up` from another terminal:
`ps`, `ports`, `restart` (through the control socket) and `logs` (the log files)."""

from __future__ import annotations

import json
import re
import subprocess
import threading

import pytest

from helpers_runtime import assert_nothing_left
from helpers_stack import (PY, alive, clean_env, cli, free_base, install, listen_cmd, rc, stack_id, stack_up,
                           wait_for, write)

PS_KEYS = {"instance", "service", "state", "pid", "port", "health", "restarts", "uptime_s", "cpu_percent",
           "memory_bytes"}
PORTS_KEYS = {"instance", "service", "env", "preferred", "assigned", "reason", "holder"}


def run(*args, folder, timeout=30):
    return cli(*args, cwd=folder, env=clean_env(), timeout=timeout)


def starts(up, instance):
    """Every (pid, port) the ``NAME started`` lines announced, in order."""
    out = []
    for s in up.system():
        m = re.match(rf"^{re.escape(instance)} started \(pid=(\d+)(?:, port (\d+))?\)", s)
        if m:
            out.append((int(m.group(1)), int(m.group(2)) if m.group(2) else None))
    return out


def nth_start(up, instance, n, timeout=30):
    return wait_for(lambda: len(starts(up, instance)) >= n and starts(up, instance)[n - 1], timeout,
                    what=f"{instance} started {n} times; output:\n{up.text}")


@pytest.mark.timeout(90)
def test_ps_ports_and_restart_of_a_running_stack(tmp_path, reaper):
    base = free_base((0, 1, 10, 11))
    install(tmp_path)
    sf = write(tmp_path / "Stackfile.toml", f"""
        [stack]
        name = "ctl"
        stop_timeout = 5

        [services.db]
        cmd = {listen_cmd(tmp_path)}
        port = {base}
        fallback = [{base + 1}]

        [services.api]
        cmd = {listen_cmd(tmp_path)}
        port = {base + 10}
        fallback = [{base + 11}]
        depends_on = {{ db = "healthy" }}

        [services.worker]
        cmd = ["{PY}", "-c", "import time; print('worker up', flush=True); time.sleep(300)"]
        depends_on = {{ api = "started" }}
    """)
    sid = stack_id(sf)
    up = stack_up(reaper, tmp_path)
    db_pid, db_port = nth_start(up, "db.1", 1)
    api_pid, api_port = nth_start(up, "api.1", 1)
    worker_pid, _ = nth_start(up, "worker.1", 1)
    assert (db_port, api_port) == (base, base + 10)
    up.wait_line(r"^api\.1 healthy", 30, system=True)

    # ps: a table, and JSON with exactly the documented keys
    ps = run("ps", folder=tmp_path)
    assert ps.returncode == 0, rc(ps)
    for inst, state in (("db.1", "healthy"), ("api.1", "healthy"), ("worker.1", "running")):
        assert re.search(rf"^{re.escape(inst)}\s.*\b{state}\b", ps.stdout, re.M), rc(ps)
    assert re.search(rf"^db\.1\s+healthy\s+{db_pid}\s+{base}\b", ps.stdout, re.M), rc(ps)
    psj = run("ps", "--json", folder=tmp_path)
    assert psj.returncode == 0, rc(psj)
    data = json.loads(psj.stdout)
    assert data["stack"] == "ctl"
    rows = {r["instance"]: r for r in data["instances"]}
    assert set(rows) == {"db.1", "api.1", "worker.1"}
    for r in rows.values():
        assert set(r) == PS_KEYS, r
    assert rows["db.1"]["pid"] == db_pid and rows["db.1"]["port"] == base and rows["db.1"]["service"] == "db"
    assert rows["api.1"]["state"] == "healthy" and rows["api.1"]["health"] == "healthy"
    assert rows["worker.1"]["state"] == "running" and rows["worker.1"]["port"] is None
    assert rows["worker.1"]["pid"] == worker_pid and rows["worker.1"]["restarts"] == 0
    assert all(isinstance(r["uptime_s"], (int, float)) and r["uptime_s"] >= 0 for r in rows.values())
    assert all(isinstance(r["memory_bytes"], int) and r["memory_bytes"] > 0 for r in rows.values())

    # ports: the live assignments
    pj = run("ports", "--json", folder=tmp_path)
    assert pj.returncode == 0, rc(pj)
    ports = json.loads(pj.stdout)
    assert ports["live"] is True and ports["stack"] == "ctl"
    prow = {r["instance"]: r for r in ports["instances"]}
    assert set(prow) == {"db.1", "api.1"}
    assert all(set(r) == PORTS_KEYS for r in prow.values()), prow
    assert (prow["db.1"]["assigned"], prow["api.1"]["assigned"]) == (base, base + 10)
    assert prow["api.1"]["env"] == "PORT" and prow["api.1"]["preferred"] == base + 10
    text = run("ports", folder=tmp_path)
    assert text.returncode == 0 and "(live" in text.stdout, rc(text)

    # scan: the stack's own ports are held by the running stack itself, which is no conflict
    sc = run("scan", "--json", folder=tmp_path)
    assert sc.returncode == 0, rc(sc)
    held = {x["port"]: x["holder"] for x in json.loads(sc.stdout)["ports"] if x["status"] == "held"}
    assert {p: (h["pid"], h["class"]) for p, h in held.items()} == \
        {base: (db_pid, "ours-running"), base + 10: (api_pid, "ours-running")}, held

    # restart one service: same port, new pid, the old one gone, the others untouched
    r = run("restart", "api", folder=tmp_path)
    assert r.returncode == 0, rc(r)
    assert "api.1" in r.stdout
    new_api, new_port = nth_start(up, "api.1", 2)
    assert new_port == api_port and new_api != api_pid
    wait_for(lambda: not alive(api_pid), 15, what="the old api to be gone")
    up.wait_line(rf"^\d\d:\d\d:\d\d api\.1 +\| LISTENING {api_port} pid={new_api}", 30)
    assert len(starts(up, "db.1")) == 1 and len(starts(up, "worker.1")) == 1
    assert alive(db_pid) and alive(worker_pid)
    again = json.loads(run("ps", "--json", folder=tmp_path).stdout)
    assert {r["instance"]: r["restarts"] for r in again["instances"]}["api.1"] == 1

    # restart --deps: the service and every service that depends on it, directly or not
    r = run("restart", "--deps", "db", folder=tmp_path)
    assert r.returncode == 0, rc(r)
    assert all(n in r.stdout for n in ("db.1", "api.1", "worker.1")), rc(r)
    db2, db2_port = nth_start(up, "db.1", 2)
    api3, api3_port = nth_start(up, "api.1", 3)
    worker2, _ = nth_start(up, "worker.1", 2)
    assert (db2_port, api3_port) == (base, base + 10)
    assert db2 != db_pid and api3 != new_api and worker2 != worker_pid

    # unknown service: exit 2 with a suggestion
    bad = run("restart", "apy", folder=tmp_path)
    assert bad.returncode == 2 and 'did you mean "api"' in bad.stderr, rc(bad)

    down = run("down", folder=tmp_path, timeout=60)
    assert down.returncode == 0, rc(down)
    assert up.wait(30) == 0
    assert_nothing_left(sid)

    # not running: restart exits 4 with one line
    r = run("restart", "api", folder=tmp_path)
    assert r.returncode == 4, rc(r)
    assert "not running" in r.stderr and len(r.stderr.strip().splitlines()) == 1, rc(r)
    ps = run("ps", "--json", folder=tmp_path)
    assert ps.returncode == 0 and json.loads(ps.stdout)["instances"] == [], rc(ps)
    pj = json.loads(run("ports", "--json", folder=tmp_path).stdout)
    assert pj["live"] is False


# Two services that take turns through files: ping prints line 0, 2, 4 and pong line 1, 3, 5,
# each only after the other's previous line, so the log files interleave by time. Then each
# waits for go.<name> and prints "<name> late".
PINGPONG = r'''
import os, sys, time
name, turns = sys.argv[1], [int(t) for t in sys.argv[2].split(",")]


def wait(path):
    while not os.path.exists(path):
        time.sleep(0.01)


for t in turns:
    if t:
        wait(f"turn.{t}")
    time.sleep(0.05)
    print(f"{name} line {t}", flush=True)
    open(f"turn.{t + 1}", "w").close()
wait(f"go.{name}")
print(f"{name} late", flush=True)
time.sleep(300)
'''

LOG_RE = re.compile(r"^(\d\d:\d\d:\d\d) (\S+) +\| (.*)$")


@pytest.mark.timeout(60)
def test_logs_tail_filter_interleave_and_follow(tmp_path, reaper):
    (tmp_path / "pingpong.py").write_text(PINGPONG)
    sf = write(tmp_path / "Stackfile.toml", f"""
        [stack]
        name = "logs"
        stop_timeout = 5

        [services.ping]
        cmd = ["{PY}", "pingpong.py", "ping", "0,2,4"]

        [services.pong]
        cmd = ["{PY}", "pingpong.py", "pong", "1,3,5"]
    """)
    sid = stack_id(sf)
    up = stack_up(reaper, tmp_path)
    up.wait_line(r"pong\.1 +\| pong line 5", 30)

    def log_lines(*args):
        r = run("logs", *args, folder=tmp_path)
        assert r.returncode == 0, rc(r)
        out = []
        for line in r.stdout.splitlines():
            m = LOG_RE.match(line)
            assert m, (line, rc(r))
            out.append((m.group(2), m.group(3)))
        return out

    everything = wait_for(lambda: (lambda ls: ls if len(ls) >= 6 else None)(log_lines()), 15,
                          what="six lines in the log files")
    assert everything == [("ping.1" if t % 2 == 0 else "pong.1", f"{'ping' if t % 2 == 0 else 'pong'} line {t}")
                          for t in range(6)]
    assert log_lines("-n", "2") == [("ping.1", "ping line 4"), ("pong.1", "pong line 5")]
    assert log_lines("pong") == [("pong.1", f"pong line {t}") for t in (1, 3, 5)]
    assert log_lines("-n", "1", "ping") == [("ping.1", "ping line 4")]
    bad = run("logs", "pign", folder=tmp_path)
    assert bad.returncode == 2 and 'did you mean "ping"' in bad.stderr, rc(bad)

    # -f: what is there, then new lines as they come
    follow = reaper.popen([PY, "-m", "revostack", "logs", "-f", "ping"], cwd=tmp_path, env=clean_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    threading.Thread(target=lambda: [seen.append(line.rstrip("\n")) for line in follow.stdout], daemon=True).start()
    try:
        wait_for(lambda: any(s.endswith("ping line 4") for s in seen), 15, what="the existing lines")
        assert not any("late" in s for s in seen)
        (tmp_path / "go.ping").touch()
        wait_for(lambda: any(re.match(r"^\d\d:\d\d:\d\d ping\.1 +\| ping late$", s) for s in seen), 15,
                 what="the new line in `logs -f`")
        assert not any("pong" in s for s in seen), seen
        assert follow.poll() is None
    finally:
        follow.terminate()
        follow.wait(10)

    down = run("down", folder=tmp_path, timeout=60)
    assert down.returncode == 0, rc(down)
    assert up.wait(30) == 0
    assert_nothing_left(sid)
    # after the stack stopped, the logs of the last run are still there
    assert ("ping.1", "ping late") in log_lines("ping")

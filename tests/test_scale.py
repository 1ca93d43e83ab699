"""Big stacks (issue 20): one scan of the process table for every instance's tree, the cheap TCP
check, the open-files limit, summaries instead of walls of names — and 100 real services up,
listed, restarted and stopped with nothing left. Timings are the benchmarks' (`--only big`)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import socket
import subprocess
import sys

import pytest

from conftest import cli, wait_for
from helpers_runtime import PY, assert_nothing_left, clean_env, free_base, stack_id, write
from revostack import health, stats
from revostack.stats import Proc

pytestmark = pytest.mark.timeout(240)

SERVER = r'''
import os, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen(16)
print("listening", flush=True)
while True:
    s.accept()[0].close()
'''


# -- the process table, read once -------------------------------------------------------------------

def test_every_tree_comes_from_one_table():
    # 10 -> 11 -> 12 and 11 -> 13; 20 alone; 30 re-parented to the supervisor (1) but still in
    # group 10; 40 in a group of its own under 10's sibling; 99 is another user's
    table = {
        1: Proc(0, 1, 0.0, 0), 10: Proc(1, 10, 1.0, 100), 11: Proc(10, 10, 2.0, 200), 12: Proc(11, 10, 3.0, 300),
        13: Proc(11, 10, 0.5, 50), 20: Proc(1, 20, 0.1, 10), 30: Proc(1, 10, 4.0, 400), 40: Proc(20, 40, 1.0, 1),
        99: Proc(1, 99, 9.0, 9),
    }
    trees = stats.trees(table, [(10, 10), (20, 20), (77, 77), (13, None)])
    assert trees == [[10, 11, 12, 13, 30], [20, 40], [], [13]]


def test_the_table_holds_this_process_and_its_children(reaper):
    child = reaper.popen([PY, "-c", "import time; time.sleep(60)"], stdin=subprocess.DEVNULL)
    me = os.getpid()
    wait_for(lambda: child.pid in stats.table(), 10, what="the child in the table")
    table = stats.table()
    assert table[child.pid].ppid == me and table[child.pid].pgid == child.pid  # its own session
    assert table[me].pgid == os.getpgid(0) and table[me].rss > 1_000_000
    mine = stats.trees(table, [(me, None)])[0]
    assert me in mine and child.pid in mine


def test_the_sampler_measures_cpu_and_memory_of_a_whole_tree(reaper):
    busy = reaper.popen([PY, "-c", "import subprocess, sys, time\n"
                         "subprocess.Popen([sys.executable, '-c', 'while True: pass'])\ntime.sleep(60)"],
                        stdin=subprocess.DEVNULL)
    wait_for(lambda: len(stats.trees(stats.table(), [(busy.pid, busy.pid)])[0]) == 2, 10, what="the grandchild")
    snap = {"instances": {"x.1": {"service": "x", "pid": busy.pid, "pgid": busy.pid, "state": "running"}}}
    row = stats.rows(snap, 0.3)[0]
    assert row["cpu_percent"] > 30  # the spinning grandchild counts for its parent's instance
    assert row["memory_bytes"] > 2 * 5_000_000  # both processes' RSS


# -- the TCP check ---------------------------------------------------------------------------------

def test_the_tcp_check_connects_refuses_and_resolves():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    gone = closed.getsockname()[1]
    closed.close()
    try:
        results = asyncio.run(_checks([f"127.0.0.1:{port}", f"localhost:{port}", f"0.0.0.0:{port}",
                                       f"127.0.0.1:{gone}", "no-such-host.invalid:80"]))
    finally:
        srv.close()
    assert [ok for ok, _ in results] == [True, True, True, False, False]
    assert results[0][1] == f"tcp 127.0.0.1:{port}: connected"
    assert results[3][1] == f"tcp 127.0.0.1:{gone}: Connection refused"


async def _checks(targets):
    return [await health._tcp(t, 2.0) for t in targets]


# -- summaries -------------------------------------------------------------------------------------

def test_lists_are_cut_and_counted():
    from revostack.output import names

    assert names([f"s{i}.1" for i in range(3)]) == "s0.1, s1.1, s2.1"
    assert names([f"s{i}.1" for i in range(200)]) == "s0.1, s1.1, s2.1, s3.1, s4.1, s5.1 and 194 more"
    assert names([f"s{i}.1" for i in range(200)], verbose=True).count(", ") == 199


def test_down_names_the_notable_cases(tmp_path, reaper):
    write(tmp_path / "Stackfile.toml", f'''
[services.stubborn]
cmd = ["{PY}", "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"]
stop_timeout = 0.5

[services.forker]
cmd = ["{PY}", "-c", "import subprocess, time; subprocess.Popen(['sleep', '600'], start_new_session=True); print('up', flush=True); time.sleep(600)"]

[services.bad]
cmd = ["{PY}", "-c", "import sys; sys.exit(3)"]
restart = "no"
''')
    sid = stack_id(tmp_path / "Stackfile.toml")
    reaper.stacks.append(sid)
    r = cli("up", "-d", cwd=tmp_path, env=clean_env())
    wait_for(lambda: json.loads(cli("ps", "--json", cwd=tmp_path, env=clean_env()).stdout)["instances"][2]["state"]
             == "failed", 30, what="bad.1 failed")
    r = cli("down", cwd=tmp_path, env=clean_env())
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert re.fullmatch(r'stopped stack "\S+" \(up pid \d+, 3 instances: stubborn\.1 pid \d+, forker\.1 pid \d+, bad\.1\)',
                        lines[0]), lines
    assert lines[1:] == ["  killed after their stop_timeout: stubborn.1", "  had failed before: bad.1",
                         lines[3]] and re.fullmatch(r"  left behind by the stack and killed: pid \d+ \(sleep\)", lines[3])
    assert_nothing_left(sid)


# -- 100 real services -----------------------------------------------------------------------------

def test_a_hundred_services(tmp_path, reaper):
    n = 100
    base = free_base(tuple(range(0, 2 * n, 2)), lo=21000)
    write(tmp_path / "server.py", SERVER)
    write(tmp_path / "Stackfile.toml", '[stack]\nname = "hundred"\n\n' + "".join(
        f'[services.s{i}]\ncmd = ["{PY}", "server.py"]\nport = {base + 2 * i}\n\n' for i in range(n)))
    sid = stack_id(tmp_path / "Stackfile.toml")
    reaper.stacks.append(sid)

    def low_soft_limit():  # a soft limit this stack would run out of: up raises it to what it needs
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    r = subprocess.run([sys.executable, "-m", "revostack", "up", "-d"], cwd=tmp_path, env=clean_env(),
                       capture_output=True, text=True, timeout=180, preexec_fn=low_soft_limit)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "100 instances: 100 healthy", r.stdout  # a summary, not 100 rows
    r = cli("ps", "--json", cwd=tmp_path, env=clean_env())
    rows = json.loads(r.stdout)["instances"]
    assert len(rows) == n and {row["state"] for row in rows} == {"healthy"}
    assert all(row["pid"] and row["memory_bytes"] and row["cpu_percent"] is not None and row["port"] for row in rows)
    supervisor = json.loads((tmp_path / ".revostack" / "state.json").read_text())["pid"]
    with open(f"/proc/{supervisor}/limits") as f:
        soft = int(next(line for line in f if line.startswith("Max open files")).split()[3])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert soft >= min(hard, 256 + 8 * n), f"the soft limit of open files stayed {soft}"
    r = cli("ps", cwd=tmp_path, env=clean_env())
    assert len(r.stdout.splitlines()) == n + 1  # tables stay tables
    r = cli("restart", *[f"s{i}" for i in range(n)], cwd=tmp_path, env=clean_env())
    assert r.stdout.strip() == "restarting 100 instances: s0.1, s1.1, s2.1, s3.1, s4.1, s5.1 and 94 more", r.stdout
    wait_for(lambda: all(row["state"] == "healthy" and row["restarts"] == 1 for row in
                         json.loads(cli("ps", "--json", cwd=tmp_path, env=clean_env()).stdout)["instances"]),
             120, 0.5, what="all restarted and healthy")
    pids = [row["pid"] for row in json.loads(cli("ps", "--json", cwd=tmp_path, env=clean_env()).stdout)["instances"]]
    r = cli("down", cwd=tmp_path, env=clean_env(), timeout=120)
    assert r.returncode == 0 and re.fullmatch(r'stopped stack "hundred" \(up pid \d+, 100 instances\)\n', r.stdout), \
        r.stdout
    assert_nothing_left(sid, pids)

"""Supervision for development (issue 6): restart policies with backoff, the reset of the count,
liveness, restart on file change, --no-watch, and `top`. Real processes, real files, real time."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from conftest import cli, wait_for
from helpers_runtime import PY, Run, assert_nothing_left, clean_env, stack_id, write

pytestmark = pytest.mark.timeout(90)


def starts(path: Path) -> list[float]:
    try:
        return [float(x) for x in path.read_text().split()]
    except OSError:
        return []


CRASHER = """
import sys, time
with open("crash.starts", "a") as f:
    f.write(f"{time.time():.6f}\\n")
print("crashing", flush=True)
sys.exit(3)
"""


def test_crash_loop_backs_off_then_fails(tmp_path, reaper):
    write(tmp_path / "crash.py", CRASHER)
    write(tmp_path / "Stackfile.toml", f"""
        [services.crash]
        cmd = ["{PY}", "crash.py"]
        max_restarts = 3
        backoff = 0.3

        [services.steady]
        cmd = ["{PY}", "-c", "import time; print('steady', flush=True); time.sleep(600)"]
        """)
    reaper.stacks.append(stack_id(tmp_path / "Stackfile.toml"))
    run = Run(reaper, ["up", "--no-watch"], tmp_path)
    run.wait_line(r"crash\.1 failed: exited with code 3; gave up after 3 restarts", 60, system=True)
    times = starts(tmp_path / "crash.starts")
    assert len(times) == 4, times  # the first run and 3 restarts
    gaps = [b - a for a, b in zip(times, times[1:])]
    # 0.3, 0.6, 1.2 s of backoff: each gap at least its delay, and growing
    for gap, delay in zip(gaps, (0.3, 0.6, 1.2)):
        assert gap >= delay * 0.9, (gaps, delay)
    assert gaps[0] < gaps[1] < gaps[2], gaps
    # it stays down, and the other service is untouched
    ps = json.loads(cli("ps", "--json", cwd=tmp_path, env=clean_env()).stdout)
    states = {i["instance"]: i for i in ps["instances"]}
    assert states["crash.1"]["state"] == "failed"
    assert states["steady.1"]["state"] == "running" and states["steady.1"]["restarts"] == 0
    assert len(run.of("steady.1")) == 1
    assert run.stop() == 1  # a service failed
    assert_nothing_left(reaper.stacks[-1])


def test_restart_count_resets_after_a_stable_run(tmp_path, reaper):
    # each run lives 1.5 s and then crashes; with REVOSTACK_STABLE_AFTER=1 every run counts as
    # stable, so max_restarts = 1 is never reached and the delay stays at its first value
    write(tmp_path / "Stackfile.toml", f"""
        [services.flaky]
        cmd = ["{PY}", "-c", "import time,sys; open('runs','a').write(f'{{time.time()}}\\\\n'); time.sleep(1.5); sys.exit(1)"]
        max_restarts = 1
        backoff = 0.2
        """)
    reaper.stacks.append(stack_id(tmp_path / "Stackfile.toml"))
    run = Run(reaper, ["up", "--no-watch"], tmp_path, env=clean_env(REVOSTACK_STABLE_AFTER="1"))
    wait_for(lambda: len(starts(tmp_path / "runs")) >= 4, 40, what="four runs")
    assert not any("gave up" in line for line in run.system()), run.text
    delays = re.findall(r"flaky\.1 restarting in ([\d.]+)s \((\d+)/1", run.text)
    assert delays and all(d == ("0.2", "1") for d in delays), delays
    run.stop()
    assert_nothing_left(reaper.stacks[-1])


def test_count_does_not_reset_without_a_stable_run(tmp_path, reaper):
    write(tmp_path / "Stackfile.toml", f"""
        [services.flaky]
        cmd = ["{PY}", "-c", "import time,sys; time.sleep(0.3); sys.exit(1)"]
        max_restarts = 2
        backoff = 0.1
        """)
    reaper.stacks.append(stack_id(tmp_path / "Stackfile.toml"))
    run = Run(reaper, ["up", "--no-watch"], tmp_path, env=clean_env(REVOSTACK_STABLE_AFTER="60"))
    run.wait_line(r"flaky\.1 failed: .*gave up after 2 restarts", 30, system=True)
    assert re.findall(r"restarting in ([\d.]+)s", run.text) == ["0.1", "0.2"]
    assert run.wait(30) == 1  # every service ended for good: up exits by itself, with 1
    assert_nothing_left(reaper.stacks[-1])


SERVER = """
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        sick = os.path.exists("sick")
        if sick:
            open("sick-hits", "a").write("x")
        self.send_response(500 if sick else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass

print("serving on", os.environ["PORT"], "pid", os.getpid(), flush=True)
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def test_liveness_failure_restarts_and_a_recovery_in_time_does_not(tmp_path, reaper):
    write(tmp_path / "server.py", SERVER)
    write(tmp_path / "Stackfile.toml", f"""
        [services.web]
        cmd = ["{PY}", "server.py"]
        port = 0
        health = {{ http = "http://${{host}}:${{port}}/", interval = 0.2, retries = 8 }}
        """)
    reaper.stacks.append(stack_id(tmp_path / "Stackfile.toml"))
    run = Run(reaper, ["up", "--no-watch"], tmp_path)
    pid, port = run.started("web.1")
    run.wait_line(r"^web\.1 healthy", 30, system=True)
    hits = tmp_path / "sick-hits"
    # one failed check, then healthy again: it stays up (retries = 8)
    (tmp_path / "sick").write_text("")
    wait_for(hits.exists, 10, what="a failed check")
    (tmp_path / "sick").unlink()
    run.wait_line(r"^web\.1 healthy again", 10, system=True)
    assert "unhealthy" not in run.text
    # now keep it sick: 8 failures in a row -> unhealthy -> restarted on the same port
    (tmp_path / "sick").write_text("")
    run.wait_line(r"^web\.1 unhealthy: 8 failed checks in a row", 20, system=True)
    assert len(hits.read_text()) >= 8
    (tmp_path / "sick").unlink()
    wait_for(lambda: len([l for l in run.system() if l.startswith("web.1 started")]) >= 2, 20, what="a restart")
    new = re.search(r"pid=(\d+), port (\d+)", [l for l in run.system() if l.startswith("web.1 started")][-1])
    assert int(new.group(1)) != pid and int(new.group(2)) == port
    wait_for(lambda: len([l for l in run.system() if re.match(r"web\.1 healthy \(", l)]) >= 2, 20, what="healthy again")
    assert run.stop() == 0
    assert_nothing_left(reaper.stacks[-1])


def test_unhealthy_with_restart_no_stays_up(tmp_path, reaper):
    write(tmp_path / "server.py", SERVER)
    write(tmp_path / "Stackfile.toml", f"""
        [services.web]
        cmd = ["{PY}", "server.py"]
        port = 0
        restart = "no"
        health = {{ http = "http://${{host}}:${{port}}/", interval = 0.2, retries = 2 }}
        """)
    reaper.stacks.append(stack_id(tmp_path / "Stackfile.toml"))
    run = Run(reaper, ["up", "--no-watch"], tmp_path)
    pid, _ = run.started("web.1")
    run.wait_line(r"^web\.1 healthy", 30, system=True)
    (tmp_path / "sick").write_text("")
    run.wait_line(r"^web\.1 unhealthy", 20, system=True)
    ps = json.loads(cli("ps", "--json", cwd=tmp_path, env=clean_env()).stdout)
    web = ps["instances"][0]
    assert web["state"] == "unhealthy" and web["pid"] == pid
    run.stop()
    assert_nothing_left(reaper.stacks[-1])


WATCHED = """
import os, sys, time
print("up", os.environ["REVOSTACK_SERVICE"], "port", os.environ.get("PORT"), flush=True)
time.sleep(600)
"""


def _watch_stack(tmp_path: Path) -> None:
    write(tmp_path / "api" / "app.py", WATCHED)
    write(tmp_path / "api" / "tests" / "test_x.py", "")
    write(tmp_path / "ui" / "main.js", "")
    write(tmp_path / "ui" / "svc.py", WATCHED)
    write(tmp_path / "Stackfile.toml", f"""
        [services.api]
        cmd = ["{PY}", "app.py"]
        cwd = "api"
        port = 0
        health = {{ cmd = "true" }}
        watch = ["**/*.py"]
        watch_ignore = ["tests/**"]

        [services.ui]
        cmd = ["{PY}", "svc.py"]
        cwd = "ui"
        watch = ["*.js"]
        """)


@pytest.mark.timeout(120)
def test_file_change_restarts_only_the_matching_service_once_per_burst(tmp_path, reaper):
    _watch_stack(tmp_path)
    reaper.stacks.append(stack_id(tmp_path / "Stackfile.toml"))
    run = Run(reaper, ["up"], tmp_path)
    api_pid, api_port = run.started("api.1")
    ui_pid, _ = run.started("ui.1")
    run.wait_line(r"^api\.1 healthy", 30, system=True)
    time.sleep(0.5)  # let the watcher settle on its folders
    app = tmp_path / "api" / "app.py"
    for i in range(5):  # a burst of saves
        app.write_text(WATCHED + f"# save {i}\n")
        time.sleep(0.02)
    run.wait_line(r"^app\.py changed: restarting api", 20, system=True)
    wait_for(lambda: len([l for l in run.system() if l.startswith("api.1 started")]) == 2, 20, what="api restart")
    new = re.search(r"pid=(\d+), port (\d+)", [l for l in run.system() if l.startswith("api.1 started")][-1])
    assert int(new.group(1)) != api_pid and int(new.group(2)) == api_port
    # an ignored file and a non-matching file restart nothing
    (tmp_path / "api" / "tests" / "test_x.py").write_text("# changed\n")
    (tmp_path / "api" / "notes.txt").write_text("x")
    (tmp_path / "ui" / "svc.py").write_text(WATCHED + "# ui python file, not a watched glob\n")
    # the ui's own glob restarts only ui
    (tmp_path / "ui" / "main.js").write_text("console.log(1)\n")
    run.wait_line(r"^main\.js changed: restarting ui", 20, system=True)
    wait_for(lambda: len([l for l in run.system() if l.startswith("ui.1 started")]) == 2, 20, what="ui restart")
    time.sleep(1.0)  # give any wrong restart from the other files time to show
    assert len([l for l in run.system() if l.startswith("api.1 started")]) == 2, run.text
    assert len([l for l in run.system() if "changed: restarting" in l]) == 2, run.text
    # restarts on change do not count against max_restarts and are not failures
    assert run.stop() == 0
    assert_nothing_left(reaper.stacks[-1])


def test_no_watch_turns_watching_off(tmp_path, reaper):
    _watch_stack(tmp_path)
    reaper.stacks.append(stack_id(tmp_path / "Stackfile.toml"))
    run = Run(reaper, ["up", "--no-watch"], tmp_path)
    run.started("api.1")
    run.wait_line(r"^api\.1 healthy", 30, system=True)
    (tmp_path / "api" / "app.py").write_text(WATCHED + "# changed\n")
    (tmp_path / "ui" / "main.js").write_text("x\n")
    time.sleep(2.0)  # the watcher's debounce is well under this: nothing may happen
    assert not [l for l in run.system() if "changed" in l], run.text
    assert len([l for l in run.system() if l.startswith("api.1 started")]) == 1
    run.stop()
    assert_nothing_left(reaper.stacks[-1])


def test_top_renders_once_and_leaves_the_stack_alone(tmp_path, reaper):
    write(tmp_path / "Stackfile.toml", f"""
        [services.one]
        cmd = ["{PY}", "-c", "import time; time.sleep(600)"]
        [services.two]
        cmd = ["{PY}", "-c", "import time; time.sleep(600)"]
        """)
    reaper.stacks.append(stack_id(tmp_path / "Stackfile.toml"))
    run = Run(reaper, ["up", "--no-watch"], tmp_path)
    p1, _ = run.started("one.1")
    p2, _ = run.started("two.1")
    r = cli("top", "--once", cwd=tmp_path, env=clean_env(), timeout=30)
    assert r.returncode == 0, r.stderr
    for needle in ("one.1", "two.1", "running", str(p1), str(p2), "MEMORY"):
        assert needle in r.stdout, r.stdout
    ps = json.loads(cli("ps", "--json", cwd=tmp_path, env=clean_env()).stdout)
    assert {i["pid"] for i in ps["instances"]} == {p1, p2}
    assert all(i["memory_bytes"] and i["memory_bytes"] > 1_000_000 for i in ps["instances"])
    run.stop()
    assert_nothing_left(reaper.stacks[-1])


def test_top_interactive_quits_on_q(tmp_path, reaper):
    """`top` on a real pseudo-terminal: draws the table, and q leaves with the stack running."""
    import os
    import pty
    import select

    write(tmp_path / "Stackfile.toml", f"""
        [services.one]
        cmd = ["{PY}", "-c", "import time; time.sleep(600)"]
        """)
    reaper.stacks.append(stack_id(tmp_path / "Stackfile.toml"))
    run = Run(reaper, ["up", "--no-watch"], tmp_path)
    pid, _ = run.started("one.1")
    master, slave = pty.openpty()
    top = reaper.popen([PY, "-m", "revostack", "top"], stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path,
                       env=clean_env(TERM="xterm", COLUMNS="120", LINES="30"))
    os.close(slave)
    seen = b""

    def drawn():
        nonlocal seen
        while select.select([master], [], [], 0.05)[0]:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
        return b"one.1" in seen

    wait_for(drawn, 30, what="top to draw")
    os.write(master, b"q")
    assert top.wait(20) == 0
    os.close(master)
    ps = json.loads(cli("ps", "--json", cwd=tmp_path, env=clean_env()).stdout)
    assert ps["instances"][0]["pid"] == pid  # untouched
    run.stop()
    assert_nothing_left(reaper.stacks[-1])


def test_up_dashboard_shows_the_table_and_q_stops_the_stack(tmp_path, reaper):
    """`up --dashboard` on a real pseudo-terminal: the live table replaces the scrolling log
    (the log file still gets the lines), and q stops the whole stack."""
    import os
    import pty
    import select

    write(tmp_path / "Stackfile.toml", f"""
        [services.chatty]
        cmd = ["{PY}", "-c", "import time\\nwhile True:\\n    print('tick', flush=True); time.sleep(0.1)"]
        """)
    stack = stack_id(tmp_path / "Stackfile.toml")
    reaper.stacks.append(stack)
    master, slave = pty.openpty()
    up = reaper.popen([PY, "-m", "revostack", "up", "--dashboard", "--no-watch"], stdin=slave, stdout=slave,
                      stderr=slave, cwd=tmp_path, env=clean_env(TERM="xterm", COLUMNS="120", LINES="30"))
    os.close(slave)
    seen = b""

    def read():
        nonlocal seen
        while select.select([master], [], [], 0.05)[0]:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
        return seen

    wait_for(lambda: b"chatty.1" in read() and b"running" in seen, 30, what="the dashboard")
    log = tmp_path / ".revostack" / "logs" / "chatty.1.log"
    wait_for(lambda: log.exists() and log.read_text().count("tick") >= 3, 20, what="ticks in the log")
    assert b"| tick" not in seen  # the lines go to the log, not over the table
    os.write(master, b"q")
    assert up.wait(30) == 0
    os.close(master)
    assert_nothing_left(stack)

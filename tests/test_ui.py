"""The interactive view (issue 19): every key and pane through Textual's headless pilot against a
real running stack, and the real program in a real terminal (tmux): select, search, restart
under a client looping on a handoff port, quit leaving the stack running (`ui`) or stopping it
(`up --ui`), the terminal restored."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import cli, wait_for
from helpers_runtime import PY, assert_nothing_left, clean_env, free_base, stack_id, write

pytest.importorskip("textual")
pytestmark = pytest.mark.timeout(180)

CHATTY = r'''
import os, sys, time
n = 0
while True:
    print(f"chatty tick {n}", flush=True)
    n += 1
    time.sleep(0.05)
'''

WEB = r'''
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(os.getpid()).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
print("web ready", flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''

ECHO = r'''
import sys
print("echo ready", flush=True)
for line in sys.stdin:
    print("echo: " + line.strip(), flush=True)
'''


def stackfile(folder: Path, port: int) -> Path:
    write(folder / "chatty.py", CHATTY)
    write(folder / "web.py", WEB)
    write(folder / "echo.py", ECHO)
    return write(folder / "Stackfile.toml", f'''
[stack]
name = "viewed"

[services.web]
cmd = ["{PY}", "web.py"]
port = {port}
handoff = "proxy"
health = {{ http = "http://127.0.0.1:${{port}}/", interval = 1.0 }}

[services.chatty]
cmd = ["{PY}", "chatty.py"]

[services.echo]
cmd = ["{PY}", "echo.py"]

[services.crasher]
cmd = ["{PY}", "-c", "import sys; print('crashing now', flush=True); sys.exit(3)"]
restart = "no"
''')


@pytest.fixture
def running(tmp_path, reaper):
    sf = stackfile(tmp_path, free_base((0, 1)))
    text = sf.read_text()
    reaper.stacks.append(stack_id(sf))
    r = cli("up", "-d", cwd=tmp_path, env=clean_env())
    assert r.returncode in (0, 1), r.stdout + r.stderr  # crasher fails on purpose
    yield tmp_path
    sf.write_text(text)  # a test that broke it on purpose must not keep `down` from reading it
    cli("down", cwd=tmp_path, env=clean_env(), timeout=60)


def ps(folder: Path) -> dict:
    r = cli("ps", "--json", cwd=folder, env=clean_env())
    return {i["instance"]: i for i in json.loads(r.stdout)["instances"]}


# -- the headless pilot --------------------------------------------------------------------------

async def _until(pilot, predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _select(app, instance: str) -> int:
    names = [r["instance"] for r in app.rows]
    return names.index(instance) - app.selected


def test_every_key_in_the_headless_pilot(running):
    from revostack.rundir import RunDir
    from revostack.stackfile import load
    from revostack.ui import ALL, StackView

    stack = load(running / "Stackfile.toml")
    app = StackView(RunDir(stack).socket_path, stack.name, scrollback=500)

    def status():
        return str(app.query_one("#status").render())

    async def drive():
        async with app.run_test(size=(160, 40)) as pilot:
            await _until(pilot, lambda: len(app.rows) == 4, what="four instances")
            # the services pane: states, and why the crasher failed
            await _until(pilot, lambda: {r["instance"]: r["state"] for r in app.rows}.get("crasher.1") == "failed")
            crasher = next(r for r in app.rows if r["instance"] == "crasher.1")
            assert crasher["last_exit"] == "exited with code 3"
            web = next(r for r in app.rows if r["instance"] == "web.1")
            assert web["handoff"] == "proxy" and web["private_port"]
            # the output pane: everything, then one instance's, bounded
            await _until(pilot, lambda: any("chatty tick" in line for line in app.output.all), what="output")
            for _ in range(_select(app, "chatty.1")):
                await pilot.press("j")
            for _ in range(-_select(app, "chatty.1")):
                await pilot.press("k")
            await pilot.press("enter")
            assert app.log_view.view == "chatty.1"
            await _until(pilot, lambda: len(app.output.lines("chatty.1")) == 500, 60, what="the scrollback full")
            await pilot.pause(0.2)
            assert all(re.search(r" chatty\.1 +\| chatty tick \d+$", line) for line in app.log_view.source())
            # scrolling back stops following and counts what arrives
            await pilot.press("pageup")
            assert not app.log_view.follow
            await _until(pilot, lambda: app.log_view.new_since() > 5, what="new lines counted")
            assert re.search(r"\d+ new \(End follows\)", status())
            await pilot.press("end")
            assert app.log_view.follow
            # search, next/previous, filter
            await pilot.press("slash")
            await pilot.press(*"tick 1")
            await pilot.press("enter")
            lv = app.log_view
            assert lv.term == "tick 1" and lv.matches()
            last = lv.current  # counted from the view's first line: new lines do not move it
            await pilot.press("N")
            assert lv.current is not None and lv.current < last
            await pilot.press("n")
            assert lv.current == last
            line = lv.source()[lv.current_index()]
            assert "tick 1" in line
            assert "matches" in status()
            await pilot.press("f")
            assert lv.filtered and all("tick 1" in line for line in lv.source())
            await pilot.press("f")
            await pilot.press("a")
            assert lv.view == ALL
            # help
            await pilot.press("question_mark")
            assert app.query_one("#help").has_class("shown")
            await pilot.press("question_mark")
            # restart (blue/green: web is behind its proxy)
            for _ in range(abs(_select(app, "web.1"))):
                await pilot.press("j" if _select(app, "web.1") > 0 else "k")
            await pilot.press("r")
            await _until(pilot, lambda: "restarting web.1" in status(), what="the restart said")
            await _until(pilot, lambda: next(r for r in app.rows if r["instance"] == "web.1")["restarts"] == 1
                         and next(r for r in app.rows if r["instance"] == "web.1")["state"] == "healthy",
                         60, what="web restarted")
            # stop, start again
            for _ in range(abs(_select(app, "chatty.1"))):
                await pilot.press("j" if _select(app, "chatty.1") > 0 else "k")
            await pilot.press("s")
            await _until(pilot, lambda: next(r for r in app.rows if r["instance"] == "chatty.1")["state"] == "stopped",
                         what="chatty stopped")
            await pilot.press("s")
            await _until(pilot, lambda: next(r for r in app.rows if r["instance"] == "chatty.1")["state"] == "running",
                         what="chatty running again")
            # scale up and down
            await pilot.press("plus")
            await _until(pilot, lambda: any(r["instance"] == "chatty.2" for r in app.rows), what="chatty.2")
            await pilot.press("minus")
            await _until(pilot, lambda: not any(r["instance"] == "chatty.2" for r in app.rows), what="chatty.2 gone")
            # reload: nothing changed
            await pilot.press("R")
            await _until(pilot, lambda: "reload: nothing changed" in status(), what="the reload said")
            # an action that fails is said, and the view goes on
            good = (running / "Stackfile.toml").read_text()
            (running / "Stackfile.toml").write_text(good + "\n[services.bad\n")
            await pilot.press("R")
            await _until(pilot, lambda: "reload: " in status() and "Stackfile.toml" in status(), what="the error")
            assert app.is_running
            (running / "Stackfile.toml").write_text(good)
            # typing into an instance, as `revostack connect` does
            for _ in range(abs(_select(app, "echo.1"))):
                await pilot.press("j" if _select(app, "echo.1") > 0 else "k")
            await pilot.press("i")
            await _until(pilot, lambda: app.typing is not None, what="typing mode")
            await pilot.press(*"hello q", "enter")  # q is typed, not a quit
            await _until(pilot, lambda: any("echo: hello q" in line for line in app.output.lines("echo.1")),
                         what="the echo")
            await pilot.press("escape")
            assert app.typing is None
            await pilot.press("q")
        return app.return_code

    assert asyncio.run(drive()) == 0
    assert ps(running)["web.1"]["state"] == "healthy"  # q left the stack running


# -- a real terminal -------------------------------------------------------------------------------

TMUX = shutil.which("tmux")


class Tmux:
    def __init__(self, folder: Path, name: str):
        self.name = name
        self.folder = folder
        env = " ".join(f"{k}={v}" for k, v in {"XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", "")}.items())
        subprocess.run([TMUX, "new-session", "-d", "-s", name, "-x", "150", "-y", "40", "-c", str(folder)], check=True,
                       env={**clean_env(), "TERM": "xterm-256color"})
        # a detached session may keep the server's default size: make it 150 x 40
        subprocess.run([TMUX, "set-option", "-t", name, "window-size", "manual"], capture_output=True)
        subprocess.run([TMUX, "resize-window", "-t", name, "-x", "150", "-y", "40"], capture_output=True)
        self.type(f"export {env} PS1='$ '; stty -a > before.txt; clear", "Enter")

    def type(self, *keys: str) -> None:
        subprocess.run([TMUX, "send-keys", "-t", self.name, *keys], check=True)

    def screen(self) -> str:
        return subprocess.run([TMUX, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True).stdout

    def wait(self, text: str, timeout: float = 30.0) -> str:
        try:
            return wait_for(lambda: text in self.screen() and self.screen(), timeout, 0.1, what=repr(text))
        except AssertionError:
            raise AssertionError(f"{text!r} not on screen:\n{self.screen()}") from None

    def close(self) -> None:
        subprocess.run([TMUX, "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def tmux(running):
    if TMUX is None:
        pytest.skip("tmux is not installed (apt-get install tmux): the real-terminal tests need it")
    t = Tmux(running, f"rv{os.getpid()}{int(time.monotonic() * 1000) % 100000}")
    yield t
    t.close()


def _loop(port: int, stop: threading.Event, counts: dict) -> None:
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                r.read()
            counts["ok"] += 1
        except OSError:
            counts["failed"] += 1


def test_ui_in_a_real_terminal(running, tmux):
    rows = ps(running)
    port = rows["web.1"]["port"]
    tmux.type(f"{PY} -m revostack ui; stty -a > after.txt; echo VIEW-LEFT $?", "Enter")
    tmux.wait("conn")  # the services pane, with the handoff port column: PORT -> private, N conn
    tmux.wait("exited with code 3")  # why the crasher failed
    tmux.type("/")
    tmux.type("tick 2", "Enter")
    tmux.wait("matches")
    # a restart with a client looping on the handoff port: not one failed request
    stop, counts = threading.Event(), {"ok": 0, "failed": 0}
    client = threading.Thread(target=_loop, args=(port, stop, counts), daemon=True)
    client.start()
    try:
        wait_for(lambda: counts["ok"] > 20, 20, what="the client running")
        web_at = list(ps(running)).index("web.1")  # the view lists the instances in the stack's order
        for _ in range(10):
            tmux.type("k")  # to the top
        for _ in range(web_at):
            tmux.type("j")
        tmux.type("r")
        tmux.wait("restarting web.1")
        wait_for(lambda: ps(running)["web.1"]["restarts"] == 1 and ps(running)["web.1"]["state"] == "healthy", 60,
                 0.3, what="web restarted")
        time.sleep(1)
    finally:
        stop.set()
        client.join(15)
    assert counts["failed"] == 0 and counts["ok"] > 20, counts
    tmux.type("q")
    tmux.wait("VIEW-LEFT 0")
    assert (running / "before.txt").read_text() == (running / "after.txt").read_text()  # the terminal restored
    assert ps(running)["web.1"]["state"] == "healthy"  # the stack keeps running


def test_up_ui_stops_the_stack_on_q(tmp_path, reaper):
    if TMUX is None:
        pytest.skip("tmux is not installed (apt-get install tmux): the real-terminal tests need it")
    sf = stackfile(tmp_path, free_base((0, 1)))
    sid = stack_id(sf)
    reaper.stacks.append(sid)
    t = Tmux(tmp_path, f"rvu{os.getpid()}")
    try:
        t.type(f"{PY} -m revostack up --ui; stty -a > after.txt; echo UP-LEFT $?", "Enter")
        t.wait("chatty tick")
        t.wait("healthy")
        t.type("q")
        t.wait("UP-LEFT 0", 60)
        assert (tmp_path / "before.txt").read_text() == (tmp_path / "after.txt").read_text()
        r = cli("ps", cwd=tmp_path, env=clean_env())
        assert "is not running" in r.stdout
        assert_nothing_left(sid)
        log = (tmp_path / ".revostack" / "logs" / "system.log").read_text()
        assert "chatty.1 stopped" in log  # the stack was stopped, not left running
        # the terminal closing stops it too, and the view does not linger
        t.type(f"clear; {PY} -m revostack up --ui", "Enter")
        t.wait("chatty tick")
        t.close()
        wait_for(lambda: "is not running" in cli("ps", cwd=tmp_path, env=clean_env()).stdout, 60, 0.3,
                 what="the stack stopped when its terminal closed")
        assert_nothing_left(sid)
    finally:
        t.close()
        cli("down", cwd=tmp_path, env=clean_env(), timeout=60)


def test_without_a_terminal_or_a_stack(tmp_path):
    stackfile(tmp_path, free_base((0, 1)))
    r = cli("ui", cwd=tmp_path, env=clean_env())  # captured output: not a terminal
    assert r.returncode == 2 and r.stderr.strip().startswith("revostack: revostack ui needs a terminal"), r.stderr
    r = cli("up", "--ui", cwd=tmp_path, env=clean_env())
    assert r.returncode == 2 and "needs a terminal" in r.stderr
    r = subprocess.run(["script", "-qec", f"{PY} -m revostack ui", "/dev/null"], cwd=tmp_path, env=clean_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 4 and "is not running" in r.stdout, r.stdout + r.stderr

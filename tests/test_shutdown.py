"""End-to-end tests of stopping `revostack up`: reverse dependency order, SIGKILL after
stop_timeout, grandchildren (same group, own session, daemons) and every stop signal."""

from __future__ import annotations

import signal

import pytest

from conftest import wait_for
from helpers_runtime import PY, Run, alive, assert_nothing_left, fake_cmd, install_fake, stack_id, write


def _pid(path) -> int:
    def read():
        try:
            text = path.read_text()
        except OSError:
            return None
        return int(text) if text.endswith("\n") else None

    return wait_for(read, 20, interval=0.05, what=f"{path.name}")


@pytest.mark.timeout(90)
def test_sigint_stops_everything_in_reverse_order_and_leaves_nothing(tmp_path, reaper):
    install_fake(tmp_path)
    write(tmp_path / "stubborn.py", """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        while True:
            time.sleep(3600)
    """)
    write(tmp_path / "spawner.py", """
        import subprocess, time
        child = subprocess.Popen(["sleep", "300"])
        with open("spawner.child", "w") as f:
            f.write(f"{child.pid}\\n")
        while True:
            time.sleep(3600)
    """)
    write(tmp_path / "setsider.py", f"""
        import subprocess, time
        # a grandchild in a session of its own: the stop signal to our group cannot reach it
        child = subprocess.Popen(["{PY}", "-c", "import time; time.sleep(300)"], start_new_session=True)
        with open("setsider.child", "w") as f:
            f.write(f"{{child.pid}}\\n")
        while True:
            time.sleep(3600)
    """)
    write(tmp_path / "daemon.py", """
        import os, sys, time
        # the classic double fork: the daemon is orphaned, in its own session, stdio closed
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                fd = os.open(os.devnull, os.O_RDWR)
                for i in (0, 1, 2):
                    os.dup2(fd, i)
                with open("daemon.child.tmp", "w") as f:
                    f.write(f"{os.getpid()}\\n")
                os.replace("daemon.child.tmp", "daemon.child")
                while True:
                    time.sleep(3600)
            os._exit(0)
        os.wait()
        print("daemon launched", flush=True)
    """)
    sf = write(tmp_path / "Stackfile.toml", f"""
        [services.db]
        cmd = {fake_cmd(tmp_path, "db", "sleep")}

        [services.api]
        cmd = {fake_cmd(tmp_path, "api", "sleep")}
        depends_on = {{ db = "started" }}

        [services.web]
        cmd = {fake_cmd(tmp_path, "web", "sleep")}
        depends_on = {{ api = "started" }}

        [services.stubborn]
        cmd = ["{PY}", "stubborn.py"]
        stop_timeout = 1

        [services.spawner]
        cmd = ["{PY}", "spawner.py"]

        [services.setsider]
        cmd = ["{PY}", "setsider.py"]

        [services.daemon]
        cmd = ["{PY}", "daemon.py"]
        restart = "no"
    """)
    sid = stack_id(sf)
    reaper.stacks.append(sid)
    up = Run(reaper, ["up", "--no-watch"], tmp_path)
    pids = {name: up.started(f"{name}.1")[0] for name in ("db", "api", "web", "stubborn", "spawner", "setsider")}
    up.wait_line("^ignoring SIGTERM$", 30, of="stubborn.1")
    up.wait_line(r"^daemon\.1 exited with code 0$", 30, system=True)
    grandchildren = {name: _pid(tmp_path / f"{name}.child") for name in ("spawner", "setsider", "daemon")}
    for name, pid in grandchildren.items():
        assert alive(pid), name
    wait_for(lambda: all(alive(p) for p in pids.values()), 10, what="every service running")

    assert up.stop(signal.SIGINT, timeout=45) == 0
    system = up.system()
    order = [next(i for i, s in enumerate(system) if s.startswith(f"sending SIGTERM to {n}.1 (pid {pids[n]})"))
             for n in ("web", "api", "db")]
    assert order == sorted(order), system
    # the dependents are stopped (their exit reported) before their dependencies are signalled
    assert system.index("web.1 stopped (killed by SIGTERM)") < order[1]
    assert system.index("api.1 stopped (killed by SIGTERM)") < order[2]
    assert "stubborn.1 did not stop within 1s: killed" in system
    assert "stubborn.1 stopped (killed by SIGKILL)" in system
    for name in ("setsider", "daemon"):
        pid = grandchildren[name]
        assert any(s.startswith(f"killed pid {pid} ") and s.endswith("left behind by the stack") for s in system), \
            (name, system)
    assert_nothing_left(sid, list(pids.values()) + list(grandchildren.values()))
    assert not (tmp_path / ".revostack" / "state.json").exists()
    assert not (tmp_path / ".revostack" / "control.sock").exists()


@pytest.mark.timeout(60)
def test_sigterm_and_sighup_stop_up(tmp_path, reaper):
    runs = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        folder = tmp_path / sig.name.lower()
        install_fake(folder)
        sf = write(folder / "Stackfile.toml", f"""
            [services.svc]
            cmd = {fake_cmd(folder, "svc", "sleep")}
        """)
        sid = stack_id(sf)
        reaper.stacks.append(sid)
        runs[sig] = (sid, Run(reaper, ["up", "--no-watch"], folder))
    for sig, (sid, up) in runs.items():
        pid, _ = up.started("svc.1")
        assert up.stop(sig) == 0, up.text
        system = up.system()
        assert f"{sig.name} received, stopping" in system
        assert f"sending SIGTERM to svc.1 (pid {pid})" in system
        assert "svc.1 stopped (killed by SIGTERM)" in system
        assert_nothing_left(sid, [pid])

"""End-to-end tests of `revostack up`: start order under each condition, every kind of health
check, a dependency that never gets healthy, exit codes, the lock, subsets, invalid files."""

from __future__ import annotations

import re
import signal

import pytest

from conftest import cli
from helpers_runtime import (PY, Run, assert_nothing_left, fake_cmd, install_fake, read_float, stack_id,
                             write)


@pytest.mark.timeout(90)
def test_order_conditions_and_every_health_kind(tmp_path, reaper):
    install_fake(tmp_path)
    f = lambda name, mode, delay=0.0: fake_cmd(tmp_path, name, mode, delay)  # noqa: E731
    sf = write(tmp_path / "Stackfile.toml", f"""
        [stack]
        name = "order"
        stop_timeout = 5

        [services.tcpsvc]
        cmd = {f("tcpsvc", "tcp", 0.6)}
        port = 0
        health = {{ tcp = "${{host}}:${{port}}" }}

        [services.httpsvc]
        cmd = {f("httpsvc", "http", 0.6)}
        port = 0
        health = {{ http = "http://${{host}}:${{port}}/health" }}

        [services.cmdsvc]
        cmd = {f("cmdsvc", "flag", 0.6)}
        health = {{ cmd = "test -f cmdsvc.flag" }}

        [services.logsvc]
        cmd = {f("logsvc", "log", 0.6)}
        health = {{ log = 'READY \\w+' }}

        [services.fastlog]      # prints its ready line at once, maybe before spawn() returns
        cmd = ["/bin/sh", "-c", "echo READY fast; exec sleep 300"]
        health = {{ log = "READY", start_period = 10 }}
        restart = "no"

        [services.after_fastlog]
        cmd = {f("after_fastlog", "sleep")}
        depends_on = {{ fastlog = "healthy" }}

        [services.defsvc]       # a port and no health table: the default TCP check
        cmd = {f("defsvc", "tcp", 0.6)}
        port = 0

        [services.job]
        cmd = {f("job", "job", 0.6)}
        restart = "no"

        [services.slow]
        cmd = {f("slow", "log", 3.0)}
        health = {{ log = "READY" }}

        [services.after_tcp]
        cmd = {f("after_tcp", "sleep")}
        depends_on = {{ tcpsvc = "healthy" }}

        [services.after_http]
        cmd = {f("after_http", "sleep")}
        depends_on = {{ httpsvc = "healthy" }}

        [services.after_cmd]
        cmd = {f("after_cmd", "sleep")}
        depends_on = {{ cmdsvc = "healthy" }}

        [services.after_log]
        cmd = {f("after_log", "sleep")}
        depends_on = {{ logsvc = "healthy" }}

        [services.after_def]
        cmd = {f("after_def", "sleep")}
        depends_on = ["defsvc"]   # list form: "healthy", because defsvc has the default check

        [services.after_job]
        cmd = {f("after_job", "sleep")}
        depends_on = {{ job = "completed" }}

        [services.after_started]
        cmd = {f("after_started", "sleep")}
        depends_on = {{ slow = "started" }}
    """)
    sid = stack_id(sf)
    reaper.stacks.append(sid)
    up = Run(reaper, ["up", "--no-watch"], tmp_path)

    # every dependent starts, each once its dependency reached its condition
    for name in ("after_tcp", "after_http", "after_cmd", "after_log", "after_fastlog", "after_def", "after_job",
                 "after_started"):
        up.started(f"{name}.1", timeout=45)
    up.wait_line(r"^slow\.1 healthy", 45, system=True)

    t = lambda name, what: read_float(tmp_path / f"{name}.{what}")  # noqa: E731
    for svc in ("tcpsvc", "httpsvc", "cmdsvc", "logsvc", "defsvc"):
        assert t(svc, "ready") >= t(svc, "start") + 0.5
        assert t(f"after_{svc.replace('svc', '')}", "start") >= t(svc, "ready"), svc
    assert t("after_job", "start") >= t("job", "ready")
    # "started" does not wait for the health check: slow gets ready 3 s after it starts
    assert t("after_started", "start") < t("slow", "ready")
    system = up.system()
    assert system.index(f"slow.1 started (pid={up.started('slow.1')[0]})") < \
        system.index(f"after_started.1 started (pid={up.started('after_started.1')[0]})")

    ports = {}
    for svc in ("tcpsvc", "httpsvc", "defsvc"):
        pid, port = up.started(f"{svc}.1")
        assert port and port > 0
        ports[svc] = port
    assert len(set(ports.values())) == 3
    expected = {
        "tcpsvc": rf"tcp 127\.0\.0\.1:{ports['tcpsvc']}: connected",
        "httpsvc": rf"GET http://127\.0\.0\.1:{ports['httpsvc']}/health: 200",
        "cmdsvc": r"test -f cmdsvc\.flag: exit 0",
        "logsvc": r"log /READY \\w\+/: seen",
        "fastlog": r"log /READY/: seen",
        "defsvc": rf"tcp 127\.0\.0\.1:{ports['defsvc']}: connected",
    }
    for svc, detail in expected.items():
        hits = [s for s in system if re.fullmatch(rf"{svc}\.1 healthy \({detail}\)", s)]
        assert len(hits) == 1, (svc, system)
    assert "job.1 exited with code 0" in system

    # the child's PORT is the port the system line announced; every service sees the others'
    for svc, port in ports.items():
        env_line = up.of(f"{svc}.1")[0]
        assert env_line.startswith(f"env PORT={port} STACK={sid} SERVICE={svc}.1 "), env_line
    after = up.of("after_tcp.1")[0]
    for svc, port in ports.items():
        assert f"{svc.upper()}_PORT={port}" in after

    # while it runs, a second `up` of the same Stackfile is refused
    second = cli("up", "--no-watch", cwd=tmp_path, timeout=30)
    assert second.returncode == 4, second
    assert "already running" in second.stderr and "Traceback" not in second.stderr

    assert up.stop(signal.SIGINT) == 0
    assert "SIGINT received, stopping" in up.system()
    assert_nothing_left(sid)


@pytest.mark.timeout(60)
def test_dependency_that_never_gets_healthy(tmp_path, reaper):
    install_fake(tmp_path)
    write(tmp_path / "tick.py", """
        import itertools, time
        for i in itertools.count():
            print(f"tick {i}", flush=True)
            time.sleep(0.1)
    """)
    sf = write(tmp_path / "Stackfile.toml", f"""
        [services.bad]            # never listens on its port
        cmd = {fake_cmd(tmp_path, "bad", "sleep")}
        port = 0
        restart = "no"
        health = {{ tcp = "${{host}}:${{port}}", start_period = 1, interval = 0.2 }}

        [services.needs_bad]
        cmd = {fake_cmd(tmp_path, "needs_bad", "sleep")}
        depends_on = ["bad"]

        [services.after_needs]
        cmd = {fake_cmd(tmp_path, "after_needs", "sleep")}
        depends_on = {{ needs_bad = "started" }}

        [services.other]
        cmd = ["{PY}", "tick.py"]
    """)
    sid = stack_id(sf)
    reaper.stacks.append(sid)
    up = Run(reaper, ["up", "--no-watch"], tmp_path)
    up.wait_line(r"^needs_bad\.1 not started: bad\.1 failed before it was healthy$", 30, system=True)
    up.wait_line(r"^after_needs\.1 not started: needs_bad\.1", 30, system=True)
    # the rest of the stack keeps running: `other` goes on printing after the failure
    n = len(up.of("other.1"))
    up.wait_line(rf"^tick {n + 3}$", 30, of="other.1")
    assert up.proc.poll() is None

    system = up.system()
    assert len([s for s in system if s.startswith("bad.1 not healthy within 1s")]) == 1, system
    assert len([s for s in system if s.startswith("bad.1 failed")]) == 1, system
    assert not any(s.startswith(("needs_bad.1 started", "after_needs.1 started")) for s in system), system
    assert not (tmp_path / "needs_bad.start").exists()
    assert up.stop(signal.SIGINT) == 1  # a service failed
    assert_nothing_left(sid)


@pytest.mark.timeout(60)
def test_abort_on_exit_stops_the_stack(tmp_path, reaper):
    install_fake(tmp_path)
    sf = write(tmp_path / "Stackfile.toml", f"""
        [services.quick]
        cmd = ["{PY}", "-c", "import time; time.sleep(0.5); print('bye')"]
        restart = "no"

        [services.long]
        cmd = {fake_cmd(tmp_path, "long", "sleep")}
    """)
    sid = stack_id(sf)
    reaper.stacks.append(sid)
    up = Run(reaper, ["up", "--no-watch", "--abort-on-exit"], tmp_path)
    assert up.wait(45) == 0
    system = up.system()
    assert "quick.1 exited with code 0" in system
    assert any(s.startswith("sending SIGTERM to long.1") for s in system), system
    assert "long.1 stopped (killed by SIGTERM)" in system
    assert_nothing_left(sid)


@pytest.mark.timeout(60)
def test_up_subset_and_exit_when_everything_ended(tmp_path, reaper):
    install_fake(tmp_path)
    sf = write(tmp_path / "Stackfile.toml", f"""
        [services.db]
        cmd = {fake_cmd(tmp_path, "db", "job")}
        restart = "no"

        [services.web]
        cmd = {fake_cmd(tmp_path, "web", "job")}
        depends_on = {{ db = "completed" }}
        restart = "no"

        [services.worker]
        cmd = {fake_cmd(tmp_path, "worker", "sleep")}
    """)
    sid = stack_id(sf)
    reaper.stacks.append(sid)
    up = Run(reaper, ["up", "--no-watch", "web"], tmp_path)
    assert up.wait(45) == 0  # every service it started has ended: `up` exits by itself
    system = up.system()
    assert "db.1 exited with code 0" in system and "web.1 exited with code 0" in system
    assert not any("worker" in s for s in system), system
    assert not (tmp_path / "worker.start").exists()
    assert read_float(tmp_path / "web.start") >= read_float(tmp_path / "db.ready")
    assert_nothing_left(sid)


@pytest.mark.timeout(60)
def test_up_exit_code_1_when_a_service_fails(tmp_path, reaper):
    sf = write(tmp_path / "Stackfile.toml", f"""
        [services.broken]
        cmd = ["{PY}", "-c", "import sys; print('oops'); sys.exit(3)"]
        restart = "no"
    """)
    sid = stack_id(sf)
    reaper.stacks.append(sid)
    up = Run(reaper, ["up", "--no-watch"], tmp_path)
    assert up.wait(45) == 1
    assert "broken.1 exited with code 3" in up.system()
    assert "broken.1 failed: exited with code 3" in up.system()
    assert_nothing_left(sid)


@pytest.mark.timeout(60)
def test_invalid_stackfile_exits_2_without_traceback(tmp_path):
    write(tmp_path / "Stackfile.toml", """
        [services.web]
        cmd = "python app.py"
        depends_on = ["bakend"]

        [services.backend]
        cmd = "python api.py"
        prot = 8000
    """)
    r = cli("up", cwd=tmp_path, timeout=30)
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr + r.stdout
    assert 'unknown service "bakend" (did you mean "backend"?)' in r.stderr
    assert re.search(r"Stackfile\.toml:\d+:\d+: services\.backend\.prot: unknown key", r.stderr), r.stderr
    assert not (tmp_path / ".revostack" / "state.json").exists()

    (tmp_path / "Stackfile.toml").write_text('[services.web]\ncmd = "true"\n[services.web\n')
    r = cli("up", cwd=tmp_path, timeout=30)
    assert r.returncode == 2 and "invalid TOML" in r.stderr and "Traceback" not in r.stderr, r

"""End-to-end tests of `revostack run`: a one-off command with the stack's environment (and a
service's env, cwd and port with -s), its exit code passed through, live ports while `up` runs,
and Procfiles."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from helpers_runtime import PY, Run, assert_nothing_left, clean_env, fake_cmd, free_base, install_fake, stack_id, write

SHOW = ("import json, os, sys; print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ)})); "
        "sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)")


def run(cwd, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "revostack", "run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=env if env is not None else clean_env())


def shown(r: subprocess.CompletedProcess) -> dict:
    assert "Traceback" not in r.stderr, r.stderr
    return json.loads(r.stdout)


@pytest.mark.timeout(60)
def test_run_with_the_stack_environment(tmp_path, reaper):
    install_fake(tmp_path)
    (tmp_path / "backend").mkdir()
    base = free_base(offsets=(0,))
    sf = write(tmp_path / "Stackfile.toml", f"""
        [env]
        LOG_LEVEL = "debug"

        [services.db]
        cmd = {fake_cmd(tmp_path, "db", "tcp")}
        port = 0

        [services.backend]
        cmd = {fake_cmd(tmp_path, "backend", "tcp")}
        cwd = "backend"
        port = {base}
        env = {{ ONLY_BACKEND = "yes", DB = "${{db.port}}" }}
    """)
    sid = stack_id(sf)
    reaper.stacks.append(sid)

    # the stack's variables, not one service's own; the command's exit code
    r = run(tmp_path, "--", PY, "-c", SHOW, "7")
    assert r.returncode == 7, r
    got = shown(r)
    assert got["cwd"] == str(tmp_path)
    assert got["env"]["BACKEND_PORT"] == str(base) and got["env"]["BACKEND_HOST"] == "127.0.0.1"
    assert got["env"]["DB_PORT"].isdigit()
    assert got["env"]["LOG_LEVEL"] == "debug"
    assert got["env"]["REVOSTACK_STACK"] == sid
    assert "ONLY_BACKEND" not in got["env"] and "REVOSTACK_SERVICE" not in got["env"]

    # -s backend: that service's env, cwd and port
    r = run(tmp_path, "-s", "backend", "--", PY, "-c", SHOW)
    assert r.returncode == 0, r
    got = shown(r)
    assert got["cwd"] == str(tmp_path / "backend")
    assert got["env"]["PORT"] == str(base) and got["env"]["ONLY_BACKEND"] == "yes"
    assert got["env"]["LOG_LEVEL"] == "debug"

    # honcho's form, without "--"
    r = run(tmp_path, PY, "-c", SHOW, "3")
    assert r.returncode == 3 and shown(r)["env"]["BACKEND_PORT"] == str(base)

    r = run(tmp_path, "-s", "bakend", "--", PY, "-c", SHOW)
    assert r.returncode == 2 and 'unknown service "bakend" (did you mean "backend"?)' in r.stderr

    # while the stack is up, run sees the live ports
    up = Run(reaper, ["up", "--no-watch"], tmp_path)
    _, db_port = up.started("db.1")
    up.wait_line(r"^backend\.1 healthy", 30, system=True)
    got = shown(run(tmp_path, "--", PY, "-c", SHOW))
    assert got["env"]["DB_PORT"] == str(db_port)
    got = shown(run(tmp_path, "-s", "backend", "--", PY, "-c", SHOW))
    assert got["env"]["PORT"] == str(base) and got["env"]["DB_PORT"] == str(db_port)
    assert up.stop(signal.SIGINT) == 0
    assert_nothing_left(sid)


@pytest.mark.timeout(60)
def test_run_on_a_procfile(tmp_path):
    write(tmp_path / "Procfile", "web: python app.py\nworker: python worker.py\n")
    write(tmp_path / ".env", "FOO=bar\n")
    base = free_base(offsets=(0, 100))
    env = clean_env(PORT=str(base))
    r = run(tmp_path, "--", PY, "-c", SHOW, "5", env=env)
    assert r.returncode == 5, r
    got = shown(r)["env"]
    assert got["FOO"] == "bar"
    assert got["WEB_PORT"] == str(base) and got["WORKER_PORT"] == str(base + 100)
    got = shown(run(tmp_path, "-s", "worker", "--", PY, "-c", SHOW, env=env))["env"]
    assert got["PORT"] == str(base + 100) and got["FOO"] == "bar"
    # honcho's `run -e`: those env files instead of .env, the later winning
    write(tmp_path / "b.env", "FOO=from-b\nBAR=b\n")
    got = shown(run(tmp_path, "-e", ".env,b.env", PY, "-c", SHOW, env=env))["env"]
    assert got["FOO"] == "from-b" and got["BAR"] == "b"
    got = shown(run(tmp_path, "-e", "b.env", "--", PY, "-c", SHOW, env=env))["env"]
    assert got["FOO"] == "from-b"
    r = run(tmp_path, "-e", "missing.env", "--", PY, "-c", SHOW, env=env)  # skipped, as honcho does
    assert r.returncode == 0 and "missing.env not found, skipped" in r.stderr
    r = run(tmp_path, "--", "no-such-program-here", env=env)  # as the shell (and honcho) say it
    assert r.returncode == 127 and "no-such-program-here: command not found" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / ".revostack" / "state.json").exists()  # run starts no stack

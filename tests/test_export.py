"""`revostack export`: supervisord (run for real), systemd, docker compose and Procfile output.

Values are checked by reading the files back the way each engine reads them: supervisord's own
config parser (and supervisord itself, running the programs), systemd's quoting rules (and
`systemd-analyze verify` where it exists), YAML, and revostack's own Procfile and .env readers
(and /bin/sh running the Procfile lines).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO, cli, wait_for
from revostack import dotenv, export, procfile, stackfile
from revostack import plan as planmod
from revostack.cli import main
from revostack.errors import PortError
from revostack.stackfile import Condition, Restart, env_prefix

FULLSTACK = REPO / "examples" / "fullstack"
BIN = os.path.dirname(sys.executable)


# -- stacks and plans ----------------------------------------------------------------------------

@pytest.fixture
def fullstack(tmp_path) -> Path:
    """A copy of the demo (so no .revostack/ lands in the repo); returns its Stackfile."""
    dest = tmp_path / "fullstack"
    shutil.copytree(FULLSTACK, dest, ignore=shutil.ignore_patterns(".revostack", "__pycache__"))
    return dest / "Stackfile.toml"


# The dumper writes its argv, environment and cwd to $DUMP, then sleeps $STAY seconds (0 unless
# the engine's environment sets it).
DUMPER = textwrap.dedent("""\
    import json, os, sys, time
    data = {"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}
    with open(os.environ["DUMP"] + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(os.environ["DUMP"] + ".tmp", os.environ["DUMP"])
    time.sleep(float(os.environ.get("STAY") or 0))
""")

# Stack-wide values, as TOML would hold them ("$$" is revostack's literal "$").
EDGE_ENV = {
    "QUOTES": 'say "hi", it\'s',
    "PERCENT": "100% %(here)s %(ENV_HOME)s",
    "DOLLAR": "$$HOME and $${x} and $$$$",
    "BACKSLASH": "C:\\dir\\ end\\",
    "NEWLINE": "line1\nline2\n",
    "SPACES": "  two  spaces  ",
    "HASH": "a #not a comment ;nor this",
    "EDGEQ": '"quoted"',
    "TAB": "a\tb",
    "EMPTY": "",
    "UNI": "héllo ✓",
    "PLAIN": "plain",
    "PCT": "50% off",
    "YAMLISH": "no",  # a YAML 1.1 boolean, number and octal if written bare
    "SCI": "1e3",
    "OCT": "0777",
}
EDGE_ARGS = ["arg with space", "100%", "$$HOME", "a\"b'c", "#x", ";", "back\\slash", "new\nline\n", "",
             "%(here)s", "tab\there", " lead"]
# (the background sleep is a second process in the group: stopasgroup / KillMode must reach it)
STR_CMD = "sleep \"${STAY:-0}\" & printf '%s|%s|%s\\n' \"$QUOTES\" \"$PORT\" '50% done; #not a comment' > strcmd.txt; exec sleep \"${STAY:-0}\""


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


@pytest.fixture
def edge(tmp_path) -> Path:
    """A stack whose names and values exercise every escaping rule; returns its Stackfile."""
    root = tmp_path / "edge"
    (root / "sub dir 100%").mkdir(parents=True)
    env = "\n".join(f"{k} = {_toml_str(v)}" for k, v in EDGE_ENV.items())
    cmd = "[" + ", ".join(_toml_str(a) for a in [sys.executable, "-c", DUMPER, *EDGE_ARGS]) + "]"
    svc_only = "per service; 'value' \"x\" $$ %\nsecond line"
    text = f"""\
[stack]
name = "edge case"
stop_timeout = 2.5

[env]
{env}

[services.my-svc_1]
cmd = {cmd}
port = 41001
env = {{ DUMP = {_toml_str(str(tmp_path / "dump.json"))}, SVC_ONLY = {_toml_str(svc_only)} }}
restart = "no"
stop_signal = "SIGINT"

[services.str_cmd-x]
cmd = {_toml_str(STR_CMD)}
cwd = "sub dir 100%"
port = 41101
depends_on = {{ "my-svc_1" = "started" }}
health = {{ cmd = "test -f strcmd.txt", interval = 0.5, timeout = 1.5, retries = 4, start_period = 10 }}
restart = "always"
max_restarts = 7

[services.web]
cmd = "exec sleep ${{STAY:-0}}"
port = 41201
scale = 2
depends_on = {{ "my-svc_1" = "completed" }}
health = {{ http = "http://${{host}}:${{port}}/x" }}
env = {{ UPSTREAM = "http://${{host}}:${{my-svc_1.port}}/api", LITERAL = "localhost:${{str_cmd-x.port}}", VIA_VAR = "127.0.0.1:$MY_SVC_1_PORT", OWN = "${{host}}", KEEP = "10.0.0.1:${{my-svc_1.port}}", HOSTREF = "${{my-svc_1.host}}" }}
"""
    path = root / "Stackfile.toml"
    path.write_text(text)
    return path


def load(path: Path) -> stackfile.Stack:
    return stackfile.load(path, environ={})


def fixed_plan(stack: stackfile.Stack, environ=None) -> planmod.Plan:
    """Every instance on its declared port (+ index), whatever the machine holds: nothing binds
    these ports in the tests that use this plan."""
    ports = {}
    for svc in stack.services.values():
        for idx, inst in enumerate(svc.instances, 1):
            if svc.port is not None:
                ports[inst] = planmod.PortChoice(svc.port + idx - 1, svc.port + idx - 1)
    return planmod.build(stack, set(stack.services), ports, environ or {})


def exported(plan: planmod.Plan, inst: planmod.Instance) -> dict[str, str]:
    """What an instance should get: its planned env without revostack's own markers."""
    env = {k: v for k, v in inst.env.items() if not k.startswith("REVOSTACK_")}
    assert env == export.exported_env(plan, inst)
    return env


def expected_argv(inst: planmod.Instance) -> list[str]:
    if isinstance(inst.cmd, str):
        return ["/bin/sh", "-c", export.shell_script(inst.cmd)]
    return list(inst.cmd)


def write(files: dict[str, str], outdir: Path) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (outdir / name).write_text(text)
    return outdir


# -- supervisord ---------------------------------------------------------------------------------

READ_CONFIG = textwrap.dedent("""\
    import json, sys
    from supervisor.datatypes import RestartUnconditionally, RestartWhenExitUnexpected
    from supervisor.options import ServerOptions
    o = ServerOptions()
    o.realize(args=["-c", sys.argv[1]])
    out = {}
    for g in o.process_group_configs:
        for p in g.process_configs:
            out[p.name] = {"group": g.name, "command": p.command, "environment": p.environment,
                           "directory": p.directory, "priority": p.priority, "autostart": p.autostart,
                           "autorestart": {RestartUnconditionally: "true", RestartWhenExitUnexpected: "unexpected"}.get(
                               p.autorestart, str(p.autorestart).lower()), "startsecs": p.startsecs,
                           "startretries": p.startretries, "stopsignal": p.stopsignal,
                           "stopwaitsecs": p.stopwaitsecs, "stopasgroup": p.stopasgroup,
                           "killasgroup": p.killasgroup, "stdout_logfile": p.stdout_logfile,
                           "stderr_logfile": p.stderr_logfile, "exitcodes": p.exitcodes}
    print(json.dumps(out))
""")


def supervisord_conf(tmp_path: Path, include: str) -> Path:
    """A supervisord.conf of our own: socket, pidfile and logs under tmp_path."""
    conf = tmp_path / "supervisord.conf"
    conf.write_text(textwrap.dedent(f"""\
        [unix_http_server]
        file={tmp_path / "sv.sock"}

        [supervisord]
        nodaemon=true
        logfile={tmp_path / "supervisord.log"}
        pidfile={tmp_path / "supervisord.pid"}
        childlogdir={tmp_path}

        [rpcinterface:supervisor]
        supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

        [supervisorctl]
        serverurl=unix://{tmp_path / "sv.sock"}

        [include]
        files = {include}
    """))
    return conf


def read_supervisor_config(conf: Path) -> dict:
    """The programs as supervisord's own config reader sees them."""
    r = subprocess.run([sys.executable, "-c", READ_CONFIG, str(conf)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def env_of(program: dict) -> dict[str, str]:
    """``environment=`` plus what the exporter moved into the command as ``/usr/bin/env K=V``."""
    env = dict(program["environment"] or {})
    argv = shlex.split(program["command"])
    if argv[0] == "/usr/bin/env":
        for word in argv[1:]:
            if "=" not in word:
                break
            key, _, value = word.partition("=")
            env[key] = value
    return env


def argv_of(program: dict) -> list[str]:
    argv = shlex.split(program["command"])
    if argv[0] == "/usr/bin/env":
        argv = argv[1:]
        while argv and "=" in argv[0]:
            argv = argv[1:]
    return argv


class Supervisor:
    def __init__(self, conf: Path):
        self.conf = conf

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
                              capture_output=True, text=True, timeout=20)

    def states(self) -> dict[str, str]:
        out = {}
        for line in self.ctl("status").stdout.splitlines():
            words = line.split()
            if len(words) >= 2 and ":" in words[0]:
                out[words[0].split(":", 1)[1]] = words[1]
        return out


@contextmanager
def running_supervisord(conf: Path, reaper, tmp_path: Path, extra_env: dict[str, str] | None = None):
    """supervisord in the foreground, stopped with `supervisorctl shutdown`; whatever is left of
    it or its programs (each in its own process group) is killed even when the test fails.
    Its children inherit a unique REVOSTACK_STACK value, which the reaper hunts for."""
    marker = f"export-test-{uuid.uuid4().hex}"
    reaper.stacks.append(marker)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVOSTACK_", "SUPERVISOR_"))}
    env.update({"PATH": BIN + os.pathsep + env.get("PATH", "/usr/bin:/bin"), "REVOSTACK_STACK": marker},
               **(extra_env or {}))
    log = open(tmp_path / "supervisord.stdout", "wb")
    proc = reaper.popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)], env=env,
                        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    sv = Supervisor(conf)
    try:
        wait_for(lambda: proc.poll() is not None or sv.ctl("pid").returncode == 0, timeout=15, what="supervisord's socket")
        assert proc.poll() is None, (tmp_path / "supervisord.stdout").read_text()
        yield sv, proc
        r = sv.ctl("shutdown")
        assert r.returncode == 0, r.stdout + r.stderr
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            sv.ctl("shutdown")
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _marked(marker: str) -> list[int]:
    import psutil

    pids = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("REVOSTACK_STACK") == marker:
                pids.append(p.pid)
        except (psutil.Error, OSError):
            pass
    return pids


def http_get(url: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except OSError:
        return None


def test_supervisord_runs_the_fullstack_demo(fullstack, tmp_path, reaper):
    """Export the demo with the CLI, run it under a real supervisord, reach the backend."""
    out = tmp_path / "out"
    r = cli("-f", str(fullstack), "export", "supervisord", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out / 'fullstack.conf'}" in r.stdout
    conf = supervisord_conf(tmp_path, "out/*.conf")
    programs = read_supervisor_config(conf)
    names = ["fullstack-db-1", "fullstack-events-1", "fullstack-worker-1", "fullstack-migrate-1", "fullstack-backend-1",
             "fullstack-frontend-1"]
    assert sorted(programs) == sorted(names)
    assert {p["group"] for p in programs.values()} == {"fullstack"}
    # dependency levels become priorities: db = events = worker < migrate < backend < frontend
    assert [programs[n]["priority"] for n in names] == [100, 100, 100, 200, 300, 400]
    backend = programs["fullstack-backend-1"]
    port = int(backend["environment"]["PORT"])  # planned against this machine: read it back
    db_port = int(programs["fullstack-db-1"]["environment"]["PORT"])
    assert backend["environment"]["BACKEND_PORT"] == str(port)
    assert backend["environment"]["DATABASE_URL"] == f"tcp://127.0.0.1:{db_port}/dev"
    assert programs["fullstack-frontend-1"]["environment"]["API_URL"] == f"http://127.0.0.1:{port}"
    assert not any(k.startswith("REVOSTACK_") for p in programs.values() for k in p["environment"])
    assert backend["directory"] == str(fullstack.parent)
    assert backend["stdout_logfile"] == str(out / "fullstack-backend-1.out.log")
    assert programs["fullstack-migrate-1"]["startsecs"] == 0  # a run-once job
    assert programs["fullstack-migrate-1"]["autorestart"] == "false"
    assert backend["autorestart"] == "unexpected"

    with running_supervisord(conf, reaper, tmp_path) as (sv, proc):
        marker = reaper.stacks[-1]

        def up():
            states = sv.states()
            long_running = all(states.get(n) == "RUNNING" for n in names if n != "fullstack-migrate-1")
            return states if long_running and states.get("fullstack-migrate-1") == "EXITED" else False

        wait_for(up, timeout=20, what="every program RUNNING (migrate EXITED)")
        assert wait_for(lambda: http_get(f"http://127.0.0.1:{port}/health"), timeout=10, what="backend /health")[0] == 200
        frontend_port = int(programs["fullstack-frontend-1"]["environment"]["PORT"])
        status, page = wait_for(lambda: http_get(f"http://127.0.0.1:{frontend_port}/"), timeout=10, what="frontend page")
        assert status == 200 and "hello from the backend" in page
        assert f"backend on http://127.0.0.1:{port}" in (out / "fullstack-backend-1.out.log").read_text()
    # stopasgroup/killasgroup: nothing of the stack survives supervisord's shutdown
    wait_for(lambda: not _marked(marker), timeout=10, what="every program gone")


def test_supervisord_keeps_every_value_exact(edge, tmp_path, reaper):
    """Quotes, %, $, backslashes, newlines, spaces, '#'/';' reach the programs unchanged: read
    back by supervisord's parser, then seen by the running programs themselves."""
    plan = fixed_plan(load(edge))
    logs = tmp_path / "logs"
    logs.mkdir()
    files = export.render(plan, "supervisord", app="edge case", log_dir=logs)
    assert list(files) == ["edge-case.conf"]
    write(files, tmp_path / "out")
    conf = supervisord_conf(tmp_path, "out/*.conf")
    programs = read_supervisor_config(conf)
    by_inst = {f"edge-case-{export.sanitize(i.service.name)}-{i.index}": i for i in plan.instances}
    assert sorted(programs) == sorted(by_inst) == sorted(
        ["edge-case-my-svc_1-1", "edge-case-str_cmd-x-1", "edge-case-web-1", "edge-case-web-2"])
    for name, inst in by_inst.items():
        prog = programs[name]
        svc = inst.service
        assert env_of(prog) == exported(plan, inst), name
        assert argv_of(prog) == expected_argv(inst), name
        assert prog["directory"] == str(svc.cwd)
        assert prog["stopsignal"] == int(signal.Signals[svc.stop_signal])
        assert prog["stopwaitsecs"] == 3  # 2.5 s rounded up: supervisord takes whole seconds
        assert prog["stopasgroup"] and prog["killasgroup"]
        assert prog["autorestart"] == {Restart.NO: "false", Restart.ON_FAILURE: "unexpected",
                                       Restart.ALWAYS: "true"}[svc.restart]
        assert prog["startretries"] == svc.max_restarts
        assert prog["stdout_logfile"] == str(logs / f"{name}.out.log")
        assert prog["stderr_logfile"] == str(logs / f"{name}.err.log")
    assert programs["edge-case-web-1"]["environment"]["PORT"] == "41201"
    assert programs["edge-case-web-2"]["environment"]["PORT"] == "41202"
    assert programs["edge-case-my-svc_1-1"]["startsecs"] == 0  # web waits for it to complete
    assert programs["edge-case-my-svc_1-1"]["priority"] < programs["edge-case-str_cmd-x-1"]["priority"]

    with running_supervisord(conf, reaper, tmp_path, {"STAY": "600"}) as (sv, proc):
        wait_for(lambda: set(sv.states().values()) == {"RUNNING"} and len(sv.states()) == 4, timeout=20,
                 what="every program RUNNING")
        dump_path = tmp_path / "dump.json"
        dump = json.loads(wait_for(lambda: dump_path.is_file() and dump_path.read_text(), what="the dump"))
        dumper = plan.of_service("my-svc_1")[0]
        assert dump["argv"] == list(dumper.cmd[3:]) == [a.replace("$$", "$") for a in EDGE_ARGS]
        assert {k: dump["env"].get(k) for k in exported(plan, dumper)} == exported(plan, dumper)
        assert dump["env"]["DOLLAR"] == "$HOME and ${x} and $$"
        assert dump["cwd"] == str(edge.parent)
        strcmd = edge.parent / "sub dir 100%" / "strcmd.txt"
        text = wait_for(lambda: strcmd.is_file() and strcmd.read_text(), what="strcmd.txt")
        assert text == f"{EDGE_ENV['QUOTES']}|41101|50% done; #not a comment\n"
        assert (logs / "edge-case-my-svc_1-1.out.log").exists()
        marker = reaper.stacks[-1]
        assert len(_marked(marker)) >= 6  # supervisord, 4 programs, the background sleep
    wait_for(lambda: not _marked(marker), timeout=10, what="every program and its children gone")


# -- systemd -------------------------------------------------------------------------------------

def sd_words(value: str, dollar: bool) -> list[str]:
    """Split a systemd value the way systemd does for our output: specifiers (%%) first, then
    words with double quotes and C escapes, then (ExecStart only) $$ -> $."""
    assert re.fullmatch(r"([^%]|%%)*", value), f"unescaped specifier in {value!r}"
    value = value.replace("%%", "%")
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", ";": ";", " ": " "}
    words, cur, i, quoted, in_word = [], [], 0, False, False
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            nxt = value[i + 1]
            if nxt == "x":
                cur.append(chr(int(value[i + 2:i + 4], 16)))
                i += 4
            else:
                cur.append(escapes[nxt])
                i += 2
            in_word = True
            continue
        if ch == '"':
            quoted = not quoted
            in_word = True
        elif ch.isspace() and not quoted:
            if in_word:
                words.append("".join(cur))
            cur, in_word = [], False
        else:
            cur.append(ch)
            in_word = True
        i += 1
    assert not quoted, value
    if in_word:
        words.append("".join(cur))
    return [w.replace("$$", "$") for w in words] if dollar else words


def read_unit(text: str) -> tuple[configparser.ConfigParser, list[str]]:
    """The unit as configparser reads it (single-valued keys) plus its Environment= lines."""
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string(text)
    env_lines = [line[len("Environment="):] for line in text.splitlines() if line.startswith("Environment=")]
    return cp, env_lines


def systemd_verify(outdir: Path) -> None:
    """`systemd-analyze verify` on the files, when this machine has it: no complaint about ours."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return
    units = sorted(str(p) for p in outdir.iterdir())
    r = subprocess.run([tool, "verify", *units], capture_output=True, text=True, timeout=60)
    ours = [line for line in (r.stdout + r.stderr).splitlines() if str(outdir) in line]
    assert not ours, "\n".join(ours)


def test_systemd_units_match_the_model(fullstack, tmp_path, capsys):
    out = tmp_path / "units"
    assert main(["-f", str(fullstack), "export", "systemd", str(out), "--user", "daemon"]) == 0
    stack = load(fullstack)
    names = {"db": "fullstack-db-1", "events": "fullstack-events-1", "worker": "fullstack-worker-1",
             "migrate": "fullstack-migrate-1", "backend": "fullstack-backend-1", "frontend": "fullstack-frontend-1"}
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{n}.service" for n in names.values()] + ["fullstack.target"])
    target, _ = read_unit((out / "fullstack.target").read_text())
    assert target["Unit"]["Wants"].split() == [f"{n}.service" for n in names.values()]
    assert target["Install"]["WantedBy"] == "multi-user.target"
    ports = {}
    for sname, unit in names.items():
        svc = stack.services[sname]
        cp, env_lines = read_unit((out / f"{unit}.service").read_text())
        env = dict(w.split("=", 1) for line in env_lines for w in sd_words(line, dollar=False))
        if svc.port is not None:
            ports[sname] = int(env["PORT"])
        assert cp["Unit"]["PartOf"] == "fullstack.target"
        deps = [f"{names[d.name]}.service" for d in svc.depends_on]
        assert cp["Unit"].get("After", "").split() == deps
        assert cp["Unit"].get("Requires", "").split() == deps
        s = cp["Service"]
        assert s["Restart"] == svc.restart.value
        assert s["RestartSec"] == "500ms"
        assert s["KillMode"] == "control-group"
        assert s["KillSignal"] == svc.stop_signal
        assert s["TimeoutStopSec"] == "5s"
        assert s["WorkingDirectory"] == str(fullstack.parent)
        assert s["User"] == "daemon"
        assert sd_words(s["ExecStart"], dollar=True) == ["/bin/sh", "-c", f"exec {svc.cmd}"]
        assert cp["Install"]["WantedBy"] == "fullstack.target"
        assert not any(k.startswith("REVOSTACK_") for k in env)
        assert env["LOG_LEVEL"] == "info" and env["PYTHONUNBUFFERED"] == "1"
        # migrate must complete before backend starts: a oneshot that stays "active"
        oneshot = any(d.name == sname and d.condition is Condition.COMPLETED
                      for o in stack.services.values() for d in o.depends_on)
        assert s["Type"] == ("oneshot" if oneshot else "simple"), sname
        assert (s.get("RemainAfterExit") == "yes") == oneshot
    assert sname == "frontend" and env["API_URL"] == f"http://127.0.0.1:{ports['backend']}"
    systemd_verify(out)


def test_systemd_quotes_every_value(edge, tmp_path):
    plan = fixed_plan(load(edge))
    files = export.render(plan, "systemd", app="edge case")
    out = write(files, tmp_path / "units")
    for inst in plan.instances:
        name = f"edge-case-{export.sanitize(inst.service.name)}-{inst.index}.service"
        cp, env_lines = read_unit(files[name])
        env = {}
        for line in env_lines:
            (word,) = sd_words(line, dollar=False)  # one quoted assignment per line
            key, _, value = word.partition("=")
            env[key] = value
        assert env == exported(plan, inst), name
        assert sd_words(cp["Service"]["ExecStart"], dollar=True) == expected_argv(inst), name
        assert cp["Service"]["WorkingDirectory"].replace("%%", "%") == str(inst.service.cwd)
        assert cp["Service"]["TimeoutStopSec"] == "2500ms"
    web1, _ = read_unit(files["edge-case-web-1.service"])
    assert web1["Unit"]["After"].split() == ["edge-case-my-svc_1-1.service"]
    dumper, _ = read_unit(files["edge-case-my-svc_1-1.service"])
    assert dumper["Service"]["Type"] == "oneshot" and dumper["Service"]["KillSignal"] == "SIGINT"
    assert dumper["Service"]["Restart"] == "no"
    strcmd, _ = read_unit(files["edge-case-str_cmd-x-1.service"])
    assert strcmd["Service"]["Restart"] == "always" and strcmd["Unit"]["StartLimitBurst"] == "8"
    assert "Environment=\"DOLLAR=$HOME and ${x} and $$\"" in files["edge-case-str_cmd-x-1.service"]  # no $$ here
    assert "User=" not in files["edge-case-web-2.service"]
    systemd_verify(out)


# -- docker compose ------------------------------------------------------------------------------

def read_yaml(text: str):
    """compose.yaml as compose reads it (a YAML 1.1 loader, as PyYAML's)."""
    import yaml

    return yaml.safe_load(text)


def undollar(value):
    """compose's interpolation of an escaped value: $$ -> $."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [undollar(v) for v in value]
    if isinstance(value, dict):
        return {k: undollar(v) for k, v in value.items()}
    return value


def test_compose_services_depends_and_healthchecks(fullstack, tmp_path):
    out = tmp_path / "compose"
    assert main(["-f", str(fullstack), "export", "compose", str(out)]) == 0
    text = (out / "compose.yaml").read_text()
    doc = read_yaml(text)
    assert "name" not in doc  # compose v1 rejects it: the project name is in .env beside the file
    assert (out / ".env").read_text().splitlines()[-1] == "COMPOSE_PROJECT_NAME=fullstack"
    services = doc["services"]
    assert list(services) == ["db", "events", "worker", "migrate", "backend", "frontend"]
    for s in services.values():
        assert s["image"] == "${REVOSTACK_IMAGE:-python:3.11-slim}"
        assert s["working_dir"] == str(fullstack.parent)
        assert s["volumes"] == [{"type": "bind", "source": str(fullstack.parent), "target": str(fullstack.parent)}]
        assert s["stop_grace_period"] == "5s"
    assert services["db"]["command"] == ["/bin/sh", "-c", "exec python services/db.py"]
    ports = {n: int(s["environment"]["PORT"]) for n, s in services.items() if "PORT" in s["environment"]}
    for n, p in ports.items():
        assert services[n]["ports"] == [f"127.0.0.1:{p}:{p}"]  # published on the stack's host, as `up` binds
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["backend"]["depends_on"] == {"db": {"condition": "service_healthy"},
                                                 "migrate": {"condition": "service_completed_successfully"}}
    assert services["frontend"]["depends_on"] == {"backend": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no" and services["backend"]["restart"] == "on-failure:5"
    # inter-service addresses are service names, ports stay the planned ones
    backend_env = services["backend"]["environment"]
    assert backend_env["DATABASE_URL"] == f"tcp://db:{ports['db']}/dev"
    assert backend_env["DB_HOST"] == "db" and backend_env["BACKEND_HOST"] == "backend"
    assert services["frontend"]["environment"]["API_URL"] == f"http://backend:{ports['backend']}"
    assert "REVOSTACK_STACK" not in text and "REVOSTACK_SERVICE" not in text
    hc = services["backend"]["healthcheck"]
    assert hc["test"][:3] == ["CMD", "python3", "-c"]
    assert hc["test"][4:] == [f"http://127.0.0.1:{ports['backend']}/health", "2"]
    assert (hc["interval"], hc["timeout"], hc["retries"], hc["start_period"]) == ("1s", "2s", 3, "30s")
    db_hc = services["db"]["healthcheck"]  # the implicit TCP check on the port
    assert db_hc["test"][4:] == ["127.0.0.1", str(ports["db"]), "2"] and db_hc["start_period"] == "60s"
    assert "healthcheck" not in services["migrate"]


def test_compose_rewrites_hosts_and_escapes_values(edge, tmp_path):
    plan = fixed_plan(load(edge))
    files = export.render(plan, "compose", app="Edge Case")
    text = files["compose.yaml"]
    doc = read_yaml(text)
    assert "COMPOSE_PROJECT_NAME=edge-case" in files[".env"]
    services = doc["services"]
    assert list(services) == ["my-svc_1", "str_cmd-x", "web-1", "web-2"]  # a scaled service: one per instance
    # $ is doubled everywhere (compose interpolates), except in the image placeholder
    assert services["my-svc_1"]["environment"]["DOLLAR"] == "$$HOME and $${x} and $$$$"
    assert text.count("${REVOSTACK_IMAGE:-python:3.11-slim}") == 4
    assert not re.search(r"(?<!\$)\$(?!\$)(?!\{REVOSTACK_IMAGE)", text.replace("$$", ""))
    dumper = plan.of_service("my-svc_1")[0]
    env = undollar(services["my-svc_1"]["environment"])
    assert env == {**exported(plan, dumper), "MY_SVC_1_HOST": "my-svc_1", "STR_CMD_X_HOST": "str_cmd-x",
                   "WEB_HOST": "web-1", "WEB_1_HOST": "web-1", "WEB_2_HOST": "web-2"}
    assert undollar(services["my-svc_1"]["command"]) == list(dumper.cmd)
    strcmd = plan.of_service("str_cmd-x")[0]
    assert undollar(services["str_cmd-x"]["command"]) == ["/bin/sh", "-c", strcmd.cmd]
    assert services["str_cmd-x"]["working_dir"] == str(strcmd.service.cwd)
    web = [undollar(services[f"web-{i}"]["environment"]) for i in (1, 2)]
    assert [w["PORT"] for w in web] == ["41201", "41202"]
    assert services["web-2"]["ports"] == ["127.0.0.1:41202:41202"]
    w = web[0]
    assert w["UPSTREAM"] == "http://my-svc_1:41001/api"  # ${host}:${my-svc_1.port}
    assert w["LITERAL"] == "str_cmd-x:41101"  # localhost:${str_cmd-x.port}
    assert w["VIA_VAR"] == "my-svc_1:41001"  # 127.0.0.1:$MY_SVC_1_PORT
    assert w["HOSTREF"] == "my-svc_1"
    assert w["OWN"] == "0.0.0.0"  # the service's own bind address
    assert w["KEEP"] == "10.0.0.1:41001"  # not a local address: left alone
    assert services["web-1"]["depends_on"] == {"my-svc_1": {"condition": "service_completed_successfully"}}
    assert services["str_cmd-x"]["depends_on"] == {"my-svc_1": {"condition": "service_started"}}
    hc = services["str_cmd-x"]["healthcheck"]
    assert hc == {"test": ["CMD-SHELL", "test -f strcmd.txt"], "interval": "500ms", "timeout": "1500ms",
                  "retries": 4, "start_period": "10s"}
    assert services["web-2"]["healthcheck"]["test"][4] == "http://127.0.0.1:41202/x"
    assert services["my-svc_1"]["stop_signal"] == "SIGINT"
    assert services["my-svc_1"]["stop_grace_period"] == "2500ms"
    assert services["str_cmd-x"]["restart"] == "always"


def test_compose_yaml_keeps_every_string_a_string(fullstack, edge):
    """Values that YAML would read as something else (NO, ON, 1e3, 0777, "") come back as the
    same strings: PyYAML quotes them."""
    for path in (fullstack, edge):
        text = export.render(fixed_plan(load(path)), "compose", app="x")["compose.yaml"]
        for name, svc in read_yaml(text)["services"].items():
            for k, v in (svc.get("environment") or {}).items():
                assert isinstance(k, str) and isinstance(v, str), (name, k, v)
            assert all(isinstance(a, str) for a in svc["command"]), svc["command"]
            assert all(isinstance(p, str) for p in svc.get("ports", []))
            assert svc["init"] is True


def test_compose_healthcheck_one_liners_probe_for_real(tmp_path, reaper):
    """The python3 one-liners of the http and tcp checks pass against a live server, fail
    without one."""
    log = tmp_path / "server.log"
    server = reaper.popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
                          cwd=tmp_path, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    m = wait_for(lambda: re.search(r"port (\d+)", log.read_text()), what="http.server's port")
    port = int(m.group(1))
    checks = []
    for kind, health in (("http", 'health = { http = "http://${host}:${port}/" }'), ("tcp", "")):
        folder = tmp_path / kind
        folder.mkdir()
        (folder / "Stackfile.toml").write_text(f'[services.s]\ncmd = "true"\nport = {port}\n{health}\n')
        doc = read_yaml(export.render(fixed_plan(load(folder / "Stackfile.toml")), "compose", app="x")["compose.yaml"])
        test = doc["services"]["s"]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "python3"]
        checks.append([sys.executable] + test[2:])

    def run(argv):
        return subprocess.run(argv, capture_output=True, timeout=20).returncode

    assert [run(c) for c in checks] == [0, 0]
    server.kill()
    server.wait(timeout=10)
    assert all(run(c) != 0 for c in checks)


# -- Procfile + .env -----------------------------------------------------------------------------

def test_procfile_reads_back_with_revostack_readers(fullstack, tmp_path):
    out = tmp_path / "pf"
    assert main(["-f", str(fullstack), "export", "procfile", str(out)]) == 0
    entries = procfile.parse((out / "Procfile").read_text())
    assert [n for n, _ in entries] == ["db", "migrate", "backend", "events", "frontend", "worker"]  # Stackfile order
    env = dotenv.parse((out / ".env").read_text())
    assert "PORT" not in env  # every process gets its own
    assert env["LOG_LEVEL"] == "info"
    assert {k for k in env if k.endswith("_PORT")} == {"DB_PORT", "BACKEND_PORT", "EVENTS_PORT", "FRONTEND_PORT"}
    cmds = dict(entries)
    assert cmds["backend"].endswith('PORT="$BACKEND_PORT"; exec python services/backend.py')
    assert f"cd {fullstack.parent} || exit 1" in cmds["db"]
    assert "DATABASE_URL=tcp://127.0.0.1:" + env["DB_PORT"] + "/dev" in cmds["backend"]
    text = (out / "Procfile").read_text()
    assert "# backend depends on db (healthy), migrate (completed)" in text


def _name_of(pid: int) -> list[str]:
    import psutil

    try:
        return [psutil.Process(pid).name()]
    except psutil.Error:
        return []


def test_procfile_and_dotenv_round_trip_tricky_values(edge, tmp_path, reaper):
    plan = fixed_plan(load(edge))
    files = export.render(plan, "procfile", app="edge")
    assert sorted(files) == [".env", "Procfile"]
    env = dotenv.parse(files[".env"])
    for key, raw in EDGE_ENV.items():
        assert env[key] == raw.replace("$$", "$"), key  # every quoting rule reads back exactly
    entries = dict(procfile.parse(files["Procfile"]))
    assert list(entries) == ["my-svc_1", "str_cmd-x", "web"]
    assert "# web: scale = 2" in files["Procfile"]
    # run the lines as honcho would: /bin/sh -c LINE with the .env loaded
    base = {"PATH": os.environ["PATH"], **env}
    assert "# my-svc_1 runs once: after it succeeds it idles" in files["Procfile"]
    job = reaper.popen(["/bin/sh", "-c", entries["my-svc_1"]], env=base)
    dump_path = tmp_path / "dump.json"
    dump = json.loads(wait_for(lambda: dump_path.is_file() and dump_path.read_text(), what="the dump"))
    # a run-once job stays (idle) after it succeeded: honcho would stop everything when it exits
    wait_for(lambda: _name_of(job.pid) == ["sleep"], timeout=10, what="the job idling (exec sleep)")
    assert job.poll() is None
    dumper = plan.of_service("my-svc_1")[0]
    assert dump["argv"] == list(dumper.cmd[3:])
    assert {k: dump["env"].get(k) for k in exported(plan, dumper)} == exported(plan, dumper)
    assert dump["env"]["SVC_ONLY"] == "per service; 'value' \"x\" $ %\nsecond line"
    assert dump["cwd"] == str(edge.parent)
    r = subprocess.run(["/bin/sh", "-c", entries["str_cmd-x"]], env=base, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert (edge.parent / "sub dir 100%" / "strcmd.txt").read_text() == f"{EDGE_ENV['QUOTES']}|41101|50% done; #not a comment\n"


def test_procfile_job_failure_ends_the_run(tmp_path):
    (tmp_path / "Stackfile.toml").write_text(textwrap.dedent("""\
        [services.job]
        cmd = "echo trying; exit 3"
        [services.app]
        cmd = ["true"]
        depends_on = { job = "completed" }
    """))
    files = export.render(fixed_plan(load(tmp_path / "Stackfile.toml")), "procfile", app="x")
    entries = dict(procfile.parse(files["Procfile"]))
    r = subprocess.run(["/bin/sh", "-c", entries["job"]], capture_output=True, text=True, timeout=20)
    assert (r.returncode, r.stdout) == (3, "trying\n")
    assert entries["app"].endswith("; exec true")


def test_dotenv_value_quoting():
    from revostack.export.procfile import dotenv_value

    for value in ["", "plain", "a b", "it's", 'say "x"', "$HOME", "#x", "a #b", "x\ny", "both ' \" $ \\ \n",
                  "\\", "trailing space ", "tab\t"]:
        assert dotenv.parse(f"K={dotenv_value(value)}\n") == {"K": value}, value


# -- CLI and shared rules ------------------------------------------------------------------------

def test_unknown_format_exits_2_and_lists_formats(fullstack, tmp_path, capsys):
    assert main(["-f", str(fullstack), "export", "nomad", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert 'unknown format "nomad"' in err
    assert all(f in err for f in export.FORMATS)
    assert not (tmp_path / "o").exists()
    with pytest.raises(Exception) as e:
        export.render(fixed_plan(load(fullstack)), "nomad", app="x")
    assert "supervisord" in str(e.value)


def test_export_refuses_to_overwrite_without_force(fullstack, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["-f", str(fullstack), "export", "procfile", str(out)]) == 0
    (out / "Procfile").write_text("mine: keep me\n")
    assert main(["-f", str(fullstack), "export", "procfile", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "Procfile").read_text() == "mine: keep me\n"
    assert main(["-f", str(fullstack), "export", "procfile", str(out), "--force"]) == 0
    assert (out / "Procfile").read_text() != "mine: keep me\n"


def test_only_stack_defined_variables_are_exported(edge):
    stack = load(edge)
    plan = fixed_plan(stack, environ={"LEAKED_SECRET": "s3cr3t-value", "HOME": "/home/leak"})
    assert plan.instances[0].env["LEAKED_SECRET"] == "s3cr3t-value"  # the plan has it...
    for fmt in export.FORMATS:
        for name, text in export.render(plan, fmt, app="a", image="img:1").items():
            assert "LEAKED_SECRET" not in text and "s3cr3t" not in text, (fmt, name)  # ...the export not
            assert "REVOSTACK_STACK" not in text and "/home/leak" not in text, (fmt, name)


def test_names_are_sanitised(edge):
    plan = fixed_plan(load(edge))
    assert export.sanitize("my app/v2.0!") == "my-app-v2-0"
    assert export.sanitize("...") == "app"
    files = export.render(plan, "systemd", app="my app/v2")
    assert "my-app-v2.target" in files and "my-app-v2-str_cmd-x-1.service" in files
    for name in files:
        assert re.fullmatch(r"[A-Za-z0-9_-]+\.(service|target)", name)
    conf = export.render(plan, "supervisord", app="my app/v2")["my-app-v2.conf"]
    assert "[group:my-app-v2]" in conf and "[program:my-app-v2-web-2]" in conf


def test_a_plan_without_ports_is_not_exported(edge):
    stack = load(edge)
    plan = planmod.build(stack, set(stack.services), {"my-svc_1.1": planmod.PortChoice(41001, None, "taken")}, {})
    assert plan.failures
    with pytest.raises(PortError):
        export.render(plan, "systemd", app="x")


def test_export_is_layer_0():
    code = "import sys, revostack.export; print([m for m in ('psutil', 'rich', 'asyncio') if m in sys.modules])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_durations():
    assert [export.duration(s) for s in (1.0, 30, 0.5, 2.5, 0.0001)] == ["1s", "30s", "500ms", "2500ms", "1ms"]


def test_values_supervisord_cannot_quote_move_into_the_command(edge):
    conf = export.render(fixed_plan(load(edge)), "supervisord", app="e")["e.conf"]
    section = conf.split("[program:e-my-svc_1-1]\n")[1].split("\n[program:")[0]
    command, _, rest = section.partition("\ndirectory=")
    environment = next(line for line in rest.splitlines() if line.startswith("environment="))
    assert command.startswith("command=/usr/bin/env ")
    for key in ("QUOTES", "PERCENT", "NEWLINE", "HASH", "EDGEQ", "SVC_ONLY"):  # unquotable there
        assert key + "=" in command and key + "=" not in environment, key
    for key in ("PLAIN", "SPACES", "DUMP", "TAB", "EMPTY", "UNI", "PCT"):
        assert key + "=" in environment and key + "=" not in command, key
    assert 'SPACES="  two  spaces  "' in environment and 'EMPTY=""' in environment
    assert 'PCT="50%% off"' in environment


def test_env_prefix_names_match_plan(edge):
    # the exported port variables are the ones revostack sets (NAME upper-cased, - and . -> _)
    plan = fixed_plan(load(edge))
    env = exported(plan, plan.of_service("web")[1])
    assert env[f"{env_prefix('my-svc_1')}_PORT"] == "41001"
    assert env["WEB_2_PORT"] == "41202" and env["PORT"] == "41202"


def test_compose_cannot_wait_for_a_log_check(tmp_path):
    (tmp_path / "Stackfile.toml").write_text(textwrap.dedent("""\
        [services.worker]
        cmd = "python worker.py"
        health = { log = "ready" }
        [services.api]
        cmd = "python api.py"
        depends_on = { worker = "healthy" }
    """))
    plan = fixed_plan(load(tmp_path / "Stackfile.toml"))
    text = export.render(plan, "compose", app="x")["compose.yaml"]
    services = read_yaml(text)["services"]
    assert "healthcheck" not in services["worker"]
    assert services["api"]["depends_on"] == {"worker": {"condition": "service_started"}}
    assert "a log health check has no compose equivalent" in text

"""The port planner and the environment: pure with an injected world, then against real listeners
this test binds itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import wait_for
from revostack import plan, probe, stackfile
from revostack.plan import Action, Holder, PortChoice
from revostack.stackfile import Strategy

ME = os.getuid()


class FakeWorld:
    """Ports in ``taken`` are held (by the given Holder, or an unknown process); every other is free."""

    def __init__(self, taken: dict[int, Holder | None] | None = None, os_ports: list[int] | None = None):
        self.taken = dict(taken or {})
        self.os_ports = list(os_ports or [])
        self.asked_holder: list[int] = []

    def is_free(self, port: int) -> bool:
        return port not in self.taken

    def holder(self, port: int) -> Holder | None:
        self.asked_holder.append(port)
        return self.taken.get(port)

    def os_port(self) -> int:
        return self.os_ports.pop(0)


def external(pid=4242, name="nginx", cmdline="nginx: master process", same_user=True, protected=False) -> Holder:
    return Holder(pid, "me" if same_user else "root", name, cmdline, "external", 1.0, same_user, protected)


def stale(pid=777, cmdline="python app.py") -> Holder:
    return Holder(pid, "me", "python", cmdline, "ours-stale", 1.0, True, False)


def load(tmp_path: Path, text: str, environ: dict | None = None):
    path = tmp_path / "Stackfile.toml"
    path.write_text(textwrap.dedent(text))
    return stackfile.load(path, environ={} if environ is None else environ)


def ports(stack, world, strategy=None, names=None, keep=None) -> dict[str, PortChoice]:
    return plan.plan_ports(stack, set(names or stack.services), world, strategy, keep)


def full_plan(stack, world, environ=None, color=None):
    names = set(stack.services)
    return plan.build(stack, names, plan.plan_ports(stack, names, world), environ or {}, color)


# -- choosing ports (pure) ----------------------------------------------------------------------

def test_free_preferred_port_is_kept(tmp_path):
    stack = load(tmp_path, '[services.web]\ncmd = "x"\nport = 8000\n')
    choice = ports(stack, FakeWorld())["web.1"]
    assert choice == PortChoice(8000, 8000, None, None, Action.NONE)


def test_taken_port_moves_to_the_first_free_fallback_and_names_the_holder(tmp_path):
    stack = load(tmp_path, '[services.web]\ncmd = "x"\nport = 8000\n')
    world = FakeWorld({8000: external(), 8001: external(pid=5), 8002: None})
    choice = ports(stack, world)["web.1"]
    assert choice.preferred == 8000
    assert choice.port == 8003
    assert choice.reason == "8000 held by pid 4242 nginx (external) -> moved to 8003"
    assert choice.holder == external()
    assert choice.action == Action.MOVED
    assert world.asked_holder == [8000]  # only the preferred port's holder is looked up


def test_unknown_holder(tmp_path):
    stack = load(tmp_path, '[services.web]\ncmd = "x"\nport = 8000\nfallback = [9000]\n')
    choice = ports(stack, FakeWorld({8000: None}))["web.1"]
    assert (choice.port, choice.reason, choice.holder) == (9000, "8000 held by an unknown process -> moved to 9000", None)


def test_no_free_port_fails_with_the_holder_named(tmp_path):
    stack = load(tmp_path, '[services.web]\ncmd = "x"\nport = 8000\nfallback = [8001, 8002]\n')
    world = FakeWorld({8000: external(), 8001: None, 8002: None})
    choice = ports(stack, world)["web.1"]
    assert choice.port is None
    assert choice.reason == "8000 held by pid 4242 nginx (external); no free port among 8000 and 2 fallbacks"
    p = plan.build(stack, {"web"}, {"web.1": choice}, {})
    assert p.failures == ("web.1: 8000 held by pid 4242 nginx (external); no free port among 8000 and 2 fallbacks",)
    assert "PORT" not in p.by_name()["web.1"].env


def test_empty_fallback_list_means_no_fallback(tmp_path):
    stack = load(tmp_path, '[services.web]\ncmd = "x"\nport = 8000\nfallback = []\n')
    choice = ports(stack, FakeWorld({8000: external()}))["web.1"]
    assert choice.port is None
    assert choice.reason == "8000 held by pid 4242 nginx (external); no free port among 8000"


def test_never_the_same_port_twice_in_one_stack(tmp_path):
    stack = load(tmp_path, """
        [services.a]
        cmd = "x"
        port = 8000

        [services.b]
        cmd = "x"
        port = 8001
        depends_on = ["a"]

        [services.c]
        cmd = "x"
        port = 8002
        fallback = [8001, 8000, 8003]
        depends_on = ["b"]
    """)
    got = ports(stack, FakeWorld({8000: external()}))
    assert got["a.1"].port == 8001  # a plans first (start order) and moves to 8001
    assert got["b.1"].port == 8002
    assert got["b.1"].reason == "8001 is assigned to another instance of this stack -> moved to 8002"
    assert got["b.1"].holder is None
    assert got["c.1"].port == 8003
    assert len({c.port for c in got.values()}) == 3


def test_ports_are_planned_in_start_order(tmp_path):
    # frontend is declared first but depends on backend, so backend gets first pick of 9000
    stack = load(tmp_path, """
        [services.frontend]
        cmd = "x"
        port = 9001
        fallback = [9000]
        depends_on = ["backend"]

        [services.backend]
        cmd = "x"
        port = 9000
    """)
    got = ports(stack, FakeWorld({9001: None}))
    assert got["backend.1"].port == 9000
    assert got["frontend.1"].port is None


def test_scale_gives_each_instance_its_own_port(tmp_path):
    stack = load(tmp_path, '[services.web]\ncmd = "x"\nport = 8000\nscale = 3\n')
    got = ports(stack, FakeWorld())
    assert [(got[i].preferred, got[i].port) for i in ("web.1", "web.2", "web.3")] == [(8000, 8000), (8001, 8001), (8002, 8002)]


def test_scale_walks_the_candidates_when_an_instance_port_is_taken(tmp_path):
    stack = load(tmp_path, '[services.web]\ncmd = "x"\nport = 8000\nscale = 3\n')
    got = ports(stack, FakeWorld({8001: external()}))
    assert got["web.1"].port == 8000
    assert got["web.2"].preferred == 8001 and got["web.2"].port == 8002
    assert got["web.2"].reason == "8001 held by pid 4242 nginx (external) -> moved to 8002"
    assert got["web.3"].preferred == 8002 and got["web.3"].port == 8003
    assert got["web.3"].reason == "8002 is assigned to another instance of this stack -> moved to 8003"


def test_port_zero_asks_the_os_and_never_repeats(tmp_path):
    stack = load(tmp_path, """
        [services.a]
        cmd = "x"
        port = 0

        [services.b]
        cmd = "x"
        port = 0
        scale = 2
    """)
    got = ports(stack, FakeWorld(os_ports=[40001, 40001, 40002, 40001, 40002, 40003]))
    assert sorted(c.port for c in got.values()) == [40001, 40002, 40003]
    assert all(c.preferred == 0 and c.reason == "0 asks the OS for a free port" for c in got.values())


def test_services_without_a_port_get_none(tmp_path):
    stack = load(tmp_path, '[services.job]\ncmd = "x"\n')
    assert ports(stack, FakeWorld())["job.1"] == PortChoice(None, None)


def test_keep_holds_running_assignments(tmp_path):
    stack = load(tmp_path, '[services.a]\ncmd = "x"\nport = 8000\n[services.b]\ncmd = "x"\nport = 8001\n')
    got = ports(stack, FakeWorld(), keep={"a.1": 8001})
    assert got["a.1"] == PortChoice(8000, 8001)
    assert got["b.1"].port == 8002  # 8001 is a's


def test_only_the_named_services_are_planned(tmp_path):
    stack = load(tmp_path, '[services.a]\ncmd = "x"\nport = 8000\n[services.b]\ncmd = "x"\nport = 8001\n')
    assert set(ports(stack, FakeWorld(), names={"b"})) == {"b.1"}


# -- strategies ---------------------------------------------------------------------------------

def test_intelligent_reclaims_an_ours_stale_holder(tmp_path):
    stack = load(tmp_path, '[services.web]\ncmd = "python app.py"\nport = 8000\n')
    choice = ports(stack, FakeWorld({8000: stale()}))["web.1"]
    assert (choice.port, choice.action) == (8000, Action.RECLAIM)
    assert choice.reason == "8000 held by pid 777 python (ours-stale) -> will be reclaimed"


def test_conservative_moves_away_from_an_ours_stale_holder(tmp_path):
    stack = load(tmp_path, '[stack]\nstrategy = "conservative"\n[services.web]\ncmd = "python app.py"\nport = 8000\n')
    choice = ports(stack, FakeWorld({8000: stale()}))["web.1"]
    assert (choice.port, choice.action) == (8001, Action.MOVED)


def test_strategy_argument_overrides_the_stackfile(tmp_path):
    stack = load(tmp_path, '[services.web]\ncmd = "python app.py"\nport = 8000\n')
    world = FakeWorld({8000: external(name="python", cmdline="/usr/bin/python3 app.py")})
    assert ports(stack, world)["web.1"].port == 8001
    choice = ports(stack, world, Strategy.AGGRESSIVE)["web.1"]
    assert (choice.port, choice.action) == (8000, Action.STOP)
    assert choice.reason == "8000 held by pid 4242 python (external) -> holder will be stopped"


SVC_CMD = "exec python app.py --port $PORT"


@pytest.mark.parametrize("holder, expected", [
    # (conservative, intelligent, aggressive)
    (None, (Action.NONE,) * 3),
    (Holder(None), (Action.NONE,) * 3),
    (stale(), (Action.NONE, Action.RECLAIM, Action.RECLAIM)),
    (Holder(777, "me", "python", "python app.py", "ours-running", 1.0, True), (Action.NONE,) * 3),
    (Holder(1, "me", "init", "python app.py", "ours-stale", 1.0, True, protected=True), (Action.NONE,) * 3),
    (Holder(777, "other", "python", "python app.py", "ours-stale", 1.0, same_user=False), (Action.NONE,) * 3),
    (external(name="python", cmdline="/usr/bin/python3 app.py --port 8000"), (Action.NONE, Action.NONE, Action.STOP)),
    (external(name="python", cmdline="python other.py"), (Action.NONE,) * 3),
    (external(name="python", cmdline="python app.py", same_user=False), (Action.NONE,) * 3),
    (external(name="python", cmdline="python app.py", protected=True), (Action.NONE,) * 3),
    (Holder(42, "me", "python", "python app.py", "unknown", 1.0, True), (Action.NONE,) * 3),
])
def test_decide(tmp_path, holder, expected):
    stack = load(tmp_path, f'[services.web]\ncmd = "{SVC_CMD}"\nport = 8000\n')
    svc = stack.services["web"]
    got = tuple(plan.decide(svc, holder, s) for s in (Strategy.CONSERVATIVE, Strategy.INTELLIGENT, Strategy.AGGRESSIVE))
    assert got == expected


@pytest.mark.parametrize("cmd, cmdline, same", [
    ("python app.py", "/usr/bin/python3 app.py", True),
    ("python app.py", "python3.11 -u app.py --port 8000", True),
    ("exec uvicorn app:app --port $PORT", "/home/u/.venv/bin/uvicorn app:app --port 8000", True),
    ("FOO=1 env python app.py", "python app.py", True),
    (("node", "server.js"), "node /srv/server.js", True),
    ("python -m http.server", "python -m http.server 8000", True),
    ("python app.py", "python other.py", False),
    ("python -m http.server", "python -m uvicorn app:app", False),
    ("node server.js", "python server.js", False),
    ("python app.py", None, False),
    ("python app.py", "", False),
    ("FOO=1", "python app.py", False),
])
def test_same_program(cmd, cmdline, same):
    assert plan.same_program(cmd, cmdline) is same


def test_holder_json_and_description():
    h = external()
    assert h.to_json() == {"pid": 4242, "user": "me", "name": "nginx", "cmdline": "nginx: master process", "class": "external"}
    assert h.describe() == "pid 4242 nginx (external)"
    assert Holder(None).describe() == "an unknown process"


@pytest.mark.parametrize("key, secret", [
    ("API_TOKEN", True), ("DB_PASSWORD", True), ("SECRET_KEY", True), ("aws_credentials", True),
    ("LOG_LEVEL", False), ("PORT", False), ("DATABASE_URL", False),
])
def test_secret_like(key, secret):
    assert plan.secret_like(key) is secret


# -- the plan and each instance's environment ----------------------------------------------------

def test_plan_levels_instances_and_lookup(tmp_path):
    (tmp_path / "web").mkdir()
    stack = load(tmp_path, """
        [services.db]
        cmd = "x"
        port = 5432

        [services.web]
        cmd = "x"
        cwd = "web"
        port = 8000
        scale = 2
        depends_on = ["db"]
    """)
    p = full_plan(stack, FakeWorld())
    assert p.levels == (("db",), ("web",))
    assert [i.name for i in p.instances] == ["db.1", "web.1", "web.2"]
    assert [i.index for i in p.of_service("web")] == [1, 2]
    assert p.by_name()["web.2"].cwd == tmp_path / "web"
    assert p.failures == ()


def test_environment_each_instance_gets(tmp_path):
    stack = load(tmp_path, """
        [services.db]
        cmd = "x"
        port = 5432

        [services.my-api]
        cmd = "x"
        port = 8000
        port_env = "HTTP_PORT"

        [services.worker]
        cmd = "x"
        port = 9000
        scale = 2

        [services.job]
        cmd = "x"
    """)
    world = FakeWorld({5432: external()})
    by = full_plan(stack, world, environ={"HOME": "/home/me"}).by_name()
    shared = {
        "DB_PORT": "5433", "DB_HOST": "127.0.0.1",
        "MY_API_PORT": "8000", "MY_API_HOST": "127.0.0.1",
        "WORKER_PORT": "9000", "WORKER_HOST": "127.0.0.1",
        "WORKER_1_PORT": "9000", "WORKER_1_HOST": "127.0.0.1",
        "WORKER_2_PORT": "9001", "WORKER_2_HOST": "127.0.0.1",
    }
    for inst in by.values():
        for k, v in shared.items():
            assert inst.env[k] == v, (inst.name, k)
        assert inst.env["PYTHONUNBUFFERED"] == "1"
        assert inst.env["REVOSTACK_STACK"] == stack.id
        assert inst.env["REVOSTACK_SERVICE"] == inst.name
        assert inst.env["HOME"] == "/home/me"
        assert "JOB_PORT" not in inst.env
    assert by["db.1"].env["PORT"] == "5433"
    assert by["my-api.1"].env["HTTP_PORT"] == "8000" and "PORT" not in by["my-api.1"].env
    assert by["worker.1"].env["PORT"] == "9000"
    assert by["worker.2"].env["PORT"] == "9001"
    assert "PORT" not in by["job.1"].env


def test_environment_layers_later_wins(tmp_path):
    (tmp_path / ".env").write_text("L=stack-dotenv\nS_DOT=1\nPYTHONUNBUFFERED=0\n")
    (tmp_path / "web.env").write_text("L=service-dotenv\nW_DOT=1\n")
    stack = load(tmp_path, """
        [env]
        L = "stack-env"
        FROM_STACK = "${L}"

        [services.web]
        cmd = "x"
        port = 8000
        env_file = "web.env"
        env = { L2 = "${L}", PORT = "1", REVOSTACK_SERVICE = "fake", WEB_PORT = "2" }

        [services.other]
        cmd = "x"
    """, environ={"L": "environ", "KEEP": "k"})
    by = full_plan(stack, FakeWorld(), environ={"L": "environ", "KEEP": "k"}).by_name()
    web, other = by["web.1"].env, by["other.1"].env
    assert web["KEEP"] == "k"
    assert web["L"] == "service-dotenv"  # environ < stack .env < [env] < service env_file
    assert web["L2"] == "service-dotenv"  # env values see the layers below them
    assert web["FROM_STACK"] == "stack-env"
    assert (web["S_DOT"], web["W_DOT"]) == ("1", "1")
    assert other["L"] == "stack-env" and "W_DOT" not in other
    # what revostack sets wins over the user's layers
    assert web["PORT"] == "8000" and web["WEB_PORT"] == "8000" and web["REVOSTACK_SERVICE"] == "web.1"
    # PYTHONUNBUFFERED only when unset
    assert web["PYTHONUNBUFFERED"] == "0"


def test_dotenv_values_are_literal(tmp_path):
    (tmp_path / ".env").write_text("RAW=${HOME} $$x\n")
    stack = load(tmp_path, '[services.web]\ncmd = "x"\n', environ={"HOME": "/h"})
    assert full_plan(stack, FakeWorld(), {"HOME": "/h"}).by_name()["web.1"].env["RAW"] == "${HOME} $$x"


def test_env_values_can_use_ports_of_other_services(tmp_path):
    stack = load(tmp_path, """
        [services.db]
        cmd = "x"
        port = 5432

        [services.api]
        cmd = "x"
        port = 8000
        env = { DB = "${db.host}:${db.port}", SAME = "$DB_HOST:$DB_PORT", ME = "${host}:${port} $PORT" }
    """)
    env = full_plan(stack, FakeWorld({5432: None, 8000: None})).by_name()["api.1"].env
    assert env["DB"] == "127.0.0.1:5433"
    assert env["SAME"] == "127.0.0.1:5433"
    assert env["ME"] == "127.0.0.1:8001 8001"


def test_colour_variables(tmp_path):
    stack = load(tmp_path, '[services.web]\ncmd = "x"\n')
    on = full_plan(stack, FakeWorld(), color=True).by_name()["web.1"].env
    assert (on["FORCE_COLOR"], on["CLICOLOR_FORCE"]) == ("1", "1") and "NO_COLOR" not in on
    off = full_plan(stack, FakeWorld(), color=False).by_name()["web.1"].env
    assert off["NO_COLOR"] == "1" and "FORCE_COLOR" not in off
    neutral = full_plan(stack, FakeWorld()).by_name()["web.1"].env
    assert not {"FORCE_COLOR", "CLICOLOR_FORCE", "NO_COLOR"} & set(neutral)
    kept = full_plan(stack, FakeWorld(), environ={"FORCE_COLOR": "0"}, color=True).by_name()["web.1"].env
    assert kept["FORCE_COLOR"] == "0"


def test_cmd_and_health_use_the_assigned_port(tmp_path):
    stack = load(tmp_path, """
        [services.web]
        cmd = "serve --port ${port}"
        port = 8000
        health = { http = "http://${host}:${port}/up" }

        [services.tcp]
        cmd = ["serve", "${port}"]
        port = 9000
    """)
    by = full_plan(stack, FakeWorld({8000: None})).by_name()
    assert by["web.1"].cmd == "serve --port 8001"
    assert by["web.1"].health.target == "http://127.0.0.1:8001/up"
    assert by["tcp.1"].cmd == ("serve", "9000")
    assert by["tcp.1"].health.target == "127.0.0.1:9000" and by["tcp.1"].health.implicit


# -- against the real machine: listeners this test holds ----------------------------------------

@pytest.fixture
def held():
    """Listening sockets on 127.0.0.1, each on a port the OS chose; yields a function returning a new one's port."""
    socks: list[socket.socket] = []

    def hold() -> int:
        while True:  # leave room above it for the fallbacks the tests expect
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            s.listen()
            socks.append(s)
            if s.getsockname()[1] <= 65000:
                return s.getsockname()[1]

    yield hold
    for s in socks:
        s.close()


def real_plan(tmp_path, text, ownership=None):
    stack = load(tmp_path, text)
    world = probe.ProbeWorld(stack.host, ownership)
    return stack, full_plan(stack, world)


def test_real_listener_forces_a_fallback_naming_its_pid(tmp_path, held):
    port = held()
    stack, p = real_plan(tmp_path, f'[services.web]\ncmd = "python app.py"\nport = {port}\n')
    choice = p.by_name()["web.1"].port
    assert choice.preferred == port
    assert choice.port != port and port + 1 <= choice.port <= port + 20
    assert choice.holder is not None and choice.holder.pid == os.getpid()
    assert choice.holder.cls == "external"
    assert choice.holder.protected  # the test process plans its own ports: never stopped
    assert choice.reason.startswith(f"{port} held by pid {os.getpid()} ")
    assert choice.reason.endswith(f"-> moved to {choice.port}")
    assert choice.action == Action.MOVED
    assert p.by_name()["web.1"].env["PORT"] == str(choice.port)
    assert p.by_name()["web.1"].env["WEB_PORT"] == str(choice.port)


def test_real_listener_is_never_stopped_even_by_aggressive(tmp_path, held):
    import json

    import psutil

    port = held()
    # the service runs the very program that holds the port (this test process), as the same user
    cmd = json.dumps(psutil.Process().cmdline())
    stack = load(tmp_path, f'[stack]\nstrategy = "aggressive"\n[services.web]\ncmd = {cmd}\nport = {port}\n')
    choice = ports(stack, probe.ProbeWorld(stack.host))["web.1"]
    assert choice.holder.pid == os.getpid() and choice.holder.same_user
    assert plan.same_program(stack.services["web"].cmd, choice.holder.cmdline)
    assert choice.holder.protected  # but it is revostack's caller: never stopped
    assert choice.port != port and choice.action == Action.MOVED


def test_real_never_the_same_port_twice(tmp_path, held):
    port = held()
    stack, p = real_plan(tmp_path, f"""
        [services.a]
        cmd = "x"
        port = {port}

        [services.b]
        cmd = "x"
        port = {port + 1}
        depends_on = ["a"]

        [services.c]
        cmd = "x"
        port = 0
        scale = 2
        depends_on = ["b"]
    """)
    assigned = [i.port.port for i in p.instances]
    assert None not in assigned
    assert port not in assigned
    assert len(set(assigned)) == len(assigned) == 4
    b = p.by_name()["b.1"].port
    if assigned[0] == port + 1:  # a moved onto b's preferred port: b moves on
        assert b.reason.startswith(f"{port + 1} is assigned to another instance of this stack -> moved to ")


def test_real_scale_gives_each_instance_its_own_port(tmp_path, held):
    port = held()
    stack, p = real_plan(tmp_path, f'[services.web]\ncmd = "x"\nport = {port}\nscale = 3\n')
    got = [i.port for i in p.of_service("web")]
    assert [c.preferred for c in got] == [port, port + 1, port + 2]
    assigned = [c.port for c in got]
    assert port not in assigned and None not in assigned and len(set(assigned)) == 3
    for inst, c in zip(p.of_service("web"), got):
        assert inst.env["PORT"] == str(c.port)
        assert inst.env[f"WEB_{inst.index}_PORT"] == str(c.port)


def test_real_port_zero_gets_an_os_port(tmp_path):
    stack, p = real_plan(tmp_path, '[services.a]\ncmd = "x"\nport = 0\n[services.b]\ncmd = "x"\nport = 0\n')
    a, b = p.by_name()["a.1"].port.port, p.by_name()["b.1"].port.port
    assert 0 < a <= 65535 and 0 < b <= 65535 and a != b
    assert p.by_name()["b.1"].env["A_PORT"] == str(a)


CHILD = """
import os, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen()
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    f.write(str(s.getsockname()[1]))
os.replace(tmp, sys.argv[1])
sys.stdin.read()  # until the test closes stdin or kills the group
"""


def test_real_ours_stale_holder_is_reclaimed_under_intelligent(tmp_path, reaper):
    stack = load(tmp_path, '[services.web]\ncmd = "python app.py"\nport = 1\n')
    port_file = tmp_path / "port"
    child = reaper.popen([sys.executable, "-c", CHILD, str(port_file)], stdin=subprocess.PIPE,
                         env={**os.environ, "REVOSTACK_STACK": stack.id})
    port = int(wait_for(lambda: port_file.exists() and port_file.read_text(), timeout=30, what="the child's port"))
    stack = load(tmp_path, f'[services.web]\ncmd = "python app.py"\nport = {port}\n')
    world = probe.ProbeWorld(stack.host, probe.Ownership(stack.id, {}, running=False))
    choice = ports(stack, world)["web.1"]
    assert choice.holder.pid == child.pid
    assert choice.holder.cls == "ours-stale"
    assert (choice.port, choice.action) == (port, Action.RECLAIM)
    # the same holder, but the stack is up: ours-running, never stopped by planning
    world = probe.ProbeWorld(stack.host, probe.Ownership(stack.id, {}, running=True))
    choice = ports(stack, world)["web.1"]
    assert choice.holder.cls == "ours-running" and choice.action == Action.MOVED
    # conservative never stops anything
    choice = ports(stack, probe.ProbeWorld(stack.host, probe.Ownership(stack.id, {})), Strategy.CONSERVATIVE)["web.1"]
    assert choice.port != port and choice.action == Action.MOVED
    child.stdin.close()

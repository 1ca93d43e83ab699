"""The reload diff, pure: two plans in, the actions out. No process, no socket."""

from __future__ import annotations

import textwrap

from revostack import plan as planmod
from revostack import reconcile, stackfile

BASE = """
[env]
LOG_LEVEL = "info"

[services.db]
cmd = "db"
port = 15000

[services.api]
cmd = "api --port $PORT"
port = 16000
env = { DB = "tcp://${host}:${db.port}" }
depends_on = ["db"]

[services.web]
cmd = "web"
port = 17000
env = { API = "http://${host}:${api.port}" }
depends_on = ["api"]

[services.worker]
cmd = "work"
"""


def plan_of(tmp_path, text: str, ports: dict[str, int] | None = None, name: str = "a") -> planmod.Plan:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    path = folder / "Stackfile.toml"
    path.write_text(textwrap.dedent(text))
    stack = stackfile.load(path, environ={})
    chosen = {}
    for svc in stack.services.values():
        for i, inst in enumerate(svc.instances, 1):
            port = (ports or {}).get(inst, svc.port + i - 1 if svc.port else None)
            chosen[inst] = planmod.PortChoice(svc.port, port)
    return planmod.build(stack, set(stack.services), chosen, {})


def test_unchanged_touches_nothing(tmp_path):
    d = reconcile.diff(plan_of(tmp_path, BASE), plan_of(tmp_path, BASE))
    assert d.empty and d.summary() == "reload: nothing changed"
    assert (d.removed, d.added, d.restarted, d.scaled) == ((), (), (), ())


def test_an_env_change_restarts_every_service_that_sees_it(tmp_path):
    d = reconcile.diff(plan_of(tmp_path, BASE), plan_of(tmp_path, BASE.replace('"info"', '"debug"')))
    assert d.restarted == ("db", "worker", "api", "web")  # in dependency order
    assert d.summary() == ("reload: db changed (env LOG_LEVEL), worker changed (env LOG_LEVEL), "
                           "api changed (env LOG_LEVEL), web changed (env LOG_LEVEL)")


def test_a_service_env_change_restarts_only_it(tmp_path):
    new = BASE.replace('env = { API = "http://${host}:${api.port}" }',
                       'env = { API = "http://${host}:${api.port}", MODE = "dev" }')
    d = reconcile.diff(plan_of(tmp_path, BASE), plan_of(tmp_path, new))
    assert d.restarted == ("web",) and d.summary() == "reload: web changed (env MODE)"


def test_added_and_removed(tmp_path):
    new = BASE.replace('[services.worker]\ncmd = "work"\n', '[services.cron]\ncmd = "tick"\ndepends_on = ["db"]\n')
    d = reconcile.diff(plan_of(tmp_path, BASE), plan_of(tmp_path, new))
    assert d.added == ("cron",) and d.removed == ("worker",) and d.restarted == ()
    assert d.summary() == "reload: cron added, worker removed"


def test_a_moved_port_restarts_its_dependents_as_such(tmp_path):
    old = plan_of(tmp_path, BASE)
    new = plan_of(tmp_path, BASE.replace("port = 16000", "port = 16100"))
    d = reconcile.diff(old, new)
    # web depends on api: restarted for it; db and worker carry API_PORT too but need nothing of api
    assert [(c.service, c.kind) for c in d.changes] == [("api", "changed"), ("web", "dependent")]
    web = next(c for c in d.changes if c.service == "web")
    assert "API_PORT" in web.why and "env API" not in web.why  # what it was given, not its own definition
    assert d.restarted == ("api", "web")


def test_command_health_and_policy_changes_are_named(tmp_path):
    new = BASE.replace('cmd = "work"', 'cmd = "work --fast"\nrestart = "always"\nstop_signal = "SIGINT"')
    d = reconcile.diff(plan_of(tmp_path, BASE), plan_of(tmp_path, new))
    assert d.summary() == "reload: worker changed (restart, stop_signal, cmd)"


def test_scale_alone_is_a_scale(tmp_path):
    d = reconcile.diff(plan_of(tmp_path, BASE), plan_of(tmp_path, BASE.replace('cmd = "work"', 'cmd = "work"\nscale = 3')))
    assert d.scaled == ("worker",) and d.restarted == ()
    assert d.summary() == "reload: worker scaled (scale 1 -> 3)"


def test_handoff_and_dependencies_count_as_changes(tmp_path):
    new = BASE.replace('cmd = "api --port $PORT"', 'cmd = "api --port $PORT"\nhandoff = "proxy"')
    new = new.replace('[services.worker]\ncmd = "work"', '[services.worker]\ncmd = "work"\ndepends_on = ["db"]')
    d = reconcile.diff(plan_of(tmp_path, BASE), plan_of(tmp_path, new))
    kinds = {c.service: c for c in d.changes}
    assert kinds["api"].why == ("handoff",) and kinds["worker"].why == ("depends_on",)


def test_a_service_that_names_a_moved_port_without_depending_on_it_restarts(tmp_path):
    text = BASE.replace('[services.worker]\ncmd = "work"', '[services.worker]\ncmd = "work --api $API_PORT"')
    d = reconcile.diff(plan_of(tmp_path, text), plan_of(tmp_path, text.replace("port = 16000", "port = 16100")))
    assert [(c.service, c.kind) for c in d.changes] == [("worker", "dependent"), ("api", "changed"),
                                                        ("web", "dependent")]

"""Procfiles: parsing, errors with line numbers, foreman's port rule, concurrency."""

from __future__ import annotations

import pytest

from revostack import plan, procfile
from revostack.errors import ConfigError
from revostack.stackfile import Restart

PROCFILE = """\
# the processes of this app
web: python -m http.server $PORT

worker:   python worker.py --queue default
  # an indented comment
clock: python clock.py
"""


class FreeWorld:
    def __init__(self, taken=()):
        self.taken = set(taken)

    def is_free(self, port):
        return port not in self.taken

    def holder(self, port):
        return None

    def os_port(self):
        raise AssertionError("Procfile ports are never 0")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        procfile.parse(text)
    return str(info.value).splitlines()


def test_parse_keeps_file_order_and_skips_comments_and_blanks():
    assert procfile.parse(PROCFILE) == [
        ("web", "python -m http.server $PORT"),
        ("worker", "python worker.py --queue default"),
        ("clock", "python clock.py"),
    ]


def test_command_may_contain_colons():
    assert procfile.parse("web: gunicorn app:app -b 0.0.0.0:$PORT\n") == [("web", "gunicorn app:app -b 0.0.0.0:$PORT")]


def test_crlf():
    assert procfile.parse("web: a\r\nworker: b\r\n") == [("web", "a"), ("worker", "b")]


def test_malformed_lines_are_reported_with_their_numbers():
    assert errors("web: ok\nthis is not a process\n\nweb2 a\n") == [
        'Procfile:2:1: expected "name: command"',
        'Procfile:4:1: expected "name: command"',
    ]


def test_empty_command_is_an_error():
    assert errors("web:\n") == ['Procfile:1:1: expected "name: command"']


def test_duplicate_process_type():
    assert errors("web: a\nworker: b\nweb: c\n") == ['Procfile:3:1: process type "web" is declared twice']


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_no_processes(text):
    assert errors(text) == ['Procfile: no processes: add lines like "web: python app.py"']


def test_foreman_port_rule():
    assert procfile.foreman_port(5000, 0, 1) == 5000
    assert procfile.foreman_port(5000, 0, 2) == 5001
    assert procfile.foreman_port(5000, 2, 1) == 5200
    assert procfile.foreman_port(6000, 1, 3) == 6102


def write(tmp_path, text=PROCFILE, name="Procfile"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_as_a_stack(tmp_path):
    stack = procfile.load(write(tmp_path))
    assert stack.kind == "procfile"
    assert stack.name == tmp_path.name
    assert list(stack.services) == ["web", "worker", "clock"]
    assert [s.port for s in stack.services.values()] == [5000, 5100, 5200]
    for svc in stack.services.values():
        assert svc.depends_on == ()
        assert svc.health is None
        assert svc.restart is Restart.NO
        assert svc.cwd == tmp_path
        assert svc.scale == 1 and svc.autostart
    assert stack.services["web"].cmd == "python -m http.server $PORT"
    assert stack.levels() == [["web", "worker", "clock"]]


def test_base_port_and_concurrency(tmp_path):
    stack = procfile.load(write(tmp_path), base_port=6000, concurrency={"web": 2, "clock": 3})
    web, worker, clock = (stack.services[n] for n in ("web", "worker", "clock"))
    assert (web.port, worker.port, clock.port) == (6000, 6100, 6200)
    assert web.instances == ["web.1", "web.2"]
    assert clock.instances == ["clock.1", "clock.2", "clock.3"]
    got = plan.plan_ports(stack, set(stack.services), FreeWorld())
    assert {i: c.port for i, c in got.items()} == {
        "web.1": 6000, "web.2": 6001, "worker.1": 6100, "clock.1": 6200, "clock.2": 6201, "clock.3": 6202,
    }


def test_a_subset_keeps_its_ports(tmp_path):
    stack = procfile.load(write(tmp_path))
    got = plan.plan_ports(stack, {"clock"}, FreeWorld())
    assert {i: c.port for i, c in got.items()} == {"clock.1": 5200}


def test_a_taken_foreman_port_moves_past_the_instances(tmp_path):
    stack = procfile.load(write(tmp_path), concurrency={"web": 2})
    got = plan.plan_ports(stack, set(stack.services), FreeWorld(taken={5000}))
    assert got["web.2"].port == 5001
    assert got["web.1"].port == 5002
    assert got["web.1"].reason == "5000 held by an unknown process -> moved to 5002"


def test_concurrency_zero_means_not_started(tmp_path):
    stack = procfile.load(write(tmp_path), concurrency={"clock": 0})
    assert stack.services["clock"].autostart is False
    assert stack.selection() == {"web", "worker"}


def test_concurrency_for_an_unknown_process_type(tmp_path):
    with pytest.raises(ConfigError) as info:
        procfile.load(write(tmp_path), concurrency={"wbe": 2})
    assert str(info.value) == f'{tmp_path / "Procfile"}: unknown process type "wbe" in concurrency'


def test_dotenv_next_to_the_procfile_is_read(tmp_path):
    (tmp_path / ".env").write_text("A=1\nexport B='two'\n")
    stack = procfile.load(write(tmp_path))
    assert dict(stack.dotenv) == {"A": "1", "B": "two"}
    env = plan.build(stack, {"web"}, plan.plan_ports(stack, {"web"}, FreeWorld()), {}).by_name()["web.1"].env
    assert (env["A"], env["B"], env["PORT"], env["WEB_PORT"]) == ("1", "two", "5000", "5000")


def test_explicit_env_files_replace_the_default(tmp_path):
    (tmp_path / ".env").write_text("A=default\n")
    (tmp_path / "one.env").write_text("A=one\nB=one\n")
    (tmp_path / "two.env").write_text("B=two\n")
    stack = procfile.load(write(tmp_path), env_files=[tmp_path / "one.env", tmp_path / "two.env"])
    assert dict(stack.dotenv) == {"A": "one", "B": "two"}


def test_malformed_dotenv_is_an_error(tmp_path):
    (tmp_path / ".env").write_text("A=1\nnope\n")
    with pytest.raises(ConfigError) as info:
        procfile.load(write(tmp_path))
    assert str(info.value) == f"{tmp_path / '.env'}:2:1: expected KEY=value"


def test_errors_name_the_procfile(tmp_path):
    with pytest.raises(ConfigError) as info:
        procfile.load(write(tmp_path, "web: a\nbad\n"))
    assert str(info.value) == f'{tmp_path / "Procfile"}:2:1: expected "name: command"'


def test_missing_procfile(tmp_path):
    with pytest.raises(ConfigError) as info:
        procfile.load(tmp_path / "Procfile")
    assert str(info.value) == f'{tmp_path / "Procfile"}: no such file'


def test_app_root(tmp_path):
    (tmp_path / "app").mkdir()
    stack = procfile.load(write(tmp_path), root=tmp_path / "app")
    assert stack.services["web"].cwd == tmp_path / "app"
    assert stack.name == "app"


def test_errors_name_the_procfile_relative_to_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("ok=1\n\nbad line\n")
    with pytest.raises(ConfigError) as info:
        procfile.load(write(tmp_path))
    assert str(info.value) == ".env:3:1: expected KEY=value"
    with pytest.raises(ConfigError) as info:
        procfile.load(write(tmp_path, "web: a\nbad\n"), env_files=[])
    assert str(info.value) == 'Procfile:2:1: expected "name: command"'


def test_procfile_env_base_port_and_honcho_process_name(tmp_path):
    """foreman/honcho: PORT in .env is the base port when -p is not given; each process sees
    HONCHO_PROCESS_NAME, as under honcho."""
    from revostack import plan as planmod
    from revostack import procfile as pf

    (tmp_path / "Procfile").write_text("web: run-web\nworker: run-worker\n")
    (tmp_path / ".env").write_text("PORT=7000\n")
    stack = pf.load(tmp_path / "Procfile", environ={"PORT": "9000"})
    assert stack.services["web"].port == 7000 and stack.services["worker"].port == 7100
    assert pf.load(tmp_path / "Procfile", base_port=8000).services["worker"].port == 8100
    selected = set(stack.services)
    ports = {f"{n}.1": planmod.PortChoice(s.port, s.port) for n, s in stack.services.items()}
    plan = planmod.build(stack, selected, ports, {})
    env = plan.by_name()["worker.1"].env
    assert env["HONCHO_PROCESS_NAME"] == "worker.1" and env["PORT"] == "7100"

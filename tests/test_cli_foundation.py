"""The foundation commands end to end, as a user runs them: ``python -m revostack check | ports |
graph | init``, ``--version``, and the errors (exit 2, one line per problem, never a traceback)."""

from __future__ import annotations

import json
import os
import socket
import textwrap

import pytest

from conftest import REPO, cli
from revostack import __version__, stackfile

FULLSTACK = REPO / "examples" / "fullstack" / "Stackfile.toml"


def write(folder, text, name="Stackfile.toml"):
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def no_traceback(result):
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


@pytest.fixture
def held():
    """A listening socket on 127.0.0.1 on a port the OS chose; yields its port."""
    socks = []
    try:
        while True:  # leave room above it for the fallbacks the tests expect
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            s.listen()
            socks.append(s)
            if s.getsockname()[1] <= 65000:
                break
        yield s.getsockname()[1]
    finally:
        for s in socks:
            s.close()


# -- check --------------------------------------------------------------------------------------

def test_check_the_example_stack(tmp_path):
    r = cli("check", "-f", str(FULLSTACK), cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    assert 'stack "fullstack", 6 services: valid' in r.stdout
    assert "start order:\n  1. db, events, worker\n  2. migrate\n  3. backend\n  4. frontend\n" in r.stdout
    assert "depends on: db (healthy), migrate (completed)" in r.stdout
    assert "LOG_LEVEL=info" in r.stdout
    assert "DB_PORT=" in r.stdout and "BACKEND_PORT=" in r.stdout


def test_check_finds_the_stackfile_in_a_parent_folder(tmp_path):
    write(tmp_path, '[stack]\nname = "up-there"\n[services.web]\ncmd = "python -V"\n')
    (tmp_path / "deep" / "er").mkdir(parents=True)
    r = cli("check", cwd=tmp_path / "deep" / "er")
    assert r.returncode == 0, r.stderr
    assert 'stack "up-there", 1 service: valid' in r.stdout


def test_check_broken_stackfile_one_line_per_problem(tmp_path):
    write(tmp_path, """
        [services.web]
        cmd = ""
        port = 70000
        restrat = "no"

        [services.api]
        cmd = "x"
        depends_on = ["wbe"]
    """)
    r = cli("check", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        "Stackfile.toml:2:1: services.web.cmd: must not be empty",
        "Stackfile.toml:3:1: services.web.port: 70000 is outside 0-65535",
        'Stackfile.toml:4:1: services.web.restrat: unknown key "restrat" (did you mean "restart"?)',
        'Stackfile.toml:8:16: services.api.depends_on: unknown service "wbe" (did you mean "web"?)',
    ]


def test_check_cycle_and_bad_dotenv(tmp_path):
    (tmp_path / ".env").write_text("OK=1\nbroken\n")
    write(tmp_path, """
        [services.a]
        cmd = "x"
        depends_on = ["b"]

        [services.b]
        cmd = "x"
        depends_on = ["a"]
    """)
    r = cli("check", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        ".env:2:1: expected KEY=value",
        "Stackfile.toml:3:16: services.a.depends_on: dependency cycle: a -> b -> a",
    ]


@pytest.mark.parametrize("content, expected", [
    (b"[services.web\ncmd = 1\n", "invalid TOML"),
    (b'[services.web]\ncmd = "\xff"\n', "not valid UTF-8"),
])
def test_check_unreadable_stackfile(tmp_path, content, expected):
    (tmp_path / "Stackfile.toml").write_bytes(content)
    r = cli("check", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and expected in lines[0]
    assert lines[0].startswith("Stackfile.toml:")


def test_check_a_directory_given_with_f(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    r = cli("check", "-f", "dir.toml", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 2
    assert r.stderr.splitlines() == ["dir.toml: is a directory, not a file"]


def test_check_masks_secrets_and_warns_about_missing_programs(tmp_path):
    write(tmp_path, """
        [env]
        API_TOKEN = "s3cr3t"
        LOG_LEVEL = "debug"

        [services.web]
        cmd = "surely-no-such-program-revostack --serve"
    """)
    r = cli("check", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    assert "API_TOKEN=****" in r.stdout and "s3cr3t" not in r.stdout
    assert "LOG_LEVEL=debug" in r.stdout
    assert 'warning: web: program "surely-no-such-program-revostack" not found' in r.stderr


def test_check_a_procfile_when_there_is_no_stackfile(tmp_path):
    write(tmp_path, "web: python -m http.server $PORT\nworker: python -V\n", name="Procfile")
    r = cli("check", cwd=tmp_path, env={"PORT": ""})
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    assert "2 services: valid" in r.stdout
    assert "start order:\n  1. web, worker\n" in r.stdout


def test_check_a_broken_procfile(tmp_path):
    write(tmp_path, "web: python app.py\nthis is not a process\n", name="Procfile")
    r = cli("check", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 2
    assert r.stderr.splitlines() == ['Procfile:2:1: expected "name: command"']


def test_no_stackfile_found(tmp_path):
    r = cli("check", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1
    assert "no Stackfile.toml or Procfile" in lines[0]


def test_missing_stackfile_given_with_f(tmp_path):
    r = cli("ports", "-f", "nope.toml", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 2
    assert r.stderr.splitlines() == ["nope.toml: no such file"]


# -- ports --------------------------------------------------------------------------------------

def test_ports_json_while_the_test_holds_the_preferred_port(tmp_path, held):
    write(tmp_path, f"""
        [stack]
        name = "ports-test"

        [services.web]
        cmd = "python -m http.server $PORT"
        port = {held}

        [services.api]
        cmd = "python api.py"
        port = 0
        port_env = "API_LISTEN"

        [services.job]
        cmd = "python job.py"
    """)
    r = cli("ports", "--json", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data) == {"stack", "live", "instances"}
    assert data["stack"] == "ports-test" and data["live"] is False
    by = {i["instance"]: i for i in data["instances"]}
    assert set(by) == {"web.1", "api.1"}  # a service without a port has no row
    for row in by.values():
        assert set(row) == {"instance", "service", "env", "preferred", "assigned", "reason", "holder"}
    web = by["web.1"]
    assert (web["service"], web["env"], web["preferred"]) == ("web", "PORT", held)
    assert web["assigned"] != held and held < web["assigned"] <= held + 20
    assert web["reason"].startswith(f"{held} held by pid {os.getpid()} ")
    assert web["reason"].endswith(f"-> moved to {web['assigned']}")
    assert set(web["holder"]) == {"pid", "user", "name", "cmdline", "class"}
    assert web["holder"]["pid"] == os.getpid()
    assert web["holder"]["class"] == "external"
    api = by["api.1"]
    assert (api["env"], api["preferred"], api["holder"]) == ("API_LISTEN", 0, None)
    assert isinstance(api["assigned"], int) and api["assigned"] > 0 and api["assigned"] != web["assigned"]


def test_ports_table_says_why(tmp_path, held):
    write(tmp_path, f'[services.web]\ncmd = "x"\nport = {held}\n')
    r = cli("ports", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["INSTANCE", "PREFERRED", "ASSIGNED", "ENV", "WHY"]
    assert lines[1].startswith("web.1") and f"{held} held by pid {os.getpid()}" in lines[1]
    assert lines[-1] == "(plan: what `revostack up` would assign now)"


def test_ports_fail_with_exit_3_when_nothing_is_free(tmp_path, held):
    write(tmp_path, f'[services.web]\ncmd = "x"\nport = {held}\nfallback = []\n')
    r = cli("ports", "--json", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 3
    row = json.loads(r.stdout)["instances"][0]
    assert row["assigned"] is None
    assert row["reason"] == f"{held} held by pid {os.getpid()} {row['holder']['name']} (external); no free port among {held}"


def test_ports_env_prints_exports_for_eval(tmp_path, held):
    write(tmp_path, f"""
        [services.my-api]
        cmd = "x"
        port = {held}

        [services.worker]
        cmd = "x"
        port = 0
        scale = 2

        [services.job]
        cmd = "x"
    """)
    r = cli("ports", "--env", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    names = [line.split("=")[0] for line in lines]
    assert names == ["export MY_API_PORT", "export WORKER_PORT", "export WORKER_1_PORT", "export WORKER_2_PORT"]
    values = {n.split()[1]: int(line.split("=")[1]) for n, line in zip(names, lines)}
    assert values["MY_API_PORT"] != held
    assert values["WORKER_PORT"] == values["WORKER_1_PORT"] != values["WORKER_2_PORT"]


def test_ports_on_a_procfile_follow_foreman(tmp_path):
    write(tmp_path, "web: a\nworker: b\n", name="Procfile")
    r = cli("ports", "--json", "-f", "Procfile", cwd=tmp_path, env={"PORT": "7000"})
    no_traceback(r)
    rows = json.loads(r.stdout)["instances"]
    assert [(i["instance"], i["preferred"]) for i in rows] == [("web.1", 7000), ("worker.1", 7100)]


def test_bad_strategy_is_a_usage_error(tmp_path):
    write(tmp_path, '[services.web]\ncmd = "x"\n')
    r = cli("ports", "--strategy", "reckless", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and "invalid choice" in r.stderr


# -- graph --------------------------------------------------------------------------------------

GRAPH = """
    [stack]
    name = "g"

    [services.db]
    cmd = "x"
    port = 5432

    [services.api]
    cmd = "x"
    depends_on = ["db"]

    [services.web]
    cmd = "x"
    depends_on = { api = "started" }
"""


@pytest.mark.parametrize("fmt, expected", [
    ("tree", "web\n└── api (started)\n    └── db (healthy)\n"),
    ("dot", 'digraph "g" {\n  rankdir=LR;\n  "db";\n  "api";\n  "web";\n'
            '  "api" -> "db" [label="healthy"];\n  "web" -> "api" [label="started"];\n}\n'),
    ("mermaid", "graph LR\n  db[db]\n  api[api]\n  web[web]\n  api -->|healthy| db\n  web -->|started| api\n"),
])
def test_graph_formats(tmp_path, fmt, expected):
    write(tmp_path, GRAPH)
    r = cli("graph", "--format", fmt, cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected


def test_graph_default_is_tree(tmp_path):
    write(tmp_path, GRAPH)
    assert cli("graph", cwd=tmp_path).stdout == "web\n└── api (started)\n    └── db (healthy)\n"


def test_graph_of_a_broken_stackfile(tmp_path):
    write(tmp_path, '[services.a]\ncmd = "x"\ndepends_on = ["a"]\n')
    r = cli("graph", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 2
    assert r.stderr.splitlines() == ["Stackfile.toml:3:16: services.a.depends_on: dependency cycle: a -> a"]


# -- init ---------------------------------------------------------------------------------------

def test_init_from_a_procfile(tmp_path):
    write(tmp_path, "# app\nweb: python -m http.server $PORT\nworker: python worker.py\n", name="Procfile")
    r = cli("init", cwd=tmp_path, env={"PORT": ""})
    no_traceback(r)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "wrote Stackfile.toml from Procfile"
    stack = stackfile.load(tmp_path / "Stackfile.toml", environ={})
    assert stack.name == tmp_path.name
    assert [(s.name, s.cmd, s.port) for s in stack.services.values()] == [
        ("web", "python -m http.server $PORT", 5000),
        ("worker", "python worker.py", 5100),
    ]
    assert stack.services["web"].health.implicit
    # the generated file passes `check` too
    assert cli("check", cwd=tmp_path).returncode in (0, 3)


def test_init_refuses_to_overwrite_without_force(tmp_path):
    write(tmp_path, "web: python app.py\n", name="Procfile")
    original = '[services.mine]\ncmd = "keep me"\n'
    (tmp_path / "Stackfile.toml").write_text(original)
    r = cli("init", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and "already exists" in r.stderr and "--force" in r.stderr
    assert (tmp_path / "Stackfile.toml").read_text() == original
    r = cli("init", "--force", cwd=tmp_path, env={"PORT": ""})
    assert r.returncode == 0, r.stderr
    assert list(stackfile.load(tmp_path / "Stackfile.toml", environ={}).services) == ["web"]


def test_init_from_a_named_procfile_with_a_base_port(tmp_path):
    write(tmp_path, "api: python api.py $PORT\nclock: python clock.py\n", name="Procfile.dev")
    r = cli("init", "--from", "Procfile.dev", "-p", "7000", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    stack = stackfile.load(tmp_path / "Stackfile.toml", environ={})
    assert [s.port for s in stack.services.values()] == [7000, 7100]


def test_init_without_a_procfile_writes_a_template_that_loads(tmp_path):
    r = cli("init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "wrote Stackfile.toml"
    stack = stackfile.load(tmp_path / "Stackfile.toml", environ={})
    assert stack.services["web"].port == 8000


def test_init_from_a_broken_procfile(tmp_path):
    write(tmp_path, "web: ok\nnot a line\n", name="Procfile")
    r = cli("init", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 2
    assert r.stderr.splitlines() == ['Procfile:2:1: expected "name: command"']
    assert not (tmp_path / "Stackfile.toml").exists()


# -- the program itself -------------------------------------------------------------------------

def test_version(tmp_path):
    r = cli("--version", cwd=tmp_path)
    assert r.returncode == 0
    assert r.stdout.strip() == f"revostack {__version__}"


def test_python_dash_m_and_help(tmp_path):
    r = cli("--help", cwd=tmp_path)
    assert r.returncode == 0
    assert r.stdout.startswith("usage: revostack")
    for command in ("check", "ports", "graph", "init"):
        assert command in r.stdout


def test_console_script_is_declared():
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("revostack") == "revostack.cli:entry"


def test_unknown_command(tmp_path):
    r = cli("frobnicate", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "frobnicate" in lines[0] and "invalid choice" in lines[0]


def test_unknown_option(tmp_path):
    r = cli("check", "--frobnicate", cwd=tmp_path)
    no_traceback(r)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and "--frobnicate" in r.stderr


def test_main_in_process(tmp_path, monkeypatch, capsys):
    from revostack.cli import main

    monkeypatch.chdir(tmp_path)
    write(tmp_path, '[services.web]\ncmd = ""\n')
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert err == "Stackfile.toml:2:1: services.web.cmd: must not be empty\n"

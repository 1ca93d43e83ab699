"""The Stackfile loader: every error kind located as FILE:LINE:COL: key.path: message, all at once,
and the defaults of a minimal Stackfile."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from revostack import stackfile
from revostack.errors import ConfigError, Problem
from revostack.stackfile import Condition, HealthKind, Restart, Strategy


@pytest.fixture
def here(tmp_path, monkeypatch):
    """Work inside tmp_path, so the loader names files relative to it ("Stackfile.toml:3:1: ...")."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(folder: Path, text: str, name: str = "Stackfile.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems(path: Path, environ: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        stackfile.load(path, environ={} if environ is None else environ)
    lines = str(info.value).splitlines()
    assert len(lines) == len(info.value.problems)
    return lines


def one_problem(path: Path, environ: dict | None = None) -> str:
    found = problems(path, environ)
    assert len(found) == 1, found
    return found[0]


# -- the file itself ----------------------------------------------------------------------------

def test_missing_stackfile(here):
    assert one_problem(Path("Stackfile.toml")) == "Stackfile.toml: no such file"
    assert one_problem(here / "Stackfile.toml") == "Stackfile.toml: no such file"  # under the cwd: relative
    assert one_problem(here.parent / "elsewhere.toml") == f"{here.parent / 'elsewhere.toml'}: no such file"


def test_stackfile_that_is_a_directory(here):
    (here / "Stackfile.toml").mkdir()
    assert one_problem(Path("Stackfile.toml")) == "Stackfile.toml: is a directory, not a file"


def test_stackfile_not_utf8_names_line_and_column(here):
    (here / "Stackfile.toml").write_bytes(b'[services.web]\ncmd = "caf\xe9"\n')
    assert one_problem(Path("Stackfile.toml")) == "Stackfile.toml:2:11: not valid UTF-8"
    assert one_problem(here / "Stackfile.toml") == "Stackfile.toml:2:11: not valid UTF-8"


def test_toml_syntax_error_is_located(here):
    path = write(here, """
        [services.web]
        cmd = "python app.py"
        port = = 8000
    """)
    line = one_problem(path)
    assert line.startswith("Stackfile.toml:3:7: invalid TOML: ")
    assert "Unexpected character" in line
    assert " at line " not in line  # the location is said once, in front


def test_duplicate_key_is_located(here):
    path = write(here, """
        [services.web]
        cmd = "python app.py"
        port = 8000
        port = 8001
    """)
    assert one_problem(path) == 'Stackfile.toml:4:1: invalid TOML: Key "port" already exists.'


def test_duplicate_key_in_inline_table_is_located(here):
    path = write(here, """
        [services.web]
        cmd = "python app.py"
        env = { A = "1", A = "2" }
    """)
    assert one_problem(path) == 'Stackfile.toml:3:18: invalid TOML: Key "A" already exists.'


def test_absolute_path_outside_cwd_is_shown_whole(tmp_path, monkeypatch):
    elsewhere = tmp_path / "project"
    elsewhere.mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    path = write(elsewhere, '[services.web]\ncmd = ""\n')
    assert one_problem(path) == f"{path}:2:1: services.web.cmd: must not be empty"


# -- types and keys -----------------------------------------------------------------------------

def test_wrong_types(here):
    path = write(here, """
        [stack]
        host = 1

        [services.web]
        cmd = "python app.py"
        port = "8000"
        autostart = "yes"
        scale = 1.5
        health = "http://localhost"
        watch = [1, 2]
    """)
    assert problems(path) == [
        "Stackfile.toml:2:1: stack.host: must be a string, not an integer",
        "Stackfile.toml:6:1: services.web.port: must be an integer, not a string",
        "Stackfile.toml:7:1: services.web.autostart: must be a boolean, not a string",
        "Stackfile.toml:8:1: services.web.scale: must be an integer, not a number",
        "Stackfile.toml:9:1: services.web.health: must be a table, not a string",
        "Stackfile.toml:10:10: services.web.watch: entries must be strings, not an integer: use [\"1\"]",
    ]


def test_boolean_is_not_a_number(here):
    path = write(here, """
        [services.web]
        cmd = "x"
        port = true
    """)
    assert one_problem(path) == "Stackfile.toml:3:1: services.web.port: must be an integer, not a boolean"


def test_non_finite_numbers_are_rejected(here):
    path = write(here, """
        [services.web]
        cmd = "x"
        stop_timeout = inf
        health = { tcp = "localhost:1", interval = nan }
    """)
    assert problems(path) == [
        "Stackfile.toml:3:1: services.web.stop_timeout: must be a finite number, not inf",
        "Stackfile.toml:4:33: services.web.health.interval: must be a finite number, not nan",
    ]


def test_unknown_keys_with_did_you_mean(here):
    path = write(here, """
        [stack]
        stategy = "aggressive"

        [services.web]
        cmd = "python app.py"
        restrat = "no"
        health = { tcp = "localhost:1", intervall = 2 }
        colour = true

        [servics.x]
        a = 1
    """)
    assert problems(path) == [
        'Stackfile.toml:2:1: stack.stategy: unknown key "stategy" (did you mean "strategy"?)',
        'Stackfile.toml:6:1: services.web.restrat: unknown key "restrat" (did you mean "restart"?)',
        'Stackfile.toml:7:33: services.web.health.intervall: unknown key "intervall" (did you mean "interval"?)',
        'Stackfile.toml:8:1: services.web.colour: unknown key "colour"',
        'Stackfile.toml:10:1: servics: unknown key "servics" (did you mean "services"?)',
    ]


def test_bad_enum_values(here):
    path = write(here, """
        [stack]
        strategy = "agressive"

        [services.web]
        cmd = "x"
        restart = "allways"
        stop_signal = "SIGFOO"
    """)
    found = problems(path)
    assert found[0] == ('Stackfile.toml:2:1: stack.strategy: must be conservative, intelligent or aggressive, '
                        'not "agressive" (did you mean "aggressive"?)')
    assert found[1] == ('Stackfile.toml:6:1: services.web.restart: must be no, on-failure or always, '
                        'not "allways" (did you mean "always"?)')
    assert found[2].startswith('Stackfile.toml:7:1: services.web.stop_signal: unknown signal "SIGFOO"')
    assert len(found) == 3


def test_stop_signal_is_normalised(here):
    path = write(here, """
        [services.web]
        cmd = "x"
        stop_signal = "int"
    """)
    svc = stackfile.load(path, environ={}).services["web"]
    assert svc.stop_signal == "SIGINT"
    import signal
    assert svc.signal_number == signal.SIGINT


# -- commands and names -------------------------------------------------------------------------

@pytest.mark.parametrize("cmd, message", [
    ('""', "services.web.cmd: must not be empty"),
    ('"   "', "services.web.cmd: must not be empty"),
    ("[]", "services.web.cmd: must be a non-empty string or a non-empty array of strings"),
    ('["", "app.py"]', "services.web.cmd: the program (first element) must not be empty"),
    ('["python", 1]', "services.web.cmd: must be a non-empty string or a non-empty array of strings"),
    ("3", "services.web.cmd: must be a string or an array of strings, not an integer"),
])
def test_empty_or_wrong_cmd(here, cmd, message):
    path = write(here, f"[services.web]\ncmd = {cmd}\n")
    assert one_problem(path) == f"Stackfile.toml:2:1: {message}"


def test_missing_cmd(here):
    path = write(here, '[services.web]\nport = 8000\n')
    assert one_problem(path) == 'Stackfile.toml:1:1: services.web: missing required key "cmd"'


def test_no_services(here):
    path = write(here, '[stack]\nname = "x"\n')
    assert one_problem(path) == "Stackfile.toml: no services: add a [services.NAME] table with a cmd"


@pytest.mark.parametrize("name", ["bad name", "_private", "-dash", "dot.ted", "é"])
def test_bad_service_names(here, name):
    path = write(here, f'[services."{name}"]\ncmd = "x"\n')
    line = one_problem(path)
    assert line.startswith(f'Stackfile.toml:1:1: services.{name}: invalid service name "{name}"')
    assert 'use letters, digits, "_" and "-"' in line


@pytest.mark.parametrize("name", ["web", "Web2", "9lives", "my-api", "my_api"])
def test_good_service_names(here, name):
    path = write(here, f'[services."{name}"]\ncmd = "x"\n')
    assert list(stackfile.load(path, environ={}).services) == [name]


def test_service_that_is_not_a_table(here):
    path = write(here, 'services = { web = "python app.py" }\n')
    assert one_problem(path) == "Stackfile.toml:1:14: services.web: must be a table, not a string"


# -- ports --------------------------------------------------------------------------------------

@pytest.mark.parametrize("port", [-1, 65536, 70000])
def test_port_outside_range(here, port):
    path = write(here, f'[services.web]\ncmd = "x"\nport = {port}\n')
    assert one_problem(path) == f"Stackfile.toml:3:1: services.web.port: {port} is outside 0-65535"


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_port_edges_are_valid(here, port):
    path = write(here, f'[services.web]\ncmd = "x"\nport = {port}\n')
    assert stackfile.load(path, environ={}).services["web"].port == port


def test_fallback_range_backwards(here):
    path = write(here, '[services.web]\ncmd = "x"\nport = 8000\nfallback = "9000-8000"\n')
    assert one_problem(path) == ('Stackfile.toml:4:1: services.web.fallback: range "9000-8000" is empty: '
                                 '9000 is greater than 8000')


@pytest.mark.parametrize("fallback, message", [
    ('"abc"', '"abc" is not a range like "8001-8010"'),
    ('"0-10"', 'range "0-10" goes outside 1-65535'),
    ('"65000-70000"', 'range "65000-70000" goes outside 1-65535'),
    ("[8001, 70000]", "70000 is not a port between 1 and 65535"),
    ('[8001, "8002"]', "entries must be integers, not a string: use 8002"),
    ('[8001, "x"]', "'x' is not a port between 1 and 65535"),
    ("5", "must be an array of ports or a range string, not an integer"),
])
def test_bad_fallbacks(here, fallback, message):
    path = write(here, f'[services.web]\ncmd = "x"\nport = 8000\nfallback = {fallback}\n')
    line = one_problem(path)
    assert line.startswith("Stackfile.toml:4:")
    assert line.endswith(f"services.web.fallback: {message}")


def test_fallback_forms(here):
    path = write(here, """
        [services.a]
        cmd = "x"
        port = 8000
        fallback = " 8005 - 8007 "

        [services.b]
        cmd = "x"
        port = 9000
        fallback = [9100, 9005]

        [services.c]
        cmd = "x"
        port = 7000
        fallback = []

        [services.d]
        cmd = "x"
        port = 65530

        [services.e]
        cmd = "x"
        port = 0
    """)
    s = stackfile.load(path, environ={}).services
    assert s["a"].fallback == (8005, 8006, 8007)
    assert s["b"].fallback == (9100, 9005)
    assert s["c"].fallback == ()
    assert s["d"].fallback == (65531, 65532, 65533, 65534, 65535)  # never past 65535
    assert s["e"].fallback == ()


def test_same_fixed_port_declared_twice(here):
    path = write(here, """
        [services.api]
        cmd = "x"
        port = 8000

        [services.web]
        cmd = "y"
        port = 8000

        [services.any1]
        cmd = "z"
        port = 0

        [services.any2]
        cmd = "z"
        port = 0
    """)
    assert one_problem(path) == 'Stackfile.toml:7:1: services.web.port: port 8000 is already declared by service "api"'


# -- dependencies -------------------------------------------------------------------------------

def test_unknown_dependency_with_did_you_mean(here):
    path = write(here, """
        [services.backend]
        cmd = "x"

        [services.frontend]
        cmd = "y"
        depends_on = ["bakend"]
    """)
    assert one_problem(path) == ('Stackfile.toml:6:16: services.frontend.depends_on: '
                                 'unknown service "bakend" (did you mean "backend"?)')


def test_unknown_dependency_in_table_form(here):
    path = write(here, """
        [services.db]
        cmd = "x"
        port = 5432

        [services.api]
        cmd = "y"
        depends_on = { dbb = "healthy", zzz = "started" }
    """)
    assert problems(path) == [
        'Stackfile.toml:7:16: services.api.depends_on: unknown service "dbb" (did you mean "db"?)',
        'Stackfile.toml:7:33: services.api.depends_on: unknown service "zzz"',
    ]


def test_bad_conditions(here):
    path = write(here, """
        [services.db]
        cmd = "x"
        port = 5432

        [services.api]
        cmd = "y"
        depends_on = { db = "helthy" }

        [services.web]
        cmd = "y"
        depends_on = { db = [] }

        [services.job]
        cmd = "y"
        depends_on = 5
    """)
    assert problems(path) == [
        "Stackfile.toml:7:16: services.api.depends_on.db: condition must be started, healthy or completed, "
        "not 'helthy' (did you mean \"healthy\"?)",
        "Stackfile.toml:11:16: services.web.depends_on.db: condition must be started, healthy or completed, not []",
        "Stackfile.toml:15:1: services.job.depends_on: must be an array or a table, not an integer",
    ]


def test_healthy_needs_a_health_check(here):
    path = write(here, """
        [services.worker]
        cmd = "x"

        [services.api]
        cmd = "y"
        depends_on = { worker = "healthy" }
    """)
    assert one_problem(path) == ('Stackfile.toml:6:16: services.api.depends_on.worker: "worker" has no health check '
                                 '(no port and no health table), so it can never be healthy')


def test_two_service_cycle_is_named(here):
    path = write(here, """
        [services.a]
        cmd = "x"
        depends_on = ["b"]

        [services.b]
        cmd = "y"
        depends_on = ["a"]
    """)
    assert one_problem(path) == "Stackfile.toml:3:16: services.a.depends_on: dependency cycle: a -> b -> a"


def test_longer_cycle_is_named(here):
    path = write(here, """
        [services.web]
        cmd = "x"

        [services.a]
        cmd = "x"
        depends_on = { b = "started" }

        [services.b]
        cmd = "x"
        depends_on = ["c", "web"]

        [services.c]
        cmd = "x"
        depends_on = ["a"]
    """)
    line = one_problem(path)
    assert line == "Stackfile.toml:6:16: services.a.depends_on: dependency cycle: a -> b -> c -> a"


def test_self_dependency_is_a_cycle(here):
    path = write(here, '[services.a]\ncmd = "x"\ndepends_on = ["a"]\n')
    assert one_problem(path).endswith("services.a.depends_on: dependency cycle: a -> a")


# -- references ---------------------------------------------------------------------------------

def test_unknown_variable_and_service_references(here):
    path = write(here, """
        [env]
        GREETING = "hello ${NAME}"

        [services.db]
        cmd = "x"
        port = 5432

        [services.api]
        cmd = ["serve", "--db", "${dbb.port}"]
        env = { URL = "postgres://${db.host}:${db.port}/x", OTHER = "${MISSING}" }
        health = { http = "http://${host}:${port}/" }
    """)
    assert problems(path) == [
        'Stackfile.toml:2:19: env.GREETING: unknown variable "NAME" in ${NAME}',
        'Stackfile.toml:9:26: services.api.cmd: unknown service "dbb" in ${dbb.port} (did you mean "db"?)',
        'Stackfile.toml:10:62: services.api.env.OTHER: unknown variable "MISSING" in ${MISSING}',
        'Stackfile.toml:11:35: services.api.health.http: ${port}: service "api" has no port',
    ]


def test_variable_suggestion(here):
    path = write(here, """
        [env]
        DATABASE_URL = "x"

        [services.api]
        cmd = ["serve", "$DATABASE_ULR"]
    """)
    assert one_problem(path) == ('Stackfile.toml:5:18: services.api.cmd: unknown variable "DATABASE_ULR" '
                                 'in $DATABASE_ULR (did you mean "DATABASE_URL"?)')


def test_port_of_a_service_without_port(here):
    path = write(here, """
        [services.worker]
        cmd = "x"

        [services.api]
        cmd = "serve --worker ${worker.port}"
    """)
    assert one_problem(path) == 'Stackfile.toml:5:23: services.api.cmd: ${worker.port}: service "worker" has no port'


def test_own_port_in_stack_env_is_an_error(here):
    path = write(here, '[env]\nX = "${port}"\n[services.a]\ncmd = "x"\nport = 1\n')
    assert one_problem(path) == "Stackfile.toml:2:6: env.X: ${port} means the service's own port: use it in a service"


def test_shell_references_in_string_cmd_are_left_to_the_shell(here):
    path = write(here, """
        [services.db]
        cmd = "x"
        port = 5432

        [services.api]
        cmd = "echo $HOME ${UNDEFINED_AT_LOAD} $$ ${db.port}"
        health = { cmd = "test -n $SOMETHING" }
    """)
    svc = stackfile.load(path, environ={}).services["api"]
    assert svc.cmd == "echo $HOME ${UNDEFINED_AT_LOAD} $$ ${db.port}"  # raw: interpolated at plan time
    # revostack's own references are still checked in a string cmd
    write(here, '[services.api]\ncmd = "serve ${db.port}"\n')
    assert one_problem(here / "Stackfile.toml") == 'Stackfile.toml:2:14: services.api.cmd: unknown service "db" in ${db.port}'


def test_known_sources_of_variables(here):
    (here / ".env").write_text("FROM_DOTENV=1\n")
    path = write(here, """
        [env]
        A = "$FROM_ENVIRON $FROM_DOTENV"
        B = "${A} ${API_PORT} ${API_HOST} ${REVOSTACK_STACK} ${UNSET:-fallback} ${UNSET-x}"

        [services.api]
        cmd = ["serve", "${PORT}", "${LISTEN}", "${B}", "$WORKER_2_PORT"]
        port = 8000
        env = { LISTEN = "${host}:${port}" }

        [services.worker]
        cmd = "x"
        port = 9000
        scale = 2
    """)
    stack = stackfile.load(path, environ={"FROM_ENVIRON": "1"})
    assert set(stack.services) == {"api", "worker"}


def test_variable_set_later_in_the_same_table_is_an_error(here):
    path = write(here, """
        [env]
        URL = "http://x:${API_PORT_NUMBER}"
        API_PORT_NUMBER = "8000"
        AFTER = "${API_PORT_NUMBER}"

        [services.a]
        cmd = "x"
        env = { A = "${B}", B = "1", C = "${B}" }
    """)
    assert problems(path) == [
        'Stackfile.toml:2:17: env.URL: unknown variable "API_PORT_NUMBER" in ${API_PORT_NUMBER} '
        "(it is set later in the same table: a value can only use variables set before it)",
        'Stackfile.toml:8:14: services.a.env.A: unknown variable "B" in ${B} '
        "(it is set later in the same table: a value can only use variables set before it)",
    ]


def test_service_env_may_use_the_stack_env_and_extend_a_variable(here):
    path = write(here, """
        [env]
        B = "stack"

        [services.a]
        cmd = "x"
        env = { A = "${B}", B = "svc", PATH = "${PATH}:/extra" }
    """)
    stackfile.load(path, environ={"PATH": "/bin"})


# -- files the Stackfile names ------------------------------------------------------------------

def test_missing_cwd(here):
    path = write(here, '[services.web]\ncmd = "x"\ncwd = "frontend"\n')
    assert one_problem(path) == 'Stackfile.toml:3:8: services.web.cwd: folder "frontend" does not exist'


def test_cwd_is_relative_to_the_stackfile(here):
    (here / "proj" / "frontend").mkdir(parents=True)
    path = write(here / "proj", '[services.web]\ncmd = "x"\ncwd = "frontend"\n')
    stack = stackfile.load(path, environ={})
    assert stack.services["web"].cwd == here / "proj" / "frontend"
    assert stack.root == here / "proj"
    assert stackfile.load(write(here / "proj", '[services.web]\ncmd = "x"\n'), environ={}).services["web"].cwd == here / "proj"


def test_missing_env_files(here):
    path = write(here, """
        [stack]
        env_file = ["common.env", "missing.env"]

        [services.web]
        cmd = "x"
        env_file = "web.env"
    """)
    (here / "common.env").write_text("A=1\n")
    assert problems(path) == [
        'Stackfile.toml:2:28: stack.env_file: env file "missing.env" not found',
        'Stackfile.toml:6:13: services.web.env_file: env file "web.env" not found',
    ]


def test_malformed_dotenv_line_names_the_dotenv_file_and_line(here):
    (here / ".env").write_text("A=1\n# fine\nthis line is wrong\nB='open\n")
    path = write(here, '[services.web]\ncmd = "x"\n')
    assert problems(path) == [
        ".env:3:1: expected KEY=value",
        ".env:4:3: unterminated ' quote",
    ]


def test_env_files_layering(here):
    (here / ".env").write_text("A=dot\nB=dot\n")
    (here / "extra.env").write_text("B=extra\nC=extra\n")
    (here / "web.env").write_text("C=web\n")
    path = write(here, """
        [stack]
        env_file = [".env", "extra.env"]

        [services.web]
        cmd = "x"
        env_file = "web.env"
    """)
    stack = stackfile.load(path, environ={})
    assert dict(stack.dotenv) == {"A": "dot", "B": "extra", "C": "extra"}
    assert dict(stack.services["web"].dotenv) == {"C": "web"}


def test_default_env_file_only_when_present(here):
    path = write(here, '[services.web]\ncmd = "x"\n')
    assert dict(stackfile.load(path, environ={}).dotenv) == {}
    (here / ".env").write_text("export A = 'x y'\n")
    assert dict(stackfile.load(path, environ={}).dotenv) == {"A": "x y"}


def test_explicit_empty_env_file_list_skips_the_default(here):
    (here / ".env").write_text("A=1\n")
    path = write(here, '[stack]\nenv_file = []\n[services.web]\ncmd = "x"\n')
    assert dict(stackfile.load(path, environ={}).dotenv) == {}


# -- everything at once -------------------------------------------------------------------------

def test_all_problems_are_reported_at_once_in_file_order(here):
    path = write(here, """
        [services.web]
        cmd = ""
        port = 70000

        [services.api]
        cmd = "x"
        depends_on = ["wbe"]
    """)
    assert problems(path) == [
        "Stackfile.toml:2:1: services.web.cmd: must not be empty",
        "Stackfile.toml:3:1: services.web.port: 70000 is outside 0-65535",
        'Stackfile.toml:7:16: services.api.depends_on: unknown service "wbe" (did you mean "web"?)',
    ]


def test_problem_rendering():
    assert str(Problem("S.toml", "boom", 3, 4, "a.b")) == "S.toml:3:4: a.b: boom"
    assert str(Problem("S.toml", "boom", 3, None, "a.b")) == "S.toml:3:1: a.b: boom"
    assert str(Problem("S.toml", "boom")) == "S.toml: boom"
    err = ConfigError([Problem("S.toml", "one", 1, 1), Problem("S.toml", "two", 2, 1)])
    assert str(err) == "S.toml:1:1: one\nS.toml:2:1: two"
    assert err.exit_code == 2


# -- defaults -----------------------------------------------------------------------------------

def test_minimal_stackfile_defaults(here):
    path = write(here, """
        [services.db]
        cmd = "python db.py"
        port = 5432

        [services.worker]
        cmd = ["python", "worker.py"]

        [services.api]
        cmd = "python api.py"
        depends_on = ["db", "worker"]
    """)
    stack = stackfile.load(path, environ={})
    assert stack.name == here.name
    assert stack.host == "127.0.0.1"
    assert stack.strategy is Strategy.INTELLIGENT
    assert stack.stop_timeout == 10.0
    assert stack.kind == "stackfile"
    db, worker, api = stack.services["db"], stack.services["worker"], stack.services["api"]
    for svc in (db, worker, api):
        assert svc.restart is Restart.ON_FAILURE
        assert svc.max_restarts == 5
        assert svc.backoff == 0.5
        assert svc.stop_signal == "SIGTERM"
        assert svc.stop_timeout == 10.0
        assert svc.scale == 1
        assert svc.autostart is True
        assert svc.pty is False
        assert svc.port_env == "PORT"
        assert svc.cwd == here
        assert svc.watch == () and svc.watch_ignore == ()
    assert worker.cmd == ("python", "worker.py")
    assert db.fallback == tuple(range(5433, 5453))  # port+1 .. port+20
    assert db.health is not None and db.health.implicit
    assert db.health.kind is HealthKind.TCP and db.health.target == "${host}:${port}"
    assert (db.health.interval, db.health.timeout, db.health.retries, db.health.start_period) == (1.0, 2.0, 3, 60.0)
    assert worker.health is None and worker.port is None and worker.fallback == ()
    # list form: healthy where the dependency has a check, else started
    assert [(d.name, d.condition) for d in api.depends_on] == [("db", Condition.HEALTHY), ("worker", Condition.STARTED)]
    assert api.instances == ["api.1"]


def test_stack_level_defaults_apply_to_services(here):
    path = write(here, """
        [stack]
        name = "demo"
        host = "0.0.0.0"
        strategy = "conservative"
        stop_timeout = 3
        restart = "always"
        max_restarts = 2
        backoff = 1.5

        [services.a]
        cmd = "x"

        [services.b]
        cmd = "x"
        restart = "no"
        max_restarts = 0
        backoff = 0
        stop_timeout = 1.5
    """)
    stack = stackfile.load(path, environ={})
    assert (stack.name, stack.host, stack.strategy, stack.stop_timeout) == ("demo", "0.0.0.0", Strategy.CONSERVATIVE, 3.0)
    a, b = stack.services["a"], stack.services["b"]
    assert (a.restart, a.max_restarts, a.backoff, a.stop_timeout) == (Restart.ALWAYS, 2, 1.5, 3.0)
    assert (b.restart, b.max_restarts, b.backoff, b.stop_timeout) == (Restart.NO, 0, 0.0, 1.5)


def test_full_service(here):
    (here / "backend").mkdir()
    path = write(here, """
        [env]
        LOG_LEVEL = "debug"
        WORKERS = 4
        DEBUG = true
        RATIO = 0.5

        [services.db]
        cmd = "python -m fakedb --port $PORT"
        port = 5432
        health = { tcp = "${host}:${port}" }

        [services.migrate]
        cmd = "python manage.py migrate"
        depends_on = { db = "healthy" }

        [services.backend]
        cmd = "uvicorn app:app --port $PORT"
        cwd = "backend"
        port = 8000
        fallback = "8001-8010"
        port_env = "HTTP_PORT"
        env = { DATABASE_URL = "postgres://${host}:${db.port}/dev" }
        depends_on = { db = "healthy", migrate = "completed" }
        health = { http = "http://${host}:${port}/health", interval = 0.5, timeout = 1, retries = 5, start_period = 30 }
        watch = ["**/*.py"]
        watch_ignore = ["tests/**"]
        stop_signal = "SIGINT"
        scale = 3
        autostart = false
        pty = true
    """)
    stack = stackfile.load(path, environ={})
    assert dict(stack.env) == {"LOG_LEVEL": "debug", "WORKERS": "4", "DEBUG": "true", "RATIO": "0.5"}
    b = stack.services["backend"]
    assert b.cwd == here / "backend"
    assert b.fallback == tuple(range(8001, 8011))
    assert b.port_env == "HTTP_PORT"
    assert [(d.name, d.condition) for d in b.depends_on] == [("db", Condition.HEALTHY), ("migrate", Condition.COMPLETED)]
    assert b.health.kind is HealthKind.HTTP and not b.health.implicit
    assert (b.health.interval, b.health.timeout, b.health.retries, b.health.start_period) == (0.5, 1.0, 5, 30.0)
    assert b.watch == ("**/*.py",) and b.watch_ignore == ("tests/**",)
    assert b.stop_signal == "SIGINT"
    assert b.instances == ["backend.1", "backend.2", "backend.3"]
    assert b.autostart is False and b.pty is True
    assert stack.levels() == [["db"], ["migrate"], ["backend"]]


@pytest.mark.parametrize("health, message", [
    ("{ interval = 1 }", "services.web.health: needs exactly one of http, tcp, cmd, log"),
    ('{ http = "x", tcp = "y" }', "services.web.health: needs exactly one of http, tcp, cmd, log (found http, tcp)"),
    ('{ tcp = "" }', "services.web.health.tcp: must not be empty"),
    ('{ log = "([" }', "services.web.health.log: invalid regular expression"),
    ('{ tcp = "x", retries = 0 }', "services.web.health.retries: must be at least 1, not 0"),
    ('{ tcp = "x", timeout = 0 }', "services.web.health.timeout: must be greater than 0"),
    ('{ tcp = "x", start_period = -1 }', "services.web.health.start_period: must be at least 0, not -1"),
])
def test_bad_health(here, health, message):
    path = write(here, f'[services.web]\ncmd = "x"\nhealth = {health}\n')
    line = one_problem(path)
    assert line.startswith("Stackfile.toml:3:")
    assert message in line


def test_scale_must_be_positive(here):
    path = write(here, '[services.web]\ncmd = "x"\nscale = 0\n')
    assert one_problem(path) == "Stackfile.toml:3:1: services.web.scale: must be at least 1, not 0"


def test_env_values_must_be_scalars_with_valid_names(here):
    path = write(here, """
        [env]
        LIST = [1]
        "1BAD" = "x"

        [services.web]
        cmd = "x"
        port_env = "HTTP PORT"
    """)
    assert problems(path) == [
        "Stackfile.toml:2:1: env.LIST: must be a string, number or boolean, not an array",
        "Stackfile.toml:3:1: env.1BAD: invalid variable name '1BAD'",
        "Stackfile.toml:7:1: services.web.port_env: invalid variable name 'HTTP PORT'",
    ]


def test_dotted_keys_and_multiline_arrays_are_located(here):
    path = write(here, """
        services.web.cmd = "x"
        services.web.watch = [
            "a",
            "b",
        ]
        services.web.port = "8000"
    """)
    assert one_problem(path) == "Stackfile.toml:6:1: services.web.port: must be an integer, not a string"


# -- Stack helpers ------------------------------------------------------------------------------

def test_stack_id_selection_and_levels(here):
    path = write(here, """
        [services.db]
        cmd = "x"
        port = 5432

        [services.api]
        cmd = "x"
        depends_on = ["db"]

        [services.admin]
        cmd = "x"
        depends_on = ["api"]
        autostart = false

        [services.docs]
        cmd = "x"
    """)
    stack = stackfile.load(path, environ={})
    assert stack.id == stackfile.load(path, environ={}).id
    assert stack.id.startswith(f"{here.name}-") and len(stack.id) == len(here.name) + 9
    assert stack.selection() == {"db", "api", "docs"}
    assert stack.selection(["admin"]) == {"admin", "api", "db"}
    assert stack.levels() == [["db", "docs"], ["api"], ["admin"]]
    assert stack.levels({"api", "docs"}) == [["api", "docs"]]
    with pytest.raises(ConfigError) as info:
        stack.selection(["ap", "db"])
    assert str(info.value) == f'{path}: unknown service "ap" (did you mean "api"?)'


def test_env_prefix():
    assert stackfile.env_prefix("my-api.2") == "MY_API_2"
    assert stackfile.env_prefix("db") == "DB"


def test_loads_without_a_file(tmp_path):
    stack = stackfile.loads('[services.web]\ncmd = "x"\n', tmp_path / "Stackfile.toml", environ={})
    assert stack.path == tmp_path / "Stackfile.toml"
    assert list(stack.services) == ["web"]


# -- docs/stackfile.md stays true ---------------------------------------------------------------

def doc_block(heading: str, lang: str) -> str:
    """The first ```lang block after ``heading`` in docs/stackfile.md."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "stackfile.md").read_text()
    after = text[text.index(heading):]
    start = after.index(f"```{lang}\n") + len(lang) + 4
    return after[start:after.index("```", start)]


def test_the_documented_complete_example_loads(here):
    (here / "backend").mkdir()
    (here / "frontend").mkdir()
    (here / ".env").write_text("SECRET_KEY=x\n")
    path = write(here, doc_block("## A complete example", "toml"))
    stack = stackfile.load(path, environ={})
    assert stack.name == "revoagent"
    assert stack.levels() == [["db"], ["migrate"], ["backend"], ["frontend"]]
    fe = stack.services["frontend"]
    assert [(d.name, d.condition) for d in fe.depends_on] == [("backend", Condition.HEALTHY)]
    assert fe.instances == ["frontend.1", "frontend.2"] and fe.cmd[-1] == "${port}"
    assert stack.services["backend"].stop_signal == "SIGINT"
    assert stack.services["db"].health.kind is HealthKind.TCP and not stack.services["db"].health.implicit


def test_the_documented_interpolation_example_loads(here):
    snippet = doc_block("## Interpolation", "toml")
    path = write(here, '[env]\nLOG_LEVEL = ""\n[services.db]\ncmd = "db"\nport = 5432\n' + snippet + "port = 8000\n")
    from revostack import plan

    class Free:
        def is_free(self, port):
            return port not in (5432, 8000)

        def holder(self, port):
            return None

    stack = stackfile.load(path, environ={})
    names = set(stack.services)
    api = plan.build(stack, names, plan.plan_ports(stack, names, Free()), {}).by_name()["api.1"]
    assert api.cmd == "serve --port 8001 --db 5433 --home $HOME"
    assert api.env["DATABASE_URL"] == "postgres://127.0.0.1:5433/dev"
    assert api.env["LEVEL"] == "info"


def test_the_documented_dotenv_example_parses():
    from revostack import dotenv

    values = dotenv.parse(doc_block("## `.env` files", "sh"))
    assert values == {
        "DATABASE_USER": "app",
        "PASSWORD": "s3cr3t",
        "EMPTY": "",
        "LITERAL": "no $expansion \\n here",
        "GREETING": 'Hello\n"world"',
        "CERT": "-----BEGIN-----\nabc\n-----END-----",
    }


# -- handoff -------------------------------------------------------------------------------------

def test_handoff_keys_and_defaults(here):
    write(here, """
        [stack]
        handoff = "proxy"

        [services.web]
        cmd = "serve"
        port = 8000

        [services.sock]
        cmd = "serve"
        port = 8100
        handoff = "socket"
        drain_timeout = 2.5
        health = { log = "ready" }

        [services.job]
        cmd = "work"
        """)
    s = stackfile.load(here / "Stackfile.toml", environ={})
    assert s.services["web"].handoff is stackfile.Handoff.PROXY  # the stack's default
    assert s.services["web"].drain_timeout == 10.0
    assert s.services["sock"].handoff is stackfile.Handoff.SOCKET and s.services["sock"].drain_timeout == 2.5
    assert s.services["job"].handoff is stackfile.Handoff.NONE  # no port: the default does not apply


@pytest.mark.parametrize("lines,expected", [
    ('cmd = "x"\nhandoff = "proxy"', 'Stackfile.toml:3:1: services.web.handoff: "proxy" needs a port: add port = N'),
    ('cmd = "x"\nport = 0\nhandoff = "socket"\nhealth = { log = "r" }',
     'Stackfile.toml:4:1: services.web.handoff: "socket" needs a fixed port, not 0'),
    ('cmd = "x"\nport = 8000\nhandoff = "proxi"',
     'Stackfile.toml:4:1: services.web.handoff: must be none, proxy or socket, not "proxi" (did you mean "proxy"?)'),
    ('cmd = "x"\nport = 8000\nhandoff = true', "Stackfile.toml:4:1: services.web.handoff: must be a string, not a boolean"),
    ('cmd = "x"\nport = 8000\nhandoff = "proxy"\ndrain_timeout = "5s"',
     "Stackfile.toml:5:1: services.web.drain_timeout: must be a number, not a string"),
    ('cmd = "x"\nport = 8000\nhandoff = "proxy"\ndrain_timeout = -1',
     "Stackfile.toml:5:1: services.web.drain_timeout: must be at least 0, not -1"),
    ('cmd = "x"\nport = 8000\nhandof = "proxy"',
     'Stackfile.toml:4:1: services.web.handof: unknown key "handof" (did you mean "handoff"?)'),
])
def test_handoff_errors_are_located(here, lines, expected):
    (here / "Stackfile.toml").write_text("[services.web]\n" + lines + "\n")
    found = one_problem(Path("Stackfile.toml"))
    assert found.startswith(expected), found


@pytest.mark.parametrize("health,where", [
    (None, "4:1: services.web.handoff"),  # the implicit TCP check on the port
    ('{ tcp = "${host}:${port}" }', "5:1: services.web.health"),
    ('{ http = "http://127.0.0.1:$PORT/health" }', "5:1: services.web.health"),
    ('{ http = "http://127.0.0.1:8000/" }', "5:1: services.web.health"),
])
def test_a_socket_service_needs_a_check_of_its_own(here, health, where):
    text = '[services.web]\ncmd = "x"\nport = 8000\nhandoff = "socket"\n'
    if health:
        text += f"health = {health}\n"
    (here / "Stackfile.toml").write_text(text)
    found = one_problem(Path("Stackfile.toml"))
    assert found.startswith(f"Stackfile.toml:{where}: "), found
    assert "passes whatever generation answers" in found and 'health = { log = "..." }' in found


def test_a_socket_service_may_check_another_port_or_a_command(here):
    (here / "Stackfile.toml").write_text('[services.db]\ncmd = "x"\nport = 5000\n[services.web]\ncmd = "x"\n'
                                         'port = 8000\nhandoff = "socket"\nhealth = { tcp = "${host}:${db.port}" }\n'
                                         '[services.api]\ncmd = "x"\nport = 8100\nhandoff = "socket"\n'
                                         'health = { cmd = "test -e ready" }\n')
    s = stackfile.load(here / "Stackfile.toml", environ={})
    assert s.services["web"].handoff is stackfile.Handoff.SOCKET

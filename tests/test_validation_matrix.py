"""Every key of the Stackfile against the three classes of mistake: a wrong type, a misspelt
name, a bad interpolation. Each must give exactly one located problem (FILE:LINE:COL) with the
expected words, and never be accepted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import cli
from revostack import stackfile
from revostack.errors import ConfigError
from revostack.stackfile import HEALTH_KEYS, SERVICE_KEYS, STACK_KEYS

LOCATED = re.compile(r"^Stackfile\.toml:(\d+):(\d+): ")
BASE = '[services.web]\ncmd = "serve"\nport = 8000\n'


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "Stackfile.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        stackfile.load(path, environ={})
    return [str(p) for p in info.value.problems]


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


SERVICE_WRONG = {
    "cmd": ("3", "must be a string or an array of strings, not an integer"),
    "cwd": ("3", "must be a string, not an integer"),
    "env": ('"A=1"', "must be a table, not a string"),
    "env_file": ("3", "must be a string or an array of strings, not an integer"),
    "port": ('"8000"', "must be an integer, not a string"),
    "fallback": ("5", "must be an array of ports or a range string, not an integer"),
    "port_env": ("5", "must be a string, not an integer"),
    "depends_on": ("5", "must be an array or a table, not an integer"),
    "health": ('"http://x"', "must be a table, not a string"),
    "restart": ("1", "must be a string, not an integer"),
    "max_restarts": ('"5"', "must be an integer, not a string"),
    "backoff": ('"1s"', "must be a number, not a string"),
    "watch": ('"**/*.py"', 'must be an array of strings, not a string: use ["**/*.py"]'),
    "watch_ignore": ("3", "must be an array of strings, not an integer"),
    "stop_signal": ("15", "must be a string, not an integer"),
    "stop_timeout": ('"10s"', "must be a number, not a string"),
    "scale": ('"2"', "must be an integer, not a string"),
    "autostart": ('"yes"', "must be a boolean, not a string"),
    "pty": ("1", "must be a boolean, not an integer"),
    "handoff": ("true", "must be a string, not a boolean"),
    "drain_timeout": ('"5s"', "must be a number, not a string"),
    "image": ("3", "must be a string, not an integer"),
    "container_port": ('"80"', "must be an integer, not a string"),
    "volumes": ('"./x:/y"', 'must be an array of strings, not a string: use ["./x:/y"]'),
    "pull": ("true", "must be a string, not a boolean"),
}
CONTAINER_ONLY = {"container_port", "volumes", "pull"}  # checked on a service with an image
STACK_WRONG = {
    "name": ("1", "must be a string, not an integer"),
    "env_file": ("3", "must be a string or an array of strings, not an integer"),
    "host": ("1", "must be a string, not an integer"),
    "strategy": ("1", "must be a string, not an integer"),
    "stop_timeout": ('"x"', "must be a number, not a string"),
    "restart": ("1", "must be a string, not an integer"),
    "max_restarts": ('"x"', "must be an integer, not a string"),
    "backoff": ('"x"', "must be a number, not a string"),
    "handoff": ("1", "must be a string, not an integer"),
}
HEALTH_WRONG = {
    "http": ("1", "must be a string, not an integer"),
    "tcp": ("1", "must be a string, not an integer"),
    "cmd": ("1", "must be a string, not an integer"),
    "log": ("1", "must be a string, not an integer"),
    "interval": ('"1s"', "must be a number, not a string"),
    "timeout": ('"1s"', "must be a number, not a string"),
    "retries": ("1.5", "must be an integer, not a number"),
    "start_period": ('"30s"', "must be a number, not a string"),
}


def test_every_key_is_covered():
    assert set(SERVICE_WRONG) == SERVICE_KEYS
    assert set(STACK_WRONG) == STACK_KEYS
    assert set(HEALTH_WRONG) == HEALTH_KEYS


@pytest.mark.parametrize("key", sorted(SERVICE_WRONG))
def test_wrong_type_service_key(here, key):
    value, message = SERVICE_WRONG[key]
    base = BASE.replace(f"{key} = ", "#") if key in ("cmd", "port") else BASE
    if key in CONTAINER_ONLY:
        base += 'image = "busybox"\n'
    found = problems_of(here, base + f"{key} = {value}\n")
    assert len(found) == 1, found
    assert LOCATED.match(found[0]) and f"services.web.{key}: {message}" in found[0], found


@pytest.mark.parametrize("key", sorted(STACK_WRONG))
def test_wrong_type_stack_key(here, key):
    value, message = STACK_WRONG[key]
    found = problems_of(here, f"[stack]\n{key} = {value}\n" + BASE)
    assert found == [f"Stackfile.toml:2:1: stack.{key}: {message}"]


@pytest.mark.parametrize("key", sorted(HEALTH_WRONG))
def test_wrong_type_health_key(here, key):
    value, message = HEALTH_WRONG[key]
    kind = "" if key in ("http", "tcp", "cmd", "log") else 'log = "ready", '
    found = problems_of(here, BASE + f"health = {{ {kind}{key} = {value} }}\n")
    assert len(found) == 1, found
    assert LOCATED.match(found[0]) and f"services.web.health.{key}: {message}" in found[0], found


@pytest.mark.parametrize("text, where", [
    ('env = "x"\n' + BASE, "env: must be a table, not a string"),
    ("services = 1\n", "services: must be a table, not an integer"),
    ("stack = 1\n" + BASE, "stack: must be a table, not an integer"),
    (BASE + 'env = { A = [1] }\n', "services.web.env.A: must be a string, number or boolean, not an array"),
])
def test_wrong_type_tables(here, text, where):
    found = problems_of(here, text)
    assert len(found) == 1 and LOCATED.match(found[0]) and found[0].endswith(where), found


def _misspell(key: str) -> str:
    """One typo: two letters swapped (or the last one dropped, for a key of two letters)."""
    if len(key) < 3:
        return key[:-1] + "x"
    i = len(key) // 2
    swapped = key[:i - 1] + key[i] + key[i - 1] + key[i + 1:]
    return swapped if swapped != key else key[:-1]


@pytest.mark.parametrize("key", sorted(SERVICE_KEYS))
def test_misspelt_service_key(here, key):
    bad = _misspell(key)
    found = problems_of(here, BASE + f'{bad} = "x"\n')
    assert any(LOCATED.match(f) and f'unknown key "{bad}" (did you mean "{key}"?)' in f for f in found), found


@pytest.mark.parametrize("key", sorted(STACK_KEYS))
def test_misspelt_stack_key(here, key):
    bad = _misspell(key)
    found = problems_of(here, f'[stack]\n{bad} = "x"\n' + BASE)
    assert found == [f'Stackfile.toml:2:1: stack.{bad}: unknown key "{bad}" (did you mean "{key}"?)'], found


@pytest.mark.parametrize("key", sorted(HEALTH_KEYS - {"http", "tcp", "cmd", "log"}))
def test_misspelt_health_key(here, key):
    bad = _misspell(key)
    found = problems_of(here, BASE + f'health = {{ log = "x", {bad} = 1 }}\n')
    assert any(LOCATED.match(f) and f'unknown key "{bad}" (did you mean "{key}"?)' in f for f in found), found


@pytest.mark.parametrize("table, want", [("servics", "services"), ("stak", "stack"), ("evn", "env")])
def test_misspelt_table(here, table, want):
    found = problems_of(here, f"[{table}]\nx = 1\n" + BASE)
    assert any(f.startswith("Stackfile.toml:1:") and f'(did you mean "{want}"?)' in f for f in found), found


@pytest.mark.parametrize("condition", ["healty", "complete", "start"])
def test_misspelt_condition(here, condition):
    found = problems_of(here, BASE + f'[services.b]\ncmd = "x"\ndepends_on = {{ web = "{condition}" }}\n')
    assert len(found) == 1 and LOCATED.match(found[0]) and "did you mean" in found[0], found


@pytest.mark.parametrize("form", ['["wbe"]', '{ wbe = "started" }', '["we"]'])
def test_unknown_dependency_suggests_in_both_forms(here, form):
    found = problems_of(here, BASE + f'[services.b]\ncmd = "x"\ndepends_on = {form}\n')
    assert len(found) == 1 and LOCATED.match(found[0]) and '(did you mean "web"?)' in found[0], found


def test_short_names_get_a_suggestion_too(here):
    found = problems_of(here, '[services.db]\ncmd = "x"\nport = 5432\n[services.b]\ncmd = "x"\ndepends_on = ["bd"]\n')
    assert found == ['Stackfile.toml:6:16: services.b.depends_on: unknown service "bd" (did you mean "db"?)']


@pytest.mark.parametrize("line, key, words", [
    ('cmd = "serve --port ${port"', "cmd", 'unterminated "${port"'),
    ('cmd = ["serve", "${port"]', "cmd", 'unterminated "${port"'),
    ('cmd = ["serve", "${web.prt}"]', "cmd", 'a service has only .port and .host, not ".prt"'),
    ('cmd = ["serve", "${}"]', "cmd", "${} is empty"),
    ('env = { URL = "http://${host}:${port/api" }', "env.URL", 'unterminated "${port/api"'),
    ('env = { URL = "http://${hots}:1" }', "env.URL", 'unknown variable "hots"'),
    ('env = { URL = "${#x}" }', "env.URL", "${#x} is not a reference"),
    ('health = { http = "http://${host}:${port/health" }', "health.http", 'unterminated "${port/health"'),
    ('health = { tcp = "${host}:${prot}" }', "health.tcp", 'unknown variable "prot"'),
    ('health = { tcp = "${host}:${web.pt}" }', "health.tcp", 'not ".pt"'),
    ('health = { cmd = "curl localhost:${port" }', "health.cmd", 'unterminated "${port"'),
])
def test_bad_interpolation_is_located(here, line, key, words):
    base = BASE.replace('cmd = "serve"\n', "") if line.startswith("cmd") else BASE
    found = problems_of(here, base + line + "\n")
    assert len(found) == 1, found
    m = LOCATED.match(found[0])
    assert m and int(m.group(2)) > 1 and f"services.web.{key}: " in found[0] and words in found[0], found


def test_bad_interpolation_in_stack_env(here):
    found = problems_of(here, '[env]\nA = "x ${web.port"\n' + BASE)
    assert found == ['Stackfile.toml:2:8: env.A: unterminated "${web.port": "${" without its closing "}"']


def test_shell_forms_stay_allowed_in_a_string_cmd(here):
    path = here / "Stackfile.toml"
    path.write_text('[services.web]\ncmd = "echo ${HOME#/} ${X:=1} $$"\n')
    assert stackfile.load(path, environ={}).services["web"].cmd.startswith("echo")


@pytest.mark.parametrize("text", [
    BASE + 'watch = "**/*.py"\n',
    BASE + 'health = { http = "http://${host}:${port/health" }\n',
    BASE + '[services.b]\ncmd = "x"\ndepends_on = ["wbe"]\n',
    BASE + 'handoff = "socket"\n',
])
def test_the_command_line_says_it_in_one_line_and_exits_2(tmp_path, text):
    (tmp_path / "Stackfile.toml").write_text(text)
    r = cli("check", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and LOCATED.match(lines[0]), r.stderr

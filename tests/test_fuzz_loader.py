"""Whatever the bytes, the loader either returns a Stack or raises ConfigError (one line per
problem, each naming the file) — never another exception type."""

from __future__ import annotations

import os

import pytest
import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from revostack import stackfile
from revostack.errors import ConfigError
from revostack.stackfile import Stack

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(call, display: str) -> None:
    try:
        result = call()
    except ConfigError as e:
        assert e.problems
        shown = (display, os.path.relpath(display))  # absolute, or relative when under the cwd
        lines = str(e).split("\n")
        assert len(lines) == len(e.problems)  # one line per problem, whatever the input held
        for line in lines:
            assert line.startswith(shown), line
        return
    assert isinstance(result, Stack)


@SETTINGS
@given(data=st.binary(max_size=400))
def test_random_bytes(tmp_path_factory, data):
    folder = tmp_path_factory.getbasetemp() / "fuzz-bytes"
    folder.mkdir(exist_ok=True)
    path = folder / "Stackfile.toml"
    path.write_bytes(data)
    check(lambda: stackfile.load(path, environ={}), str(path))


@SETTINGS
@given(text=st.text(max_size=300))
def test_random_text(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "Stackfile.toml"
    check(lambda: stackfile.loads(text, path, environ={}), str(path))


# -- TOML-ish documents: real keys and plausible values, in random shapes --------------------------

HEADERS = st.sampled_from([
    "[stack]", "[env]", "[services.web]", "[services.db]", "[services.db.health]", "[services.web.env]",
    "[services.web.depends_on]", "[[services]]", '[services."x y"]', "[services.a.b.c]",
])
KEYS = st.sampled_from(sorted(stackfile.SERVICE_KEYS | stackfile.STACK_KEYS | stackfile.HEALTH_KEYS
                              | {"db", "web", "X", "a.b", '"quoted key"', "stack", "services"}))
VALUES = st.sampled_from([
    '"x"', '""', '"   "', "5432", "0", "-1", "70000", "1.5", "nan", "inf", "true", "[]", "{}", "[[1]]",
    '"9000-8000"', '"8001-8003"', '"1-70000"', "[1, 2]", '["db"]', '["web", "db"]', '{ db = "healthy" }',
    '{ web = "completed" }', '{ db = [] }', '{ tcp = "${host}:${port}" }', '{ http = "x", tcp = "y" }',
    '{ log = "([" }', '"${nope}"', '"$X"', '"${db.port}"', '"${web.host}"', '"$$"', '"${V:-d}"', '"${port}"',
    '"SIGINT"', '"SIGNOPE"', '"."', '".env"', '"missing.env"', '"/"', '"\\u0000"', "1979-05-27T07:32:00Z",
    '"""multi\nline"""', "'literal'", '["python", "-c", "print(1)"]',
])
LINES = st.one_of(HEADERS, st.builds(lambda k, v: f"{k} = {v}", KEYS, VALUES), st.text(max_size=12))


@SETTINGS
@given(lines=st.lists(LINES, max_size=16))
def test_tomlish_lines(tmp_path_factory, lines):
    path = tmp_path_factory.getbasetemp() / "Stackfile.toml"
    check(lambda: stackfile.loads("\n".join(lines), path, environ={"X": "1"}), str(path))


SCALARS = st.one_of(
    st.integers(-10, 70000), st.floats(), st.booleans(), st.text(max_size=10),
    st.sampled_from(["healthy", "started", "completed", "no", "always", "8001-8005", "${db.port}", "$X",
                     "${host}:${port}", "SIGINT", "aggressive"]),
)
PLAIN_KEYS = KEYS.map(lambda k: k.strip('"'))


def tables(keys, values, max_size):
    # lists of pairs rather than st.dictionaries: no unique-key rejection, so generation stays fast
    return st.lists(st.tuples(keys, values), max_size=max_size).map(dict)


# two levels deep is enough to reach every branch of the loader, and much cheaper to draw than st.recursive
VALUE_TREES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    tables(PLAIN_KEYS, SCALARS, 3),
    st.lists(tables(PLAIN_KEYS, SCALARS, 2), max_size=2),
)
DOCUMENTS = st.fixed_dictionaries({}, optional={
    "stack": tables(st.sampled_from(sorted(stackfile.STACK_KEYS)), VALUE_TREES, 4),
    "env": tables(st.sampled_from(["X", "Y", "bad key", "1A"]), VALUE_TREES, 3),
    "services": tables(
        st.sampled_from(["db", "web", "a", "b c", ""]),
        tables(st.sampled_from(sorted(stackfile.SERVICE_KEYS)), VALUE_TREES, 6),
        3,
    ),
})


@SETTINGS
@given(doc=DOCUMENTS)
def test_structured_documents(tmp_path_factory, doc):
    try:
        text = tomlkit.dumps(doc)
    except Exception:  # not representable as TOML (e.g. mixed arrays in old tomlkit): nothing to load
        return
    path = tmp_path_factory.getbasetemp() / "Stackfile.toml"
    check(lambda: stackfile.loads(text, path, environ={}), str(path))


@pytest.mark.parametrize("text", [
    '[services.a]\ncmd = "x"\ndepends_on = { b = [] }\n[services.b]\ncmd = "y"\n',
    '[services.a]\ncmd = "x"\ndepends_on = { b = {} }\n',
    '[services.a]\ncmd = "x"\nbackoff = nan\n',
    '[services.a]\ncmd = "x"\nenv = { A = 1, A = 2 }\n',
    '[services.a]\ncmd = "x"\n' + "x = " + "[" * 2000 + "]" * 2000 + "\n",
], ids=["condition-list", "condition-table", "nan", "duplicate-inline-key", "deep-nesting"])
def test_known_crashers_are_config_errors(tmp_path, text):
    """Inputs that once raised something else (or were silently accepted)."""
    with pytest.raises(ConfigError):
        stackfile.loads(text, tmp_path / "Stackfile.toml", environ={})

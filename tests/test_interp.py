"""Interpolation: ``$VAR``, ``${VAR}``, ``${port}``, ``${host}``, ``${NAME.port}``, ``${NAME.host}``,
``$$``, ``${VAR:-default}``, and the shell mode of a string cmd."""

from __future__ import annotations

import textwrap

from revostack import interp, plan, stackfile
from revostack.interp import Ref

ENV = {"HOME": "/home/me", "EMPTY": "", "NAME": "world"}
PORTS = {"": "8000", "db": "5432"}


def resolve(ref: Ref) -> str | None:
    """A resolver like the planner's: the service's own port is 8000, db's 5432, the host 127.0.0.1."""
    if ref.is_stack_ref:
        if ref.attr == "host":
            return "127.0.0.1" if ref.service in ("", "db") else None
        return PORTS.get(ref.service or "")
    if ref.var in ENV:
        return ENV[ref.var]
    return ref.default


def test_references_are_parsed():
    refs = interp.references("a $HOME ${NAME} ${port} ${host} ${db.port} ${my-api.host} ${X:-d} ${Y-e} $$ $1")
    assert [(r.text, r.var, r.default, r.service, r.attr, r.braced) for r in refs] == [
        ("$HOME", "HOME", None, None, None, False),
        ("${NAME}", "NAME", None, None, None, True),
        ("${port}", None, None, "", "port", True),
        ("${host}", None, None, "", "host", True),
        ("${db.port}", None, None, "db", "port", True),
        ("${my-api.host}", None, None, "my-api", "host", True),
        ("${X:-d}", "X", "d", None, None, True),
        ("${Y-e}", "Y", "e", None, None, True),
    ]
    assert [r.start for r in refs][:2] == [2, 8]
    assert [r.is_stack_ref for r in refs] == [False, False, True, True, True, True, False, False]


def test_dollar_var():
    assert interp.expand("hi $NAME!", resolve) == "hi world!"
    assert interp.expand("$HOME/bin", resolve) == "/home/me/bin"
    assert interp.expand("$NAMEs", resolve) == "$NAMEs"  # the name is NAMEs: unknown, left as written


def test_braced_var():
    assert interp.expand("hi ${NAME}s", resolve) == "hi worlds"


def test_own_port_and_host():
    assert interp.expand("http://${host}:${port}/health", resolve) == "http://127.0.0.1:8000/health"


def test_other_service_port_and_host():
    assert interp.expand("postgres://${db.host}:${db.port}/dev", resolve) == "postgres://127.0.0.1:5432/dev"


def test_double_dollar_is_a_literal_dollar():
    assert interp.expand("cost: $$5 and $${NAME}", resolve) == "cost: $5 and ${NAME}"


def test_default_when_unset():
    assert interp.expand("${MISSING:-fallback}", resolve) == "fallback"
    assert interp.expand("${MISSING-fallback}", resolve) == "fallback"
    assert interp.expand("${NAME:-fallback}", resolve) == "world"
    assert interp.expand("${MISSING:-}", resolve) == ""
    assert interp.expand("${MISSING:-a b:c}", resolve) == "a b:c"


def test_unresolved_reference_is_left_as_written():
    assert interp.expand("${NOPE} $NOPE ${zz.port}", resolve) == "${NOPE} $NOPE ${zz.port}"


def test_a_lone_dollar_is_kept():
    assert interp.expand("price $ 5 $1 ${", resolve) == "price $ 5 $1 ${"


def test_shell_mode_replaces_only_revostack_references():
    text = "serve --port ${port} --db ${db.host}:${db.port} --home $HOME ${NAME} ${X:-d} $$ $(pwd)"
    assert interp.expand(text, resolve, shell=True) == (
        "serve --port 8000 --db 127.0.0.1:5432 --home $HOME ${NAME} ${X:-d} $$ $(pwd)"
    )


def test_shell_mode_leaves_an_unknown_service_reference():
    assert interp.expand("x ${zz.port}", resolve, shell=True) == "x ${zz.port}"


# -- through the planner: what each service really gets ------------------------------------------

class FreeWorld:
    def is_free(self, port):
        return True

    def holder(self, port):
        return None

    def os_port(self):
        raise AssertionError("no port 0 here")


def planned(tmp_path, text: str, environ: dict[str, str]):
    path = tmp_path / "Stackfile.toml"
    path.write_text(textwrap.dedent(text))
    stack = stackfile.load(path, environ=environ)
    names = set(stack.services)
    return plan.build(stack, names, plan.plan_ports(stack, names, FreeWorld()), environ).by_name()


def test_string_cmd_array_cmd_env_and_health(tmp_path):
    by = planned(tmp_path, """
        [stack]
        host = "127.0.0.2"

        [env]
        GREETING = "hello $USER_NAME"
        PRICE = "$$5"
        LEVEL = "${LEVEL_IN:-info}"
        BLANK = "${EMPTY:-was empty}"
        KEPT = "${EMPTY-kept empty}"

        [services.db]
        cmd = "db --port $PORT"
        port = 5432

        [services.api]
        cmd = "api --listen ${host}:${port} --db ${db.port} --me $USER_NAME ${USER_NAME} $$HOME"
        port = 8000
        env = { DATABASE_URL = "pg://${db.host}:${db.port}/x", SELF = "${host}:${port}", EXTENDED = "${GREETING}!" }
        health = { http = "http://${host}:${port}/health?u=${USER_NAME}" }

        [services.tool]
        cmd = ["tool", "${db.port}", "$USER_NAME", "$$USER_NAME", "${PORT}", "${UNSET:-dflt}", "${DATABASE_URL:-none}"]
        port = 9000
        health = { cmd = "check ${port} $USER_NAME" }
    """, {"USER_NAME": "ann", "EMPTY": ""})
    api, tool = by["api.1"], by["tool.1"]
    assert api.cmd == "api --listen 127.0.0.2:8000 --db 5432 --me $USER_NAME ${USER_NAME} $$HOME"
    assert api.env["GREETING"] == "hello ann"
    assert api.env["PRICE"] == "$5"
    assert api.env["LEVEL"] == "info"
    assert api.env["BLANK"] == "was empty"  # ":-" takes the default when the variable is empty
    assert api.env["KEPT"] == ""  # "-" only when it is unset
    assert api.env["DATABASE_URL"] == "pg://127.0.0.2:5432/x"
    assert api.env["SELF"] == "127.0.0.2:8000"
    assert api.env["EXTENDED"] == "hello ann!"
    assert api.health.target == "http://127.0.0.2:8000/health?u=ann"
    assert tool.cmd == ("tool", "5432", "ann", "$USER_NAME", "9000", "dflt", "none")
    assert tool.health.target == "check 9000 $USER_NAME"  # a health cmd runs through the shell too


def test_implicit_tcp_check_on_a_wildcard_host_probes_localhost(tmp_path):
    by = planned(tmp_path, """
        [stack]
        host = "0.0.0.0"

        [services.web]
        cmd = "x"
        port = 8000
    """, {})
    assert by["web.1"].health.target == "127.0.0.1:8000"
    assert by["web.1"].health.implicit

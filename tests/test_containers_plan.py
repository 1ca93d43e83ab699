"""Containers without an engine: the Stackfile keys, what a container is told (plan), `check`,
and the exports (compose, Kubernetes) of container services. The engine's part is in
tests/test_containers_docker.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import cli
from revostack import stackfile
from revostack.cli import main
from revostack.errors import ConfigError
from revostack.plan import PortChoice, build

yaml = pytest.importorskip("yaml")

MIXED = """
[stack]
name = "mixed"

[services.db]
image = "postgres:16"
port = 15432
container_port = 5432
volumes = ["pgdata:/var/lib/postgresql/data", "./init:/docker-entrypoint-initdb.d:ro"]
env = { POSTGRES_PASSWORD = "dev" }

[services.api]
cmd = "python -m api --port $PORT"
port = 18000
env = { DATABASE_URL = "postgres://${db.host}:${db.port}/app" }
depends_on = { db = "healthy" }

[services.cache]
image = "redis:7"
port = 16379
container_port = 6379
scale = 2

[services.worker]
image = "busybox"
cmd = "echo api at ${api.host}:${api.port} db at $DB_HOST:$DB_PORT self ${host}:${port}; sleep 100"
port = 19000
container_port = 9000
depends_on = ["api", "cache"]
env = { API_URL = "http://${api.host}:${api.port}/", ME = "${port}" }
"""


@pytest.fixture
def mixed(tmp_path) -> Path:
    (tmp_path / "init").mkdir()
    path = tmp_path / "Stackfile.toml"
    path.write_text(MIXED)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "Stackfile.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        stackfile.load(path, environ={})
    return [str(p) for p in info.value.problems]


def test_keys_are_read(mixed):
    stack = stackfile.load(mixed, environ={})
    db = stack.services["db"]
    assert db.image == "postgres:16" and db.cmd == () and db.container_port == 5432 and db.pull.value == "missing"
    named, host = db.volumes
    assert (named.source, named.target, named.host_path, named.read_only) == ("pgdata", "/var/lib/postgresql/data",
                                                                              False, False)
    assert host.host_path and host.read_only and host.source == str((mixed.parent / "init").resolve())
    assert stack.services["worker"].container_port == 9000
    assert stack.services["api"].image is None


@pytest.mark.parametrize("body, words", [
    ('image = "x"\nport = 80\nhandoff = "socket"\n', 'handoff = "socket" cannot pass a listening socket into a container'),
    ('image = "x"\nport = 80\nvolumes = ["data"]\n', 'volume "data": use "SRC:DST" or "SRC:DST:ro"'),
    ('image = "x"\nport = 80\nvolumes = ["./missing:/data"]\n', '"./missing" does not exist'),
    ('image = "x"\nport = 80\nvolumes = ["data:relative"]\n', "must be absolute"),
    ('image = "x"\nport = 80\nvolumes = ["data:/d:rx"]\n', 'the mode must be ro or rw, not "rx" (did you mean "ro"?)'),
    ('image = "x"\nport = 80\nvolumes = ["a b:/d"]\n', "neither a path"),
    ('image = "x"\nport = 80\ncontainer_port = 70000\n', "70000 is outside 1-65535"),
    ('image = "x"\nport = 80\ncontainer_port = 0\n', "0 is outside 1-65535"),
    ('image = "x"\ncontainer_port = 80\n', "there is no port to publish it on"),
    ('image = "x"\nport = 0\n', "add container_port = N"),
    ('image = "x"\nport = 80\npull = "sometimes"\n', 'must be missing, always or never, not "sometimes"'),
    ('image = ""\n', "must be an image reference"),
    ('image = "a b"\n', "must be an image reference"),
    ('cmd = "x"\ncontainer_port = 80\n', '"container_port" is for containers: add image'),
    ('cmd = "x"\nvolumes = ["a:/b"]\n', '"volumes" is for containers'),
    ('cmd = "x"\npull = "never"\n', '"pull" is for containers'),
    ('cmd = "y"\nimgae = "x"\n', 'unknown key "imgae" (did you mean "image"?)'),
])
def test_bad_container_keys_are_located(tmp_path, monkeypatch, body, words):
    monkeypatch.chdir(tmp_path)
    found = problems(tmp_path, "[services.db]\n" + body)
    assert len(found) == 1, found
    assert found[0].startswith("Stackfile.toml:") and words in found[0], found
    line, col = found[0].split(":")[1:3]
    assert int(line) >= 1 and int(col) >= 1


def test_cli_says_one_located_line_exit_2(tmp_path):
    (tmp_path / "Stackfile.toml").write_text('[services.db]\nimage = "x"\nport = 80\nhandoff = "socket"\n')
    r = cli("check", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("Stackfile.toml:4:") and "proxy" in r.stderr


def test_what_a_container_is_told(mixed):
    stack = stackfile.load(mixed, environ={"HOME": "/home/me", "PATH": "/usr/bin"})
    ports = {"db.1": PortChoice(15432, 15432), "api.1": PortChoice(18000, 18000), "cache.1": PortChoice(16379, 16379),
             "cache.2": PortChoice(16380, 16380), "worker.1": PortChoice(19000, 19001)}
    plan = build(stack, set(stack.services), ports, {"HOME": "/home/me", "PATH": "/usr/bin"})
    by = plan.by_name()
    # a process sees the published ports on the stack's host
    api = by["api.1"]
    assert api.container is None
    assert api.env["DB_PORT"] == "15432" and api.env["DB_HOST"] == "127.0.0.1"
    assert api.env["DATABASE_URL"] == "postgres://127.0.0.1:15432/app"
    # a container: PORT inside, the others by name (containers) or through the host gateway
    w = by["worker.1"].container
    assert w.publish == 19001 and w.port == 9000
    assert w.env["PORT"] == "9000" and w.env["ME"] == "9000"
    assert w.env["DB_HOST"] == "db" and w.env["DB_PORT"] == "5432"
    assert w.env["API_HOST"] == "host.docker.internal" and w.env["API_PORT"] == "18000"
    assert w.env["CACHE_2_HOST"] == "cache-2" and w.env["CACHE_2_PORT"] == "6379"
    assert w.env["API_URL"] == "http://host.docker.internal:18000/"
    assert "api at host.docker.internal:18000" in w.cmd and "self 0.0.0.0:9000" in w.cmd
    assert "HOME" not in w.env and "PATH" not in w.env  # the image has its own
    assert "REVOSTACK_STACK" not in w.env and w.env["REVOSTACK_SERVICE"] == "worker.1"
    # its health check is the host's view: the published port
    assert by["worker.1"].health.target == "127.0.0.1:19001"
    assert by["db.1"].container.cmd == ()  # the image's own command
    assert by["db.1"].container.env["POSTGRES_PASSWORD"] == "dev"


def test_check_shows_both_sides_and_warns_about_loopback(mixed):
    r = cli("check", cwd=mixed.parent)
    assert r.returncode == 0, r.stderr
    assert "image: postgres:16 (published port 15432 -> 5432 inside)" in r.stdout
    assert "cmd: (the image's own)" in r.stdout
    assert "volume: pgdata:/var/lib/postgresql/data" in r.stdout
    assert "API_HOST=host.docker.internal" in r.stdout and "DB_HOST=db" in r.stdout
    assert "warning: worker (a container) reaches api through host.docker.internal" in r.stderr
    text = mixed.read_text().replace('name = "mixed"', 'name = "mixed"\nhost = "0.0.0.0"')
    mixed.write_text(text)
    r = cli("check", cwd=mixed.parent)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


def test_ports_json_has_container_port(mixed):
    r = cli("ports", "--json", cwd=mixed.parent)
    rows = {i["instance"]: i for i in json.loads(r.stdout)["instances"]}
    assert rows["db.1"]["container_port"] == 5432 and "container_port" not in rows["api.1"]


def test_compose_export_uses_the_image(tmp_path, mixed):
    assert main(["-f", str(mixed), "export", "compose", str(tmp_path / "c")]) == 0
    doc = yaml.safe_load((tmp_path / "c" / "compose.yaml").read_text())
    s = doc["services"]
    assert s["db"]["image"] == "postgres:16" and "command" not in s["db"] and "init" not in s["db"]
    assert s["db"]["ports"] == ["127.0.0.1:15432:5432"]
    assert {"type": "volume", "source": "pgdata", "target": "/var/lib/postgresql/data"} in s["db"]["volumes"]
    assert doc["volumes"] == {"pgdata": {}}
    assert s["api"]["environment"]["DB_PORT"] == "5432" and s["api"]["environment"]["DB_HOST"] == "db"
    assert s["api"]["environment"]["DATABASE_URL"] == "postgres://db:5432/app"
    assert s["worker"]["command"][:2] == ["/bin/sh", "-c"] and s["worker"]["environment"]["PORT"] == "9000"
    assert s["cache-2"]["ports"] == ["127.0.0.1:16380:6379"]
    # the default check runs in the image with whatever tool it has
    assert "nc " in s["db"]["healthcheck"]["test"][1] and "5432" in s["db"]["healthcheck"]["test"][1]


def test_kubernetes_export_uses_the_image(tmp_path, mixed):
    kv = pytest.importorskip("kubernetes_validate")
    assert main(["-f", str(mixed), "export", "kubernetes", str(tmp_path / "k"), "--image", "reg/app:1"]) == 0
    docs = [d for d in yaml.safe_load_all((tmp_path / "k" / "manifests.yaml").read_text()) if d]
    for d in docs:
        kv.validate(d, "1.30", strict=True)
    dep = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    svc = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    db = dep["db"]["spec"]["template"]["spec"]["containers"][0]
    assert db["image"] == "postgres:16" and "command" not in db and "workingDir" not in db
    assert db["ports"][0]["containerPort"] == 5432 and db["readinessProbe"]["tcpSocket"] == {"port": 5432}
    assert svc["db"]["spec"]["ports"][0]["port"] == 5432
    cm = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert cm["api.DB_PORT"] == "5432" and cm["api.DATABASE_URL"] == "postgres://db:5432/app"
    # a scaled service is one Deployment behind one Service: its instances' variables name it
    assert cm["worker.CACHE_2_PORT"] == "6379" and cm["worker.CACHE_2_HOST"] == "cache"
    api = dep["api"]["spec"]["template"]["spec"]
    assert api["containers"][0]["image"] == "reg/app:1"


KUBE_PORTLESS = """
[services.queue]
cmd = "python queue.py"
health = { cmd = "test -e /tmp/ready" }

[services.web]
cmd = "python web.py --port $PORT"
port = 18000
scale = 2
depends_on = { queue = "healthy" }

[services.client]
cmd = "python client.py"
env = { SECOND = "${web.port}", TWO = "$WEB_2_PORT" }
depends_on = ["web"]
"""


def test_kubernetes_waits_for_a_portless_dependency(tmp_path):
    kv = pytest.importorskip("kubernetes_validate")
    path = tmp_path / "Stackfile.toml"
    path.write_text(KUBE_PORTLESS)
    assert main(["-f", str(path), "export", "kubernetes", str(tmp_path / "k"), "--image", "reg/app:1"]) == 0
    docs = [d for d in yaml.safe_load_all((tmp_path / "k" / "manifests.yaml").read_text()) if d]
    for d in docs:
        kv.validate(d, "1.30", strict=True)
    dep = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    web = dep["web"]["spec"]["template"]["spec"]
    wait = web["initContainers"][0]["command"]
    assert "deployments/{name}" in wait[2] and wait[-1] == "queue"  # the API, not dropped
    assert web["serviceAccountName"]
    role = next(d for d in docs if d["kind"] == "Role")
    assert {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]} in role["rules"]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert cm["client.WEB_2_PORT"] == cm["client.WEB_PORT"] == "18000"  # the one Service's port
    assert cm["client.TWO"] == "18000"


def test_tcp_check_through_a_published_port_needs_the_connection_to_stay_open():
    """The engine's proxy accepts at once and closes when nothing listens inside yet: such a
    port is not ready; one that keeps the connection (or speaks first) is."""
    import asyncio
    import socket
    import threading

    from revostack.health import _tcp_published

    def server(behaviour: str) -> tuple[socket.socket, int]:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()

        def run() -> None:
            while True:
                try:
                    c, _ = s.accept()
                except OSError:
                    return
                if behaviour == "close":
                    c.close()
                elif behaviour == "greet":
                    c.sendall(b"220 ready\r\n")
                    threading.Timer(2, c.close).start()
                else:
                    threading.Timer(2, c.close).start()

        threading.Thread(target=run, daemon=True).start()
        return s, s.getsockname()[1]

    results = {}
    for behaviour in ("close", "hold", "greet"):
        s, port = server(behaviour)
        try:
            results[behaviour] = asyncio.run(_tcp_published(f"127.0.0.1:{port}", 2.0))
        finally:
            s.close()
    assert results["close"][0] is False and "nothing listens inside" in results["close"][1]
    assert results["hold"][0] is True and results["greet"][0] is True
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    ok, why = asyncio.run(_tcp_published(f"127.0.0.1:{port}", 1.0))
    assert not ok and "refused" in why.lower()

"""`revostack export kubernetes`: every document valid against the Kubernetes API schemas
(strict: an unknown field is an error), and meaning what the Stackfile means — objects, probes,
dependency order, DNS names, grace periods, replicas, secrets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import cli
from revostack.cli import main

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the manifests")
kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (the test extra has it)")

REPO = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.30"  # a recent version the validator ships schemas for

RICH = """
[stack]
name = "rich"

[env]
LOG_LEVEL = "debug"
API_TOKEN = "s3cr3t"

[services.db]
cmd = "python -m fakedb --port $PORT"
port = 15432
health = { tcp = "${host}:${port}", interval = 2, timeout = 1, retries = 4, start_period = 20 }

[services.migrate]
cmd = ["python", "migrate.py"]
depends_on = { db = "healthy" }
restart = "no"

[services.api_server]
cmd = "uvicorn app:app --host ${host} --port $PORT"
cwd = "backend"
port = 18000
scale = 3
env = { DATABASE_URL = "postgres://${host}:${db.port}/dev", DB_PASSWORD = "hunter2" }
depends_on = { db = "healthy", migrate = "completed" }
health = { http = "http://${host}:${port}/health?deep=1", interval = 1, timeout = 2, retries = 3, start_period = 30 }
stop_signal = "SIGINT"
stop_timeout = 25
handoff = "proxy"

[services.worker]
cmd = "python worker.py"
depends_on = { api_server = "started" }
health = { cmd = "test -e /tmp/ready" }
restart = "always"

[services.logger]
cmd = "python logger.py"
health = { log = "ready" }
"""


def export(tmp_path: Path, stackfile: Path, *extra: str) -> list[dict]:
    out = tmp_path / "k8s"
    assert main(["-f", str(stackfile), "export", "kubernetes", str(out), "--image", "registry.local/app:1", *extra]) == 0
    text = (out / "manifests.yaml").read_text()
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture
def rich(tmp_path) -> Path:
    (tmp_path / "rich" / "backend").mkdir(parents=True)
    path = tmp_path / "rich" / "Stackfile.toml"
    path.write_text(RICH)
    return path


def by(docs, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_every_document_is_valid_strictly(tmp_path, rich):
    for stackfile in (rich, REPO / "examples" / "fullstack" / "Stackfile.toml"):
        docs = export(tmp_path / stackfile.parent.name, stackfile, "--namespace", "dev")
        assert docs
        for doc in docs:
            kv.validate(doc, K8S_VERSION, strict=True)  # raises on any unknown or wrong field
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == "dev"


def test_what_each_service_becomes(tmp_path, rich):
    docs = export(tmp_path, rich)
    deployments, services, jobs = by(docs, "Deployment"), by(docs, "Service"), by(docs, "Job")
    assert set(jobs) == {"migrate"}  # waited for with "completed"
    assert set(deployments) == {"db", "api-server", "worker", "logger"}
    assert set(services) == {"db", "api-server"}  # those with a port
    api = deployments["api-server"]
    assert api["spec"]["replicas"] == 3
    pod = api["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 25
    c = pod["containers"][0]
    assert c["image"] == "registry.local/app:1" and c["workingDir"] == "/app/backend"
    assert c["ports"] == [{"name": "main", "containerPort": 18000, "protocol": "TCP"}]
    assert services["api-server"]["spec"]["ports"][0]["port"] == 18000
    assert services["api-server"]["spec"]["selector"] == {"app.kubernetes.io/name": "api-server"}
    # stop_signal SIGINT: sent to PID 1 before Kubernetes' SIGTERM
    assert "kill -INT 1" in c["lifecycle"]["preStop"]["exec"]["command"][2]
    job = jobs["migrate"]["spec"]
    assert job["backoffLimit"] == 0 and job["template"]["spec"]["restartPolicy"] == "Never"


def test_health_becomes_probes(tmp_path, rich):
    deployments = by(export(tmp_path, rich), "Deployment")
    api = deployments["api-server"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"] == {"path": "/health?deep=1", "port": 18000}
    assert api["livenessProbe"]["periodSeconds"] == 1 and api["livenessProbe"]["timeoutSeconds"] == 2
    assert api["livenessProbe"]["failureThreshold"] == 3
    assert api["startupProbe"]["failureThreshold"] == 30  # start_period 30 s / interval 1 s
    db = deployments["db"]["spec"]["template"]["spec"]["containers"][0]
    assert db["readinessProbe"]["tcpSocket"] == {"port": 15432}
    assert (db["readinessProbe"]["periodSeconds"], db["readinessProbe"]["failureThreshold"]) == (2, 4)
    assert db["startupProbe"]["failureThreshold"] == 10
    worker = deployments["worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["readinessProbe"]["exec"]["command"] == ["sh", "-c", "test -e /tmp/ready"]
    logger = deployments["logger"]
    assert "readinessProbe" not in logger["spec"]["template"]["spec"]["containers"][0]
    assert "no probe equivalent" in logger["metadata"]["annotations"]["revostack.dev/health"]


def test_dependency_order_by_init_containers(tmp_path, rich):
    docs = export(tmp_path, rich)
    api = by(docs, "Deployment")["api-server"]["spec"]["template"]["spec"]
    waits = {c["name"]: c["command"] for c in api["initContainers"]}
    assert waits["wait-db"][-2:] == ["db", "15432"]  # db's Service answers (ready pods only)
    assert waits["wait-migrate"][-1] == "migrate" and "jobs/{job}" in waits["wait-migrate"][2]
    assert all(c["image"] == "registry.local/app:1" for c in api["initContainers"])
    assert api["serviceAccountName"] == "rich-waiter"
    role = by(docs, "Role")["rich-waiter"]
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]}]
    assert by(docs, "RoleBinding")["rich-waiter"]["subjects"][0]["name"] == "rich-waiter"
    worker = by(docs, "Deployment")["worker"]["spec"]["template"]["spec"]
    assert [c["name"] for c in worker["initContainers"]] == ["wait-api-server"]
    assert "serviceAccountName" not in worker
    assert "initContainers" not in by(docs, "Deployment")["db"]["spec"]["template"]["spec"]


def test_env_dns_names_binds_and_secrets(tmp_path, rich):
    docs = export(tmp_path, rich)
    config = next(iter(by(docs, "ConfigMap").values()))["data"]
    secret = next(iter(by(docs, "Secret").values()))["stringData"]
    assert config["api-server.DB_HOST"] == "db" and config["api-server.DB_PORT"] == "15432"
    assert config["api-server.DATABASE_URL"] == "postgres://db:15432/dev"
    assert config["api-server.LOG_LEVEL"] == "debug"
    assert secret["api-server.DB_PASSWORD"] == "hunter2" and secret["api-server.API_TOKEN"] == "s3cr3t"
    assert not any("hunter2" in v or "s3cr3t" in v for v in config.values())
    api = by(docs, "Deployment")["api-server"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["valueFrom"] for e in api["env"]}
    assert "secretKeyRef" in env["DB_PASSWORD"] and "configMapKeyRef" in env["DB_PORT"]
    assert not any("value" in e for e in api["env"])  # nothing inline
    assert "--host 0.0.0.0" in api["command"][2]  # binds every interface of the pod


def test_the_demo_exports_and_the_cli_says_so(tmp_path):
    demo = tmp_path / "fullstack"
    shutil.copytree(REPO / "examples" / "fullstack", demo, ignore=shutil.ignore_patterns(".revostack"))
    r = cli("export", "kubernetes", "k8s", "--image", "demo:1", cwd=demo)
    assert r.returncode == 0 and "wrote k8s/manifests.yaml" in r.stdout, r.stderr
    docs = [d for d in yaml.safe_load_all((demo / "k8s" / "manifests.yaml").read_text()) if d]
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Job"} == {"migrate"}
    frontend = by(docs, "Deployment")["frontend"]["spec"]["template"]["spec"]
    assert [c["name"] for c in frontend["initContainers"]] == ["wait-backend"]
    r = cli("export", "kubernetes", "k8s2", cwd=demo)
    assert r.returncode == 2 and "--image" in r.stderr

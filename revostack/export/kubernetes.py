"""`revostack export kubernetes`: the stack as Kubernetes manifests. Pure: the plan in, text out.

- A long-running service is a Deployment (``replicas`` = ``scale``) with a Service on its port,
  both named after it; a service others wait for with ``completed`` is a Job.
- ``health`` becomes probes: ``http`` -> httpGet, ``tcp`` -> tcpSocket, ``cmd`` -> exec;
  ``interval``/``timeout``/``retries`` -> periodSeconds/timeoutSeconds/failureThreshold, and
  ``start_period`` -> a startupProbe (the same check, failureThreshold = start_period/interval).
  A ``log`` check cannot be a probe: the manifest says so in an annotation.
- ``depends_on`` is kept by init containers in the service's own image (``python3``, as the
  compose export's health checks): ``started``/``healthy`` wait until the dependency's Service
  accepts a TCP connection (a Service routes only to ready pods, so that is its readiness);
  ``completed`` asks the API server until the dependency's Job has succeeded, with a
  ServiceAccount that may read Jobs.
- ``<NAME>_HOST`` is the dependency's Service name (its DNS name in the namespace), ``<NAME>_PORT``
  its port; ``${host}`` (the address a service binds) is ``0.0.0.0``.
- Variables go into a ConfigMap; values that look secret (``*PASSWORD*``, ``*TOKEN*``,
  ``*SECRET*``, ``*KEY*``...) into a Secret, never inline.
- ``stop_timeout`` -> terminationGracePeriodSeconds. Kubernetes always sends SIGTERM; another
  ``stop_signal`` is sent to the container's PID 1 by a preStop hook first.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from revostack.plan import Instance, Plan, secret_like
from revostack.stackfile import Condition, HealthKind, Restart, Service

WAIT_TCP = ("import socket, sys, time\n"
            "host, port = sys.argv[1], int(sys.argv[2])\n"
            "while True:\n"
            "    try:\n"
            "        socket.create_connection((host, port), timeout=2).close()\n"
            "        break\n"
            "    except OSError:\n"
            "        print(f'waiting for {host}:{port}', flush=True)\n"
            "        time.sleep(2)\n")
WAIT_JOB = ("import json, ssl, sys, time, urllib.request\n"
            "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
            "ns, job = open(sa + '/namespace').read().strip(), sys.argv[1]\n"
            "url = f'https://kubernetes.default.svc/apis/batch/v1/namespaces/{ns}/jobs/{job}'\n"
            "ctx = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
            "while True:\n"
            "    req = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + open(sa + '/token').read()})\n"
            "    try:\n"
            "        if json.load(urllib.request.urlopen(req, context=ctx)).get('status', {}).get('succeeded'):\n"
            "            break\n"
            "    except OSError as e:\n"
            "        print(f'waiting for job {job}: {e}', flush=True)\n"
            "    time.sleep(2)\n")
WAIT_DEPLOYMENT = ("import json, ssl, sys, time, urllib.request\n"
                   "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
                   "ns, name = open(sa + '/namespace').read().strip(), sys.argv[1]\n"
                   "url = f'https://kubernetes.default.svc/apis/apps/v1/namespaces/{ns}/deployments/{name}'\n"
                   "ctx = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
                   "while True:\n"
                   "    req = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + open(sa + '/token').read()})\n"
                   "    try:\n"
                   "        d = json.load(urllib.request.urlopen(req, context=ctx))\n"
                   "        want, status = d.get('spec', {}).get('replicas', 1), d.get('status', {})\n"
                   "        if status.get('availableReplicas', 0) >= want and status.get('updatedReplicas', 0) >= want:\n"
                   "            break\n"
                   "        print(f'waiting for deployment {name}: {status.get(\"availableReplicas\", 0)}/{want} available', flush=True)\n"
                   "    except OSError as e:\n"
                   "        print(f'waiting for deployment {name}: {e}', flush=True)\n"
                   "    time.sleep(2)\n")
APP_ROOT = "/app"  # where the image holds the project (the Stackfile's folder)


def dns_name(name: str) -> str:
    """A DNS-1123 label: lower case, digits and '-'."""
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return out[:63] or "service"


def render(plan: Plan, app: str, image: str, namespace: str | None) -> dict[str, str]:
    import yaml

    stack = plan.stack
    oneshots = {d.name for s in stack.services.values() for d in s.depends_on if d.condition is Condition.COMPLETED}
    names = {n: dns_name(n) for n in stack.services}
    if len(set(names.values())) != len(names):
        from revostack.export import ExportError

        raise ExportError("kubernetes: two services would get the same DNS name: " + ", ".join(sorted(names)))
    meta = {"namespace": namespace} if namespace else {}
    labels = {"app.kubernetes.io/part-of": dns_name(app), "app.kubernetes.io/managed-by": "revostack"}
    docs: list[dict] = []
    if namespace:
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}})
    config, secret = {}, {}
    first = {inst.service.name: inst for inst in plan.instances if inst.index == 1}
    cenv = _addresses(plan)
    for sname, inst in first.items():
        for key, value in cenv.env(inst).items():
            (secret if secret_like(key) and value else config)[f"{names[sname]}.{key}"] = value
    cm_name, secret_name = f"{dns_name(app)}-env", f"{dns_name(app)}-secret"
    if config:
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm_name, **meta, "labels": labels},
                     "data": {_key(k): v for k, v in config.items()}})
    if secret:
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name, **meta, "labels": labels},
                     "type": "Opaque", "stringData": {_key(k): v for k, v in secret.items()}})
    portless = {n for n, s in stack.services.items() if s.port is None}
    waits_for_api = any(_asks_api(d, oneshots, portless) for s in stack.services.values() for d in s.depends_on)
    account = f"{dns_name(app)}-waiter"
    if waits_for_api:
        reads = [("batch", "jobs")] if any(d.condition is Condition.COMPLETED and d.name in oneshots
                                            for s in stack.services.values() for d in s.depends_on) else []
        if any(d.condition is not Condition.COMPLETED and d.name in portless
               for s in stack.services.values() for d in s.depends_on):
            reads.append(("apps", "deployments"))
        docs += _job_reader(account, meta, labels, reads)
    for sname, inst in first.items():
        svc = inst.service
        env = cenv.env(inst)
        container = _container(plan, inst, names[sname], image, env, cenv, cm_name, secret_name, secret)
        pod: dict = {"containers": [container],
                     "terminationGracePeriodSeconds": max(1, math.ceil(svc.stop_timeout))}
        inits = _init_containers(svc, names, oneshots, image, plan)
        if inits:
            pod["initContainers"] = inits
            if any(_asks_api(d, oneshots, portless) for d in svc.depends_on):
                pod["serviceAccountName"] = account
        own = {**labels, "app.kubernetes.io/name": names[sname]}
        annotations = {}
        if svc.health is not None and svc.health.kind is HealthKind.LOG:
            annotations["revostack.dev/health"] = (f"a log check (/{svc.health.target}/ in the output) has no probe "
                                                    "equivalent: no readiness or liveness probe")
        if svc.restart is Restart.NO and sname not in oneshots:
            annotations["revostack.dev/restart"] = 'restart = "no": a Deployment always restarts its pods'
        objmeta = {"name": names[sname], **meta, "labels": own, **({"annotations": annotations} if annotations else {})}
        if sname in oneshots:
            pod["restartPolicy"] = "Never" if svc.restart is Restart.NO else "OnFailure"
            docs.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": objmeta, "spec": {
                "backoffLimit": 0 if svc.restart is Restart.NO else svc.max_restarts,
                "template": {"metadata": {"labels": own}, "spec": pod}}})
            continue
        pod["restartPolicy"] = "Always"
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": objmeta, "spec": {
            "replicas": svc.scale, "selector": {"matchLabels": {"app.kubernetes.io/name": names[sname]}},
            "template": {"metadata": {"labels": own}, "spec": pod}}})
        port = cenv.ports.get(inst.name)
        if inst.port.port is not None and port is not None:
            docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": names[sname], **meta, "labels": own},
                         "spec": {"selector": {"app.kubernetes.io/name": names[sname]},
                                  "ports": [{"name": "main", "port": port, "targetPort": port, "protocol": "TCP"}]}})
    head = (f"# Generated by `revostack export kubernetes` from {stack.path.name} (stack \"{stack.name}\").\n"
            f"# Image: {image}, holding the project at {APP_ROOT} and python3 (the init containers' waits);\n"
            "# a service with its own image (image = ...) runs in it, on its container_port.\n"
            "# A scaled service is one Deployment behind one Service: NAME_2_PORT and the like name that Service.\n"
            "# Apply: kubectl apply -f manifests.yaml   (see docs/export.md, \"From laptop to cluster\")\n")
    body = yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=1000)
    return {"manifests.yaml": head + body}


def _key(name: str) -> str:
    """A ConfigMap/Secret key: ``service.VAR`` (both allowed characters)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


class _Names:
    """Every instance of a service is reached through the service's one Service: its DNS name."""

    def __init__(self, plan: Plan):
        self.of = {i.name: dns_name(i.service.name) for i in plan.instances}

    def service(self, name: str) -> str:
        return dns_name(name)


def _addresses(plan: Plan):
    """Interpolation for a pod, as for a container under compose: ``NAME_HOST`` and a host
    before a port of X are X's Service name, the service's own ``${host}`` is 0.0.0.0. Every
    replica of a Deployment runs the one pod template behind the one Service, so every instance
    of a scaled service is reached on its first instance's port (``NAME_2_PORT`` = ``NAME_PORT``)."""
    from revostack.export.compose import _ComposeEnv

    cenv = _ComposeEnv(plan, _Names(plan))
    for inst in plan.instances:
        cenv.ports[inst.name] = cenv.ports.get(f"{inst.service.name}.1")
    return cenv


def _asks_api(dep, oneshots: set[str], portless: set[str]) -> bool:
    """Whether waiting for ``dep`` asks the API server (a Job, or a Deployment with no port)."""
    if dep.condition is Condition.COMPLETED:
        return dep.name in oneshots
    return dep.name in portless


def _container(plan: Plan, inst: Instance, name: str, image: str, env: dict[str, str], cenv, cm: str, secret: str,
               secrets: dict) -> dict:
    svc = inst.service
    if svc.image is not None:  # its own image, its own command when it has one
        c: dict = {"name": name, "image": svc.image}
        if svc.cmd:
            c["command"] = cenv.cmd(inst, env)
        if svc.pty:
            c["tty"], c["stdin"] = True, True
    else:
        c = {"name": name, "image": image, "workingDir": _workdir(plan, svc), "command": cenv.cmd(inst, env)}
    c["env"] = [{"name": k, "valueFrom": {("secretKeyRef" if f"{name}.{k}" in secrets else "configMapKeyRef"): {
        "name": secret if f"{name}.{k}" in secrets else cm, "key": _key(f"{name}.{k}")}}} for k in env]
    if inst.port.port is not None and cenv.ports.get(inst.name) is not None:
        c["ports"] = [{"name": "main", "containerPort": cenv.ports[inst.name], "protocol": "TCP"}]
    h = svc.health
    probe = _probe(h.kind, cenv.health_target(inst, env)) if h is not None else None
    if probe is not None:
        timing = {"periodSeconds": max(1, math.ceil(h.interval)), "timeoutSeconds": max(1, math.ceil(h.timeout))}
        c["readinessProbe"] = {**probe, **timing, "failureThreshold": h.retries}
        c["livenessProbe"] = {**probe, **timing, "failureThreshold": h.retries}
        c["startupProbe"] = {**probe, **timing,
                             "failureThreshold": max(1, math.ceil(h.start_period / max(h.interval, 1)))}
    if svc.stop_signal != "SIGTERM":
        sig = svc.stop_signal.removeprefix("SIG")
        c["lifecycle"] = {"preStop": {"exec": {"command": [
            "sh", "-c", f"kill -{sig} 1; while kill -0 1 2>/dev/null; do sleep 0.2; done"]}}}
    return c


def _workdir(plan: Plan, svc: Service) -> str:
    try:
        rel = Path(svc.cwd).resolve().relative_to(plan.stack.root.resolve())
    except ValueError:
        return APP_ROOT
    return str(Path(APP_ROOT) / rel) if str(rel) != "." else APP_ROOT


def _probe(kind: HealthKind, target: str) -> dict | None:
    from urllib.parse import urlsplit

    if kind is HealthKind.HTTP:
        parts = urlsplit(target)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return {"httpGet": {"path": path, "port": parts.port or (443 if parts.scheme == "https" else 80),
                            **({"scheme": "HTTPS"} if parts.scheme == "https" else {})}}
    if kind is HealthKind.TCP:
        port = target.rpartition(":")[2]
        return {"tcpSocket": {"port": int(port) if port.isdigit() else "main"}}
    if kind is HealthKind.CMD:
        return {"exec": {"command": ["sh", "-c", target]}}
    return None


def _init_containers(svc: Service, names: dict[str, str], oneshots: set[str], image: str, plan: Plan) -> list[dict]:
    out = []
    cenv = _addresses(plan)
    ports = {i.service.name: cenv.ports.get(i.name) for i in plan.instances if i.index == 1}
    for dep in svc.depends_on:
        if dep.condition is Condition.COMPLETED and dep.name in oneshots:
            out.append({"name": f"wait-{names[dep.name]}"[:63], "image": image,
                        "command": ["python3", "-c", WAIT_JOB, names[dep.name]]})
        elif ports.get(dep.name) is not None:
            out.append({"name": f"wait-{names[dep.name]}"[:63], "image": image,
                        "command": ["python3", "-c", WAIT_TCP, names[dep.name], str(ports[dep.name])]})
        elif dep.name in plan.stack.services and dep.condition is not Condition.COMPLETED:
            # no port, no Service to connect to: its Deployment's availability, asked of the API
            # (readiness of its pods: its probes, or running when it has none)
            out.append({"name": f"wait-{names[dep.name]}"[:63], "image": image,
                        "command": ["python3", "-c", WAIT_DEPLOYMENT, names[dep.name]]})
    return out


def _job_reader(account: str, meta: dict, labels: dict, reads: list[tuple[str, str]]) -> list[dict]:
    """A ServiceAccount that may read Jobs and Deployments, for the init containers that wait for one."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, **meta, "labels": labels}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": account, **meta,
                                                                                     "labels": labels},
         "rules": [{"apiGroups": [group], "resources": [what], "verbs": ["get"]} for group, what in reads]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": account, **meta,
                                                                                            "labels": labels},
         "subjects": [{"kind": "ServiceAccount", "name": account, **meta}],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account}},
    ]

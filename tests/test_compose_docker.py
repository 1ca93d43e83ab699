"""The compose export runs under a real Docker engine: the exported demo comes up in order and
healthy (db healthy, then migrate completed, then backend healthy, then frontend), the backend
answers from the host on 127.0.0.1, and `down` leaves nothing.

No registry can be reached, so the image is made here: `docker import` of a tiny root file
system (merged-/usr symlinks, /etc/passwd), with this machine's /usr and Python bind-mounted
read-only by a compose override file that belongs to the test."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import cli, wait_for
from helpers_runtime import free_base

REPO = Path(__file__).resolve().parent.parent
IMAGE = "revostack-test-base:2"


def _docker_ok() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client"
    if shutil.which("docker-compose") is None and subprocess.run(["docker", "compose", "version"],
                                                                 capture_output=True).returncode != 0:
        return "no docker compose (v1 or v2)"
    r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=20)
    return None if r.returncode == 0 else "no Docker daemon answers (start dockerd)"


WHY = _docker_ok()
pytestmark = [pytest.mark.skipif(WHY is not None, reason=f"needs a Docker engine: {WHY}"), pytest.mark.timeout(300)]


def compose() -> list[str]:
    return ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]


def base_image() -> None:
    """A root file system of symlinks and a passwd file: the host's /usr comes in by mount."""
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes | None = None, link: str | None = None, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
            elif data is None:
                info.type, info.mode = tarfile.DIRTYPE, mode
            else:
                info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
        # /sbin is a real folder: docker mounts its init (`init: true`) at /sbin/docker-init
        for d in ("usr", "etc", "tmp", "root", "proc", "sys", "dev", "app", "sbin"):
            add(d, mode=0o1777 if d == "tmp" else 0o755)
        for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
            add(link, link=target)
        add("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", b"root:x:0:\n")
    subprocess.run(["docker", "import", "-", IMAGE], input=buf.getvalue(), check=True, capture_output=True)


def override(folder: Path, services: list[str]) -> Path:
    py = Path(sys.prefix).resolve()
    mounts = ["/usr:/usr:ro", f"{py}:{py}:ro"]
    text = "services:\n" + "".join(
        f"  {name}:\n    volumes:\n" + "".join(f'      - "{m}"\n' for m in mounts)
        + f'    environment:\n      PATH: "{py}/bin:/usr/local/bin:/usr/bin:/bin"\n' for name in services)
    path = folder / "compose.override.yaml"
    path.write_text(text)
    return path


def states(folder: Path, files: list[str]) -> dict[str, dict]:
    ids = subprocess.run([*compose(), *files, "ps", "-q"], cwd=folder, capture_output=True, text=True).stdout.split()
    if not ids:
        return {}
    info = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout)
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c["State"] for c in info}


def test_the_exported_demo_runs_under_docker_compose(tmp_path):
    base_image()
    demo = tmp_path / "fullstack"
    shutil.copytree(REPO / "examples" / "fullstack", demo, ignore=shutil.ignore_patterns(".revostack"))
    base = free_base((0, 100, 200, 300, 400))
    out = tmp_path / "out"
    r = cli("-f", str(demo / "Stackfile.toml"), "export", "compose", str(out), "--image", IMAGE,
            "--port-base", str(base), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names = ["db", "events", "migrate", "backend", "frontend"]
    files = ["-f", "compose.yaml", "-f", str(override(out, names))]
    project = (out / ".env").read_text().split("COMPOSE_PROJECT_NAME=")[1].strip()
    try:
        up = subprocess.run([*compose(), *files, "up", "-d"], cwd=out, capture_output=True, text=True, timeout=240)
        assert up.returncode == 0, up.stdout + up.stderr
        wait_for(lambda: (lambda s: s.get("backend", {}).get("Health", {}).get("Status") == "healthy"
                          and s.get("frontend", {}).get("Running") and s)(states(out, files)), 120, 0.5,
                 what="backend healthy and frontend running")
        s = states(out, files)
        assert s["db"]["Health"]["Status"] == "healthy"
        assert s["migrate"]["Status"] == "exited" and s["migrate"]["ExitCode"] == 0
        # the order: db healthy before migrate starts, migrate done before backend, backend before frontend
        assert s["db"]["StartedAt"] < s["migrate"]["StartedAt"] <= s["migrate"]["FinishedAt"] <= s["backend"]["StartedAt"]
        assert s["backend"]["StartedAt"] < s["frontend"]["StartedAt"]
        backend_port = base + 200  # --port-base: 100 per service in file order (db, migrate, backend, ...)
        with urllib.request.urlopen(f"http://127.0.0.1:{backend_port}/api/hello", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body.get("message") == "hello from the backend" and body.get("schema") == "3", body
        ports = subprocess.run(["docker", "port", f"{project}_backend_1" if "docker-compose" in compose()[0]
                                else f"{project}-backend-1"], capture_output=True, text=True).stdout
        assert f"127.0.0.1:{backend_port}" in ports and "0.0.0.0" not in ports, ports  # only on the stack's host
        t0 = time.monotonic()
        down = subprocess.run([*compose(), *files, "down"], cwd=out, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - t0
        assert down.returncode == 0, down.stderr
        assert took < 8, f"down took {took:.1f}s: the stop signal did not reach the programs"
    finally:
        subprocess.run([*compose(), *files, "down", "-v", "--remove-orphans", "-t", "1"], cwd=out, capture_output=True,
                       timeout=120)
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
                          capture_output=True, text=True).stdout.split()
    assert left == []

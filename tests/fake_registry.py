"""A registry that serves one image, over HTTP on loopback (the engine trusts 127.0.0.0/8 without
TLS): enough of the registry v2 API for a real `docker pull`, so the tests pull for real with no
network. The image is a busybox rootfs, one gzipped layer."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import platform
import tarfile
import threading
from pathlib import Path

ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "amd64")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def busybox_layer(busybox: Path, applets: tuple[str, ...], files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(busybox), arcname="bin/busybox")
        for name in applets:
            info = tarfile.TarInfo(f"bin/{name}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Registry:
    def __init__(self, repo: str, tag: str, layer_tar: bytes):
        layer = gzip.compress(layer_tar, mtime=0)
        config = json.dumps({"architecture": ARCH, "os": "linux", "config": {"Cmd": ["sh"]},
                             "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
                             "history": [{"created_by": "revostack tests"}]}).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                       "digest": _digest(config)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(layer),
                        "digest": _digest(layer)}]}).encode()
        self.blobs = {_digest(config): config, _digest(layer): layer}
        self.manifests = {f"/v2/{repo}/manifests/{tag}": manifest, f"/v2/{repo}/manifests/{_digest(manifest)}": manifest}
        self.repo = repo
        self.pulls = 0
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, body: bytes | None, ctype: str = "application/octet-stream", digest: str | None = None,
                      head: bool = False) -> None:
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                if digest:
                    self.send_header("Docker-Content-Digest", digest)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _route(self, head: bool) -> None:
                path = self.path.split("?")[0]
                if path in ("/v2/", "/v2"):
                    return self._send(b"{}", "application/json", head=head)
                if path in registry.manifests:
                    registry.pulls += 1
                    body = registry.manifests[path]
                    return self._send(body, "application/vnd.docker.distribution.manifest.v2+json", _digest(body), head)
                if path.startswith(f"/v2/{registry.repo}/blobs/"):
                    digest = path.rsplit("/", 1)[1]
                    return self._send(registry.blobs.get(digest), digest=digest, head=head)
                return self._send(None)

            def do_GET(self):
                self._route(False)

            def do_HEAD(self):
                self._route(True)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

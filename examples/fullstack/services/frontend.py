"""A frontend: serves a page built from the backend's /api/hello (found through API_URL)."""
import json
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = os.environ["API_URL"]


def hello() -> dict:
    with urllib.request.urlopen(API + "/api/hello", timeout=2) as r:
        return json.load(r)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            self.send_response(204)
            self.end_headers()
            return
        data = hello()
        page = f"<h1>{data['message']}</h1><p>schema version {data['schema']}</p>\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, fmt, *args):
        pass


port = int(os.environ["PORT"])
server = ThreadingHTTPServer((os.environ.get("BIND", "127.0.0.1"), port), Handler)
print(f"frontend on http://{server.server_address[0]}:{port}, backend says: {hello()['message']!r}")
server.serve_forever()

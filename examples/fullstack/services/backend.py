"""An HTTP backend: /health, and /api/hello which reads the db."""
import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def db(command: str) -> str:
    with socket.create_connection((os.environ["DB_HOST"], int(os.environ["DB_PORT"])), timeout=2) as s:
        s.sendall(command.encode() + b"\n")
        return s.makefile().readline().strip()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = {"status": "ok"}
        elif self.path == "/api/hello":
            body = {"message": "hello from the backend", "schema": db("GET schema")}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        if self.path != "/health":
            print("backend:", fmt % args)


port = int(os.environ["PORT"])
server = ThreadingHTTPServer((os.environ.get("BIND", "127.0.0.1"), port), Handler)
print(f"backend on http://{server.server_address[0]}:{port} using {os.environ['DATABASE_URL']}")
server.serve_forever()

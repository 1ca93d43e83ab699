"""A tiny HTTP service that speaks socket activation with the standard library alone.

revostack binds the public port and passes the listening socket as file descriptor 3, with
LISTEN_FDS=1 and LISTEN_PID set to this process's pid (systemd's protocol). Started by hand,
without them, it binds $PORT itself. On SIGTERM it stops accepting and finishes what it has.
"""
import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.time()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"service": "events", "pid": os.getpid(), "up_s": round(time.time() - STARTED, 1)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def activated_socket():
    """fd 3, when the socket-activation variables say it is ours."""
    if os.environ.get("LISTEN_FDS") == "1" and os.environ.get("LISTEN_PID") == str(os.getpid()):
        return socket.socket(fileno=3)
    return None


sock = activated_socket()
if sock is not None:
    server = ThreadingHTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock  # listening already: revostack holds it across restarts
    how = "socket activation (fd 3)"
else:
    server = ThreadingHTTPServer((os.environ.get("BIND", "127.0.0.1"), int(os.environ["PORT"])), Handler)
    how = "its own socket"
server.daemon_threads = False  # finish every request in flight before exiting
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
print(f"events ready on port {server.socket.getsockname()[1]} via {how}", flush=True)
server.serve_forever()
server.server_close()

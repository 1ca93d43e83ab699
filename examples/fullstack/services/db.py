"""A tiny line-based key/value "database" over TCP: SET k v / GET k / PING."""
import os
import socketserver

store = {}


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        for raw in self.rfile:
            words = raw.decode().split()
            if not words:
                continue
            if words[0] == "SET" and len(words) == 3:
                store[words[1]] = words[2]
                reply = "OK"
            elif words[0] == "GET" and len(words) == 2:
                reply = store.get(words[1], "")
            else:
                reply = "PONG"
            self.wfile.write((reply + "\n").encode())


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


port = int(os.environ["PORT"])
with Server((os.environ.get("BIND", "127.0.0.1"), port), Handler) as server:
    print(f"db listening on {port}")
    server.serve_forever()

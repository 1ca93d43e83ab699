"""The demo's backend: a process that reads from the assets container through its published port."""
import http.server
import os
import urllib.request


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = b"ok\n"
        else:
            with urllib.request.urlopen(os.environ["ASSETS_URL"], timeout=2) as r:
                body = b"backend (a process) got from assets: " + r.read()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        if self.path != "/health":  # the health checks, every second, would drown the rest
            print("backend:", fmt % args, flush=True)


http.server.ThreadingHTTPServer((os.environ.get("HOST", "0.0.0.0"), int(os.environ["PORT"])), Handler).serve_forever()

"""The HTTP child of the handoff workloads: stdlib only, small and quick to start.

    webchild.py        serve on fd 3 (socket activation) or on 127.0.0.1:$PORT;
                       "GET /" -> this process's pid; "GET /bulk/N" -> N bytes; print "READY pid=P".
                       SIGTERM: stop accepting, finish the connections in hand, exit.
"""

import os
import signal
import socket
import sys
import threading

BLOCK = bytes(range(256)) * 256


def handle(conn: socket.socket) -> None:
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        path = data.split(b" ", 2)[1]
        if path.startswith(b"/bulk/"):
            left = int(path[6:])
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
            while left > 0:
                conn.sendall(BLOCK[:left])
                left -= len(BLOCK)
        else:
            body = b"%d" % os.getpid()
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    except OSError:
        pass
    finally:
        conn.close()


def main() -> None:
    if os.environ.get("LISTEN_FDS") == "1" and os.environ.get("LISTEN_PID") == str(os.getpid()):
        sock = socket.socket(fileno=3)
    else:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(os.environ["PORT"])))
        sock.listen(1024)
    signal.signal(signal.SIGTERM, _stop)
    sys.stdout.write(f"READY pid={os.getpid()}\n")
    sys.stdout.flush()
    workers = []
    try:
        while True:
            conn, _ = sock.accept()  # a blocking accept: SIGTERM interrupts it through _stop
            t = threading.Thread(target=handle, args=(conn,))
            t.start()
            workers.append(t)
            if len(workers) > 64:
                workers = [w for w in workers if w.is_alive()]
    except _Stop:
        pass
    for t in workers:
        t.join()


class _Stop(Exception):
    pass


def _stop(*_) -> None:
    raise _Stop


if __name__ == "__main__":
    main()

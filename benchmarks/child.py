"""The children every workload runs: one tiny script, several modes, stdlib only.

Kept small on purpose: its start-up is part of every number, for every orchestrator alike.

    child.py flood ID N        N lines of 80 bytes in 80 KB blocks, then "DONE c=ID", then linger
    child.py hello ID          one line at once, then linger
    child.py sleep ID [ignore] "READY c=ID pid=P", then linger (ignore: SIGTERM/SIGINT/SIGHUP ignored)
    child.py server ID         listen on 127.0.0.1:$PORT, "READY c=ID pid=P", accept and close forever
    child.py watched FILE      "GEN <first line of FILE> pid=P", then linger

Every payload line of ``flood`` is ``BENCH c=<id> n=<9-digit seq> <53 x> END\\n`` (80 bytes),
so the reader can tell a whole line from a torn one and count each child's lines.
"""

import os
import sys

LINE_BYTES = 80
PAD = b"x" * 53
BLOCK = 1000  # lines per write: 80,000 bytes


def write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]


def linger() -> None:
    import signal

    while True:
        signal.pause()


def flood(ident: int, count: int) -> None:
    # one template per 1000-line block; the block number is patched in with one replace
    template = b"".join(b"BENCH c=%d n=@@@@@@%03d %s END\n" % (ident, i, PAD) for i in range(BLOCK))
    full, rest = divmod(count, BLOCK)
    for block in range(full):
        write_all(template.replace(b"@@@@@@", b"%06d" % block))
    if rest:
        write_all(b"".join(b"BENCH c=%d n=%09d %s END\n" % (ident, full * BLOCK + i, PAD) for i in range(rest)))
    write_all(b"DONE c=%d\n" % ident)
    linger()


def main(argv: list[str]) -> None:
    mode = argv[1]
    if mode == "flood":
        flood(int(argv[2]), int(argv[3]))
    elif mode == "hello":
        write_all(b"HELLO c=%s pid=%d\n" % (argv[2].encode(), os.getpid()))
        linger()
    elif mode == "sleep":
        if len(argv) > 3 and argv[3] == "ignore":
            import signal

            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
        write_all(b"READY c=%s pid=%d\n" % (argv[2].encode(), os.getpid()))
        linger()
    elif mode == "server":
        import socket

        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(os.environ["PORT"])))
        s.listen(64)
        write_all(b"READY c=%s pid=%d\n" % (argv[2].encode(), os.getpid()))
        while True:
            conn, _ = s.accept()
            conn.close()
    elif mode == "watched":
        with open(argv[2], "rb") as f:
            gen = f.readline().strip()
        write_all(b"GEN %s pid=%d\n" % (gen, os.getpid()))
        linger()
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)

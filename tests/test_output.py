"""End-to-end tests of what `revostack up` prints: whole lines with the right prefix under a
flood, invalid UTF-8, a 1 MB line, a partial line, colour rules and the per-instance logs."""

from __future__ import annotations

import re
import signal

import pytest

from helpers_runtime import LINE_RE, PY, Run, alive, assert_nothing_left, clean_env, stack_id, write

N_LINES = 20_000
PAYLOAD = "x" * 70


def flood_line(name: str, i: int) -> str:
    return f"{name} {i:06d} {PAYLOAD}"


def big_line() -> bytes:
    return b"".join(b"%07d," % i for i in range(131_072))  # 1 MiB, no newline inside


@pytest.mark.timeout(90)
def test_flood_utf8_long_and_partial_lines(tmp_path, reaper):
    write(tmp_path / "flood.py", f"""
        import sys
        name = sys.argv[1]
        # all at once, in one write: the pipe is full the whole time
        sys.stdout.write("".join(f"{{name}} {{i:06d}} {PAYLOAD}\\n" for i in range({N_LINES})))
        sys.stdout.flush()
    """)
    write(tmp_path / "big.py", """
        import fcntl, sys
        if sys.argv[1] == "wide":
            fcntl.fcntl(1, 1031, 1 << 20)  # F_SETPIPE_SZ: a 1 MiB pipe, read in 256 KiB chunks
        line = b"".join(b"%07d," % i for i in range(131072))
        sys.stdout.buffer.write(b"before\\n" + line + b"\\nafter\\n")
        sys.stdout.buffer.flush()
    """)
    write(tmp_path / "badutf8.py", r"""
        import sys
        sys.stdout.buffer.write(b"bad \xff\xfe end\n" + b"cut \xe2\x82\n" + b"good \xe2\x82\xac\n")
        sys.stdout.buffer.flush()
    """)
    write(tmp_path / "partial.py", """
        import sys, time
        sys.stdout.write("prompt> ")
        sys.stdout.flush()
        while True:
            time.sleep(3600)
    """)
    services = "".join(f"""
        [services.{n}]
        cmd = ["{PY}", "flood.py", "{n}"]
        restart = "no"
    """ for n in ("a", "b", "c"))
    sf = write(tmp_path / "Stackfile.toml", services + f"""
        [services.big]
        cmd = ["{PY}", "big.py", "plain"]
        restart = "no"

        [services.bigwide]
        cmd = ["{PY}", "big.py", "wide"]
        restart = "no"

        [services.badutf8]
        cmd = ["{PY}", "badutf8.py"]
        restart = "no"

        [services.partial]
        cmd = ["{PY}", "partial.py"]
    """)
    sid = stack_id(sf)
    reaper.stacks.append(sid)
    up = Run(reaper, ["up", "--no-watch"], tmp_path)

    part_pid, _ = up.started("partial.1")
    # a partial line is shown after a short delay, while its process keeps running
    up.wait_line(r"^prompt> $", 20, of="partial.1")
    assert alive(part_pid)
    assert not any(s.startswith("partial.1") and "started" not in s for s in up.system())

    for n in ("a", "b", "c", "big", "bigwide", "badutf8"):
        up.wait_line(rf"^{n}\.1 exited with code 0$", 60, system=True)
    assert up.stop(signal.SIGINT) == 0
    raw = b"".join(up.raw)

    # not a terminal: no colour
    assert b"\x1b[" not in raw
    # every line is whole and prefixed (timestamp, padded name, "|")
    lines = up.lines()
    bad = [line[:100] for line in lines if not LINE_RE.match(line)]
    assert not bad, bad
    widths = {line.index(" | ") for line in lines}
    assert len(widths) == 1, widths

    # every flood line exactly once, in order, under its own name
    for n in ("a", "b", "c"):
        assert up.of(f"{n}.1") == [flood_line(n, i) for i in range(N_LINES)], n
    flood = re.compile(r"^(\w) \d{6} x+$")
    for line in lines:
        m = LINE_RE.match(line)
        f = flood.match(m.group(3))
        if f:
            assert m.group(2) == f"{f.group(1)}.1", line[:100]

    # invalid UTF-8 is shown with replacement characters; the output stays valid UTF-8
    raw.decode("utf-8")
    assert up.of("badutf8.1") == ["bad \ufffd\ufffd end", "cut \ufffd", "good \u20ac"]

    # a 1 MiB line: every byte arrives, in pieces of at most 64 KiB (whatever the pipe size)
    for n in ("big.1", "bigwide.1"):
        got = up.of(n)
        assert got[0] == "before" and got[-1] == "after", n
        pieces = got[1:-1]
        assert all(len(p) <= 64 * 1024 for p in pieces), (n, [len(p) for p in pieces])
        assert "".join(pieces).encode() == big_line(), n
        assert len(pieces) >= 16

    # the per-instance log file holds the lines, each with a full timestamp
    log = (tmp_path / ".revostack" / "logs" / "a.1.log").read_text().splitlines()
    assert len(log) == N_LINES
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} (.*)$")
    assert [stamp.match(line).group(1) for line in log] == [flood_line("a", i) for i in range(N_LINES)]
    assert "prompt> " in (tmp_path / ".revostack" / "logs" / "partial.1.log").read_text()
    bad_log = (tmp_path / ".revostack" / "logs" / "badutf8.1.log").read_bytes()
    assert "bad \ufffd\ufffd end".encode() in bad_log
    assert_nothing_left(sid)


def _color_run(reaper, folder, args, env):
    write(folder / "show.py", """
        import os
        print("child NO_COLOR=%s FORCE_COLOR=%s" % (os.environ.get("NO_COLOR", "-"), os.environ.get("FORCE_COLOR", "-")))
    """)
    sf = write(folder / "Stackfile.toml", f"""
        [services.show]
        cmd = ["{PY}", "show.py"]
        restart = "no"
    """)
    sid = stack_id(sf)
    reaper.stacks.append(sid)
    run = Run(reaper, ["up", "--no-watch", *args], folder, env=env)
    assert run.wait(45) == 0
    assert_nothing_left(sid)
    return b"".join(run.raw), run


@pytest.mark.timeout(90)
def test_colour_rules(tmp_path, reaper):
    # FORCE_COLOR=1 without a terminal: colour on (and the child sees FORCE_COLOR)
    raw, run = _color_run(reaper, tmp_path / "force", [], clean_env(FORCE_COLOR="1"))
    assert b"\x1b[1m" in raw  # the bold `system` prefix
    assert re.search(rb"\x1b\[\d+m[\d:]{8} show\.1 +\|\x1b\[0m child NO_COLOR=- FORCE_COLOR=1\n", raw), raw

    # NO_COLOR wins over FORCE_COLOR; the children are told NO_COLOR=1
    raw, run = _color_run(reaper, tmp_path / "nocolor", [], clean_env(FORCE_COLOR="1", NO_COLOR="1"))
    assert b"\x1b[" not in raw
    assert "child NO_COLOR=1 FORCE_COLOR=1" in run.of("show.1")

    # --no-color: no colour, and the children get NO_COLOR=1
    raw, run = _color_run(reaper, tmp_path / "flag", ["--no-color"], clean_env(FORCE_COLOR="1"))
    assert b"\x1b[" not in raw
    assert run.of("show.1") == ["child NO_COLOR=1 FORCE_COLOR=1"]

    # neither: not a terminal, so no colour, and the child is told nothing
    raw, run = _color_run(reaper, tmp_path / "plain", [], clean_env())
    assert b"\x1b[" not in raw
    assert run.of("show.1") == ["child NO_COLOR=- FORCE_COLOR=-"]

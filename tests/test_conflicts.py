"""End-to-end tests of port conflicts with real listeners: `scan`, the three strategies,
history.jsonl, reservations while a dependent waits, and migration while running.

Every port holder here is a process the test started itself; after each strategy the test
checks that none of them died (but the one `aggressive` may stop)."""

from __future__ import annotations

import errno
import getpass
import json
import re
import socket
import threading
import time

import pytest

from helpers_runtime import assert_nothing_left
from helpers_stack import (PY, Bystanders, Holder, alive, clean_env, cli, free_base, history, install, leave_stale,
                           listen_cmd, rc, stack_id, stack_up, wait_for, write)

HOLDER_KEYS = {"pid", "user", "name", "cmdline", "class"}


def run(*args, folder, timeout=30):
    return cli(*args, cwd=folder, env=clean_env(), timeout=timeout)


def sleeper(reaper):
    p = reaper.popen(["sleep", "300"], env=clean_env())
    threading.Thread(target=p.wait, daemon=True).start()
    return p


def other_stack(reaper, folder, port):
    """Another revostack stack, up, whose service listens on ``port``: (Run, service pid)."""
    install(folder)
    write(folder / "Stackfile.toml", f"""
        [stack]
        name = "neighbour"
        stop_timeout = 5

        [services.svc]
        cmd = {listen_cmd(folder)}
        port = {port}
        fallback = []
    """)
    up = stack_up(reaper, folder)
    pid, got = up.started("svc.1")
    assert got == port
    up.wait_line(r"^svc\.1 healthy", 30, system=True)
    return up, pid


def stop(up, folder):
    down = run("down", folder=folder, timeout=60)
    assert down.returncode == 0, rc(down)
    assert up.wait(30) == 0, up.text


def stackfile(folder, services: dict[str, dict], strategy: str | None = None):
    install(folder)
    text = '[stack]\nname = "main"\nstop_timeout = 3\n' + (f'strategy = "{strategy}"\n' if strategy else "")
    for name, keys in services.items():
        text += f"\n[services.{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
    path = folder / "Stackfile.toml"
    path.write_text(text)
    return path


@pytest.mark.timeout(90)
def test_scan_lists_holders_and_classifies_them(tmp_path, reaper):
    base = free_base(tuple(range(0, 6)))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    neighbour, neighbour_pid = other_stack(reaper, b, base)  # another stack holds web's port
    sf = stackfile(a, {
        "web": {"cmd": listen_cmd(a), "port": base, "fallback": f"[{base + 3}]"},
        "api": {"cmd": listen_cmd(a), "port": base + 1, "fallback": f"[{base + 4}]"},
        "own": {"cmd": listen_cmd(a), "port": base + 2, "fallback": f"[{base + 5}]"},
    })
    sid = stack_id(sf)
    plain = Holder(reaper, a, base + 1)  # a program that is no stack's
    stale = leave_stale(reaper, a, "own")["own"]  # this stack's leftover: `up own`, SIGKILLed
    me = getpass.getuser()

    r = run("scan", folder=a)  # compact: a row per service, fallbacks summed up
    assert r.returncode == 1, rc(r)  # a preferred port is taken
    assert "Traceback" not in r.stdout + r.stderr
    for name, port, pid, cls, fallback in (("web", base, neighbour_pid, "external", base + 3),
                                           ("api", base + 1, plain.pid, "external", base + 4),
                                           ("own", base + 2, stale, "ours-stale", base + 5)):
        assert re.search(rf"^{name}\s+{port}\s+held by pid {pid} python\S* \({cls}\)\s+{fallback} free$",
                         r.stdout, re.M), f"{port}\n{r.stdout}"
    assert len(r.stdout.splitlines()) == 4

    r = run("scan", "--all", folder=a)  # every port on its own row
    assert r.returncode == 1, rc(r)
    for port, pid, cls in ((base, neighbour_pid, "external"), (base + 1, plain.pid, "external"),
                           (base + 2, stale, "ours-stale")):
        assert re.search(rf"^{port}\s+\S+\s+preferred\s+held\s+{pid}\s+{me}\s+python\S*\s+{cls}\s+\S*python",
                         r.stdout, re.M), f"{port}\n{r.stdout}"
    for port in (base + 3, base + 4, base + 5):
        assert re.search(rf"^{port}\s+\S+\s+fallback\s+free\b", r.stdout, re.M), f"{port}\n{r.stdout}"

    j = run("scan", "--json", folder=a)
    assert j.returncode == 1, rc(j)
    rows = {row["port"]: row for row in json.loads(j.stdout)["ports"]}
    assert set(rows) == {base + i for i in range(6)}
    assert (rows[base]["service"], rows[base]["role"], rows[base]["status"]) == ("web", "preferred", "held")
    assert (rows[base + 3]["service"], rows[base + 3]["role"], rows[base + 3]["status"]) == ("web", "fallback", "free")
    assert rows[base + 3]["holder"] is None
    for port, pid, cls in ((base, neighbour_pid, "external"), (base + 1, plain.pid, "external"),
                           (base + 2, stale, "ours-stale")):
        h = rows[port]["holder"]
        assert set(h) == HOLDER_KEYS, h
        assert (h["pid"], h["user"], h["class"]) == (pid, me, cls), h
        assert h["name"].startswith("python") and "listen.py" in h["cmdline"], h

    # a range of 1000 ports answers quickly
    lo = base - 500
    t0 = time.monotonic()
    rr = run("scan", "--range", f"{lo}-{lo + 999}", "--json", folder=a)
    took = time.monotonic() - t0
    assert rr.returncode == 0, rc(rr)
    ranged = json.loads(rr.stdout)["ports"]
    assert len(ranged) == 1000 and {x["role"] for x in ranged} == {"range"}
    held = {x["port"]: x["holder"]["pid"] for x in ranged if x["status"] == "held"}
    assert held.get(base) == neighbour_pid and held.get(base + 1) == plain.pid and held.get(base + 2) == stale, held
    assert took < 5, took
    text = run("scan", "--range", f"{lo}-{lo + 999}", folder=a)
    assert re.search(r"\d+ of 1000 ports free", text.stdout), rc(text)

    # once every holder is gone, nothing preferred is taken: exit 0
    down = run("down", folder=a)
    assert down.returncode == 0 and f"stopped pid {stale} " in down.stdout, rc(down)
    stop(neighbour, b)
    plain.proc.kill()
    wait_for(lambda: not plain.alive(), 10, what="the holder to exit")
    r = wait_for(lambda: (lambda x: x if x.returncode == 0 else None)(run("scan", folder=a)), 15,
                 what="scan to find every port free")
    assert "held" not in r.stdout
    assert_nothing_left(sid)


@pytest.mark.timeout(60)
def test_conservative_never_stops_anything(tmp_path, reaper):
    base = free_base(tuple(range(0, 4)))
    sf = stackfile(tmp_path, {
        "web": {"cmd": listen_cmd(tmp_path), "port": base, "fallback": f"[{base + 1}]"},
        "api": {"cmd": listen_cmd(tmp_path), "port": base + 2, "fallback": f"[{base + 3}]"},
    })
    sid = stack_id(sf)
    stale = leave_stale(reaper, tmp_path, "web")["web"]  # this stack's leftover on web's port
    ext = Holder(reaper, tmp_path, base + 2)
    by = Bystanders(ext, sleeper(reaper))

    up = stack_up(reaper, tmp_path, "--strategy", "conservative")
    up.wait_line(rf"pid {stale} \(python\S*\) is left from an earlier run; conservative: not stopped", 30)
    assert up.started("web.1")[1] == base + 1
    assert up.started("api.1")[1] == base + 3
    up.wait_line(r"^api\.1 healthy", 30, system=True)
    up.wait_line(r"^web\.1 healthy", 30, system=True)
    assert alive(stale) and by.died() == []
    hist = history(tmp_path)
    web = [h for h in hist if h["service"] == "web"]
    api = [h for h in hist if h["service"] == "api"]
    assert len(web) == 1 and len(api) == 1, hist
    assert (web[0]["port"], web[0]["class"], web[0]["strategy"], web[0]["action"]) == \
        (base, "ours-stale", "conservative", "moved"), web
    assert web[0]["holder"]["pid"] == stale and str(base + 1) in web[0]["result"]
    assert (api[0]["port"], api[0]["class"], api[0]["action"], api[0]["holder"]["pid"]) == \
        (base + 2, "external", "moved", ext.pid), api
    assert all({"time", "service", "port", "holder", "class", "strategy", "action", "result"} <= set(h) for h in hist)
    stop(up, tmp_path)
    assert by.died() == []

    # no fallback free: fail with exit 3, naming the holder; nothing is stopped
    stackfile(tmp_path, {"api": {"cmd": listen_cmd(tmp_path), "port": base + 2, "fallback": "[]"}})
    r = run("up", "--no-watch", "--strategy", "conservative", folder=tmp_path, timeout=60)
    assert r.returncode == 3, rc(r)
    assert re.search(rf"api\.1: {base + 2} held by pid {ext.pid} python\S* \(external\)", r.stderr), rc(r)
    assert "Traceback" not in r.stderr + r.stdout
    last = history(tmp_path)[-1]
    assert (last["service"], last["port"], last["action"], last["holder"]["pid"]) == ("api", base + 2, "failed", ext.pid)
    assert by.died() == []
    assert_nothing_left(sid)


@pytest.mark.timeout(60)
def test_intelligent_reclaims_from_ours_stale_and_moves_from_external(tmp_path, reaper):
    base = free_base(tuple(range(0, 4)))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    sf = stackfile(a, {
        "web": {"cmd": listen_cmd(a), "port": base, "fallback": f"[{base + 1}]"},
        "api": {"cmd": listen_cmd(a), "port": base + 2, "fallback": f"[{base + 3}]"},
    })
    sid = stack_id(sf)
    stale = leave_stale(reaper, a, "web")["web"]
    neighbour, neighbour_pid = other_stack(reaper, b, base + 2)  # another stack: external
    by = Bystanders(neighbour_pid, sleeper(reaper))

    up = stack_up(reaper, a)  # intelligent is the default
    up.wait_line(rf"stopped pid {stale} \(python\S*\)", 30)
    assert up.started("web.1")[1] == base  # the preferred port, taken back
    assert up.started("api.1")[1] == base + 3  # moved away from the other stack's process
    up.wait_line(r"^web\.1 healthy", 30, system=True)
    assert not alive(stale)
    assert by.died() == []

    hist = history(a)
    web = [h for h in hist if h["service"] == "web"]
    api = [h for h in hist if h["service"] == "api"]
    assert len(web) == 1 and len(api) == 1, hist
    assert (web[0]["port"], web[0]["class"], web[0]["strategy"], web[0]["action"], web[0]["holder"]["pid"]) == \
        (base, "ours-stale", "intelligent", "reclaimed", stale), web
    assert (api[0]["port"], api[0]["class"], api[0]["strategy"], api[0]["action"], api[0]["holder"]["pid"]) == \
        (base + 2, "external", "intelligent", "moved", neighbour_pid), api
    assert str(base + 3) in api[0]["result"]

    # history: the table, -n 1 and --json
    last = run("history", "-n", "1", "--json", folder=a)
    assert last.returncode == 0 and json.loads(last.stdout) == hist[-1:], rc(last)
    table = run("history", "-n", "1", folder=a)
    assert table.returncode == 0, rc(table)
    body = [line for line in table.stdout.splitlines() if re.match(r"^\d{4}-", line)]
    assert len(body) == 1 and hist[-1]["action"] in body[0], rc(table)
    full = run("history", folder=a)
    assert "reclaimed" in full.stdout and "moved" in full.stdout, rc(full)

    stop(up, a)
    assert by.died() == []
    stop(neighbour, b)
    assert_nothing_left(sid)


@pytest.mark.timeout(60)
def test_aggressive_stops_only_a_same_program_holder(tmp_path, reaper):
    base = free_base(tuple(range(0, 4)))
    sf = stackfile(tmp_path, {
        "web": {"cmd": listen_cmd(tmp_path), "port": base, "fallback": f"[{base + 1}]"},
        "api": {"cmd": listen_cmd(tmp_path), "port": base + 2, "fallback": f"[{base + 3}]"},
    })
    sid = stack_id(sf)
    same = Holder(reaper, tmp_path, base)  # `python listen.py`: the program web runs
    different = Holder(reaper, tmp_path, base + 2, script="other.py")  # another program
    by = Bystanders(same, different, sleeper(reaper))

    up = stack_up(reaper, tmp_path, "--strategy", "aggressive")
    assert up.started("web.1")[1] == base
    assert up.started("api.1")[1] == base + 3
    up.wait_line(r"^web\.1 healthy", 30, system=True)
    assert re.search(rf"web\.1: port {base} was held by pid {same.pid} python\S* \(external\)", up.text), up.text
    assert not same.alive()
    assert different.alive()
    assert by.died(allowed=(same.pid,)) == []

    hist = history(tmp_path)
    web = [h for h in hist if h["service"] == "web"]
    api = [h for h in hist if h["service"] == "api"]
    assert len(web) == 1 and len(api) == 1, hist
    assert (web[0]["port"], web[0]["class"], web[0]["strategy"], web[0]["action"], web[0]["holder"]["pid"]) == \
        (base, "external", "aggressive", "stopped", same.pid), web
    assert web[0]["result"] == "ok"
    assert (api[0]["port"], api[0]["class"], api[0]["action"], api[0]["holder"]["pid"]) == \
        (base + 2, "external", "moved", different.pid), api

    stop(up, tmp_path)
    assert by.died(allowed=(same.pid,)) == []
    assert_nothing_left(sid)


@pytest.mark.timeout(60)
def test_port_is_reserved_while_a_dependent_waits(tmp_path, reaper):
    base = free_base((0, 1))
    sf = stackfile(tmp_path, {
        "db": {"cmd": json.dumps([PY, "-c", "import time; time.sleep(2.5); print('READY', flush=True); "
                                            "time.sleep(300)"]),
               "health": '{ log = "READY" }'},
        "web": {"cmd": listen_cmd(tmp_path), "port": base, "fallback": f"[{base + 1}]",
                "depends_on": '{ db = "healthy" }'},
    })
    sid = stack_id(sf)
    up = stack_up(reaper, tmp_path)
    up.started("db.1")
    errors = []
    for host in ("127.0.0.1", "0.0.0.0"):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, base))
        except OSError as e:
            errors.append(e.errno)
        finally:
            s.close()
    waiting = not any(line.startswith(("db.1 healthy", "web.1 started")) for line in up.system())
    assert waiting, "the dependency got healthy too soon for this test to mean anything"
    assert errors == [errno.EADDRINUSE, errno.EADDRINUSE]
    pid, port = up.started("web.1", 30)
    assert port == base
    up.wait_line(rf"^\d\d:\d\d:\d\d web\.1 +\| LISTENING {base} pid={pid}", 30)
    stop(up, tmp_path)
    assert_nothing_left(sid)


@pytest.mark.timeout(60)
def test_migration_while_running_moves_and_restarts_dependents(tmp_path, reaper):
    base = free_base((0, 1, 2))
    sf = stackfile(tmp_path, {
        "flaky": {"cmd": listen_cmd(tmp_path), "port": base, "fallback": f"[{base + 1}, {base + 2}]"},
        "client": {"cmd": json.dumps([PY, "-c", "import os, time; print('client sees FLAKY_PORT=' + "
                                                "os.environ['FLAKY_PORT'], flush=True); time.sleep(300)"]),
                   "depends_on": '{ flaky = "started" }'},
    })
    sid = stack_id(sf)
    up = stack_up(reaper, tmp_path)
    first, port = up.started("flaky.1")
    assert port == base
    up.wait_line(rf"flaky\.1 +\| LISTENING {base} ", 30)
    up.wait_line(rf"client\.1 +\| client sees FLAKY_PORT={base}$", 30)
    middle = Holder(reaper, tmp_path, base + 1)  # the first fallback is taken too: skip it
    (tmp_path / "crash.flaky.1").touch()  # flaky lets go of its port...
    up.wait_line(r"flaky\.1 +\| CLOSED", 30)
    grabber = Holder(reaper, tmp_path, base, wait=True)  # ...someone else takes it...
    by = Bystanders(middle, grabber)
    (tmp_path / "grabbed.flaky.1").touch()  # ...and flaky dies of "Address already in use"

    up.wait_line(rf"^flaky\.1: port {base} is in use by pid {grabber.pid} python\S* \(external\): moved to {base + 2}$",
                 30, system=True)
    up.wait_line(rf"flaky\.1 +\| LISTENING {base + 2} ", 30)
    up.wait_line(rf"client\.1 +\| client sees FLAKY_PORT={base + 2}$", 30)
    assert len([s for s in up.system() if s.startswith("client.1 started")]) == 2

    ports = json.loads(run("ports", "--json", folder=tmp_path).stdout)
    assert ports["live"] is True
    row = next(r for r in ports["instances"] if r["instance"] == "flaky.1")
    assert (row["preferred"], row["assigned"]) == (base, base + 2), row
    hist = [h for h in history(tmp_path) if h["service"] == "flaky"]
    assert len(hist) == 1 and (hist[0]["port"], hist[0]["action"], hist[0]["class"], hist[0]["holder"]["pid"]) == \
        (base, "moved", "external", grabber.pid), hist
    assert by.died() == []
    stop(up, tmp_path)
    assert by.died() == []
    assert_nothing_left(sid)


def test_compact_scan_sums_up_fallbacks_as_ranges_and_names_taken_ones():
    from revostack.commands.inspect import _compact_scan, _ranges

    assert _ranges([5, 1, 2, 3, 7, 8]) == "1–3, 5, 7–8"
    assert _ranges([]) == ""
    holder = {"pid": 42, "user": "me", "name": "nginx", "cmdline": "nginx", "class": "external"}
    rows = [{"port": 8000, "service": "web", "role": "preferred", "status": "free", "holder": None},
            {"port": 8001, "service": "web", "role": "preferred", "status": "held", "holder": holder}]
    rows += [{"port": p, "service": "web", "role": "fallback", "status": "held" if p == 8005 else "free",
              "holder": holder if p == 8005 else None} for p in range(8002, 8011)]
    rows += [{"port": 9000, "service": "db", "role": "preferred", "status": "free", "holder": None}]
    assert _compact_scan(rows) == [
        ["web", 8000, "free", "8002–8004, 8006–8010 free; 8005 held by pid 42 nginx (external)"],
        ["", 8001, "held by pid 42 nginx (external)", ""],
        ["db", 9000, "free", "none"],
    ]


@pytest.mark.parametrize("addr", ["127.0.0.1", "0.0.0.0", "127.0.0.2"])
@pytest.mark.parametrize("listen", [True, False])
@pytest.mark.parametrize("reuse", [True, False])
def test_one_bind_on_the_wildcard_says_what_two_would(addr, listen, reuse):
    """probe.is_free binds 0.0.0.0 only for an IPv4 host: a wildcard bind that succeeds must
    imply that the host's would, whoever holds the port and how."""
    import socket

    from revostack.probe import can_bind, is_free

    holder = socket.socket()
    try:
        if reuse:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind((addr, 0))
        if listen:
            holder.listen()
        port = holder.getsockname()[1]
        both = can_bind(port, "127.0.0.1") and can_bind(port, "0.0.0.0")
        assert is_free(port, "127.0.0.1") == both
        assert not (can_bind(port, "0.0.0.0") and not can_bind(port, "127.0.0.1"))
    finally:
        holder.close()

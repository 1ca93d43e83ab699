"""One container instance, run as a process the supervisor supervises like any other.

``python -m revostack.container`` (its spec in ``REVOSTACK_CONTAINER``, JSON) creates the
container (labelled, published on the planned port, on the stack's network), attaches to it,
starts it, and then is its stand-in on the host: the container's output is its output, what is
typed into it goes to the container, a signal it gets is sent to the container, and it exits
with the container's exit code once the container is removed. So dependency order, health
checks, restarts, logs, ``connect``, blue/green and ``stop`` need nothing new.

Stopping: the service's ``stop_signal`` (or SIGTERM/SIGINT) goes to the container; after
``stop_timeout`` the engine kills it. The supervisor gives this helper some seconds more before
it kills the helper itself, and removes by label whatever a killed helper left.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import struct
import sys
import time

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
           signal.SIGWINCH)
EXIT_ENGINE = 125  # as `docker run` exits when the engine refuses


def say(text: str) -> None:
    os.write(2, f"revostack: {text}\n".encode())


def main() -> int:
    from revostack import engine

    spec = json.loads(os.environ["REVOSTACK_CONTAINER"])
    try:
        client = engine.connect()
    except engine.Unavailable as e:
        say(str(e))
        return EXIT_ENGINE
    try:
        cid = create(client, spec)
    except engine.EngineError as e:
        say(f"{spec['instance']}: {e}")
        return EXIT_ENGINE
    try:
        return run(client, cid, spec)
    finally:
        try:
            engine.remove(client, cid)
        except Exception as e:  # the supervisor removes it by label at the latest
            say(f"could not remove container {spec['name']}: {engine.reason(e)}")


def create(client, spec: dict) -> str:
    """Create the container (removing a stale one of ours by the same name first)."""
    from docker.errors import APIError, NotFound

    from revostack import engine
    from revostack.procs import is_alive

    api = client.api
    name = spec["name"]
    try:
        old = api.inspect_container(name)
        labels = old["Config"].get("Labels") or {}
        if labels.get(engine.LABEL_STACK) != spec["labels"][engine.LABEL_STACK]:
            raise engine.EngineError(f'a container named "{name}" exists and is not this stack\'s: left alone; '
                                     "remove or rename it")
        helper = engine.helper_of(labels)
        if (helper and helper != os.getpid() and is_alive(helper)) or spec.get("keep_stale"):
            # another generation of the instance (blue/green) has the name, or a leftover the
            # conservative strategy keeps
            name = f"{name}-{os.getpid()}"
        else:
            engine.remove(client, old["Id"])
    except NotFound:
        pass
    image = spec["image"]
    if not engine.image_present(client, image):
        if spec["pull"] == "never":
            raise engine.EngineError(f'image "{image}" is not present and pull = "never"')
        say(f"pulling {image}")
        engine.pull(client, image)
    ports, bindings = None, None
    if spec["publish"] is not None and spec["container_port"]:
        cport = int(spec["container_port"])
        ports, bindings = [(cport, "tcp")], {cport: (spec["host"] or "0.0.0.0", spec["publish"])}
    binds = {v["source"]: {"bind": v["target"], "mode": "ro" if v["read_only"] else "rw"} for v in spec["volumes"]}
    try:
        host_config = api.create_host_config(port_bindings=bindings, binds=binds or None, network_mode=spec["network"],
                                             extra_hosts={"host.docker.internal": "host-gateway"})
        networking = api.create_networking_config({spec["network"]: api.create_endpoint_config(
            aliases=spec["aliases"])})
        cmd = spec["cmd"]
        command = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else (cmd or None)
        labels = {**spec["labels"], engine.LABEL_HELPER: str(os.getpid())}
        made = api.create_container(image, command=command, environment=spec["env"], labels=labels, name=name,
                                    ports=ports, host_config=host_config, networking_config=networking,
                                    stdin_open=True, tty=spec["tty"], stop_signal=spec["stop_signal"])
    except APIError as e:
        raise engine.EngineError(engine.reason(e)) from None
    return made["Id"]


def run(client, cid: str, spec: dict) -> int:
    """Attach, start, pump output/input/signals until the container's output ends; its code."""
    from docker.errors import APIError

    from revostack import engine

    api = client.api
    tty = spec["tty"]
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    for s in SIGNALS:
        signal.signal(s, lambda *_: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    stream = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1, "logs": 1})
    sock = getattr(stream, "_sock", stream)
    if tty and os.isatty(0):
        import tty as ttymod

        ttymod.setraw(0)  # every key goes to the container's own terminal, which does the rest
    try:
        api.start(cid)
    except APIError as e:
        say(f"{spec['instance']}: {engine.reason(e)}")
        return EXIT_ENGINE
    if tty:
        _resize(api, cid)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "out")
    sel.register(wake_r, selectors.EVENT_READ, "signal")
    try:
        sel.register(0, selectors.EVENT_READ, "in")
    except (ValueError, OSError):
        pass
    stop_sig = spec["stop_signal"]
    deadline: float | None = None
    killed = False
    pending = b""
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        events = sel.select(timeout)
        if deadline is not None and time.monotonic() >= deadline and not killed:
            killed = True
            _kill(api, cid, "SIGKILL")
        done = False
        for key, _ in events:
            if key.data == "out":
                data = sock.recv(65536)
                if not data:
                    done = True
                    break
                if tty:
                    _write(data)
                else:
                    pending = _demux(pending + data)
            elif key.data == "in":
                try:
                    data = os.read(0, 65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(0)
                else:
                    try:
                        sock.sendall(data)
                    except OSError:
                        sel.unregister(0)
            else:
                got = os.read(wake_r, 512)
                for signum in got:
                    if signum == signal.SIGWINCH:
                        if tty:
                            _resize(api, cid)
                        continue
                    name = signal.Signals(signum).name
                    if signum in (signal.SIGTERM, signal.SIGINT) or name == stop_sig:
                        if deadline is None:
                            deadline = time.monotonic() + float(spec["stop_timeout"])
                            name = stop_sig if signum in (signal.SIGTERM, signal.SIGINT) else name
                        elif signum == signal.SIGINT:
                            deadline = time.monotonic()  # asked twice: kill now
                    _kill(api, cid, name)
        if done:
            break
    try:
        code = api.wait(cid, timeout=max(5.0, float(spec["stop_timeout"]) + 5)).get("StatusCode", 1)
    except Exception:
        code = 137 if killed else 1
    return int(code)


def _demux(buf: bytes) -> bytes:
    """The attach stream without a terminal: frames of [stream, 0, 0, 0, size]; the payloads, in
    order, to our output. Returns what is left of an incomplete frame."""
    view = memoryview(buf)
    pos = 0
    out = []
    while len(buf) - pos >= 8:
        size = struct.unpack(">L", view[pos + 4:pos + 8])[0]
        if len(buf) - pos - 8 < size:
            break
        out.append(bytes(view[pos + 8:pos + 8 + size]))
        pos += 8 + size
    if out:
        _write(b"".join(out))
    return bytes(view[pos:])


def _write(data: bytes) -> None:
    while data:
        try:
            n = os.write(1, data)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        except OSError:
            return
        data = data[n:]


def _kill(api, cid: str, sig: str) -> None:
    try:
        api.kill(cid, signal=sig)
    except Exception:
        pass  # not running any more


def _resize(api, cid: str) -> None:
    import fcntl
    import termios

    try:
        rows, cols = struct.unpack("HHHH", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))[:2]
        if rows and cols:
            api.resize(cid, height=rows, width=cols)
    except Exception:
        pass


if __name__ == "__main__":
    sys.exit(main())


def exec_in(cid: str, command: list[str]) -> int:
    """``revostack run -s SERVICE -- CMD`` on a container service: CMD inside its running
    container (as ``docker exec``), with this terminal when there is one; its exit code."""
    from revostack import engine

    client = engine.connect()
    api = client.api
    tty = os.isatty(0) and os.isatty(1)
    try:
        ex = api.exec_create(cid, command, stdin=True, tty=tty)
        stream = api.exec_start(ex["Id"], tty=tty, socket=True)
    except Exception as e:
        say(f"run: {engine.reason(e)}")
        return EXIT_ENGINE
    sock = getattr(stream, "_sock", stream)
    saved = None
    if tty:
        import termios
        import tty as ttymod

        saved = termios.tcgetattr(0)
        ttymod.setraw(0)
        try:
            rows, cols = struct.unpack("HHHH", __import__("fcntl").ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))[:2]
            api.exec_resize(ex["Id"], height=rows, width=cols)
        except Exception:
            pass
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, "out")
    try:
        sel.register(0, selectors.EVENT_READ, "in")
    except (ValueError, OSError):  # /dev/null or a file: nothing to wait for
        if not tty:
            try:
                sock.shutdown(1)
            except OSError:
                pass
    pending = b""
    try:
        while True:
            for key, _ in sel.select():
                if key.data == "in":
                    data = os.read(0, 65536)
                    if data:
                        sock.sendall(data)
                    else:
                        sel.unregister(0)
                        try:
                            sock.shutdown(1)  # end of input reaches the command
                        except OSError:
                            pass
                    continue
                data = sock.recv(65536)
                if not data:
                    raise EOFError
                if tty:
                    _write(data)
                else:
                    pending = _demux(pending + data)
    except EOFError:
        pass
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)
    code = api.exec_inspect(ex["Id"]).get("ExitCode")
    return int(code) if code is not None else 1

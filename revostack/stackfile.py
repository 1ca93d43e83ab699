"""The Stackfile model: Stackfile.toml -> frozen records (revostack.record), with every problem located.

Layer 0: stdlib + tomlkit only. ``load(path)`` returns a ``Stack`` or raises ``ConfigError``
holding *all* the problems found, each as ``FILE:LINE:COL: key.path: message``.
"""

from __future__ import annotations

import math
import os
import _signal  # signal.py builds enums on import (~2 ms); names and numbers are all we need
import re
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from revostack import dotenv, graph, interp
from revostack.errors import ConfigError, Problem, did_you_mean
from revostack.parsecache import sha1
from revostack.record import factory, record, replace

if TYPE_CHECKING:
    from revostack.locate import Locator

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Strategy(str, Enum):
    CONSERVATIVE = "conservative"
    INTELLIGENT = "intelligent"
    AGGRESSIVE = "aggressive"


class Restart(str, Enum):
    NO = "no"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


class Condition(str, Enum):
    STARTED = "started"
    HEALTHY = "healthy"
    COMPLETED = "completed"


class Handoff(str, Enum):
    NONE = "none"
    PROXY = "proxy"  # revostack listens on the public port and forwards to a private one
    SOCKET = "socket"  # revostack binds the public port and passes it as fd 3 (socket activation)


class Pull(str, Enum):
    MISSING = "missing"
    ALWAYS = "always"
    NEVER = "never"


class HealthKind(str, Enum):
    HTTP = "http"
    TCP = "tcp"
    CMD = "cmd"
    LOG = "log"


@record
class Health:
    kind: HealthKind
    target: str  # URL, host:port, command or regex, uninterpolated
    interval: float = 1.0
    timeout: float = 2.0
    retries: int = 3
    start_period: float = 60.0
    implicit: bool = False  # the default TCP check of a service with a port


@record
class Dependency:
    name: str
    condition: Condition


@record
class Volume:
    """``SRC:DST[:ro]``: a host path (absolute here) or a named volume, mounted at ``target``."""

    source: str
    target: str
    read_only: bool = False
    host_path: bool = True

    def spec(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


@record
class Service:
    name: str
    cmd: str | tuple[str, ...]
    cwd: Path
    env: Mapping[str, str] = factory(dict)  # raw, interpolated at plan time
    dotenv: Mapping[str, str] = factory(dict)  # merged env_file values
    port: int | None = None
    fallback: tuple[int, ...] = ()
    port_env: str = "PORT"
    depends_on: tuple[Dependency, ...] = ()
    health: Health | None = None
    restart: Restart = Restart.ON_FAILURE
    max_restarts: int = 5
    backoff: float = 0.5
    watch: tuple[str, ...] = ()
    watch_ignore: tuple[str, ...] = ()
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 10.0
    scale: int = 1
    autostart: bool = True
    pty: bool = False
    handoff: Handoff = Handoff.NONE
    drain_timeout: float = 10.0
    image: str | None = None  # a container of this image instead of a process
    container_port: int | None = None  # where the program listens inside the container
    volumes: tuple[Volume, ...] = ()
    pull: Pull = Pull.MISSING

    @property
    def instances(self) -> list[str]:
        return [f"{self.name}.{i}" for i in range(1, self.scale + 1)]

    @property
    def signal_number(self) -> int:
        return int(getattr(_signal, self.stop_signal))


@record
class Stack:
    name: str
    path: Path  # the Stackfile (or Procfile)
    services: Mapping[str, Service]
    host: str = "127.0.0.1"
    strategy: Strategy = Strategy.INTELLIGENT
    stop_timeout: float = 10.0
    env: Mapping[str, str] = factory(dict)
    dotenv: Mapping[str, str] = factory(dict)
    kind: str = "stackfile"  # or "procfile"
    files: tuple[Path, ...] = ()  # what it was read from: the Stackfile and every env file (for reload)

    @property
    def root(self) -> Path:
        return self.path.parent

    @cached_property  # asked for by every instance's env: the path is resolved once
    def id(self) -> str:
        """Stable id of this stack: its name plus a hash of the Stackfile's absolute path."""
        return f"{self.name}-{sha1(str(self.path.resolve()).encode()).hexdigest()[:8]}"

    @property
    def deps(self) -> dict[str, list[str]]:
        return {n: [d.name for d in s.depends_on] for n, s in self.services.items()}

    def levels(self, names: set[str] | None = None) -> list[list[str]]:
        deps = self.deps
        if names is not None:
            deps = {n: [d for d in ds if d in names] for n, ds in deps.items() if n in names}
        return graph.levels(deps)

    def selection(self, names: list[str] | None = None) -> set[str]:
        """``up`` with no names: every autostart service and what it needs; else the named ones
        and what they need. Unknown names raise ConfigError with a suggestion."""
        if not names:
            names = [n for n, s in self.services.items() if s.autostart]
        unknown = [n for n in names if n not in self.services]
        if unknown:
            raise ConfigError(
                Problem(str(self.path), f'unknown service "{n}"{did_you_mean(n, self.services)}') for n in unknown
            )
        return graph.closure(self.deps, names)


# ---------------------------------------------------------------------------------------------

IMPLICIT_TCP = Health(HealthKind.TCP, "${host}:${port}", implicit=True)  # a service with a port, no health table
STACK_KEYS = {"name", "env_file", "host", "strategy", "stop_timeout", "restart", "max_restarts", "backoff", "handoff"}
SERVICE_KEYS = {
    "cmd", "cwd", "env", "env_file", "port", "fallback", "port_env", "depends_on", "health",
    "restart", "max_restarts", "backoff", "watch", "watch_ignore", "stop_signal", "stop_timeout",
    "scale", "autostart", "pty", "handoff", "drain_timeout", "image", "container_port", "volumes", "pull",
}
CONTAINER_KEYS = ("container_port", "volumes", "pull")
VOLUME_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
IMAGE_RE = re.compile(r"[^\s]+")
HEALTH_KEYS = {"http", "tcp", "cmd", "log", "interval", "timeout", "retries", "start_period"}
TOP_KEYS = {"stack", "env", "services"}
SIGNALS = {n for n in dir(_signal) if n.startswith("SIG") and not n.startswith("SIG_")}


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def read_text(path: Path) -> str:
    """The file's text, or ConfigError with one clear line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "no such file")]) from None
    except IsADirectoryError:
        raise ConfigError([Problem(str(path), "is a directory, not a file")]) from None
    except OSError as e:
        raise ConfigError([Problem(str(path), f"cannot be read: {e.strerror or e}")]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError([Problem(str(path), "not valid UTF-8", line, col)]) from None


class _InvalidToml(Exception):
    pass


def _toml_loads(text: str) -> dict:
    import tomllib

    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        raise _InvalidToml from None


class _Loader:
    def __init__(self, path: Path, text: str, environ: Mapping[str, str]):
        self.path = path
        self.display = _display(path)
        self.text = text
        self.environ = environ
        self._loc: Locator | None = None
        self.problems: list[Problem] = []
        self.files: list[Path] = [path]

    # -- reporting ---------------------------------------------------------------------------
    @property
    def loc(self) -> Locator:
        """The key locator, built on the first problem: a valid file never needs it."""
        if self._loc is None:
            from revostack.locate import Locator

            self._loc = Locator(self.text)
        return self._loc

    def err(self, path: tuple[Any, ...], message: str, needle: str | None = None) -> None:
        line, col = self.loc.find(path, needle)
        self.problems.append(Problem(self.display, message, line, col, ".".join(str(p) for p in path)))

    def unknown_keys(self, table: Mapping[str, Any], allowed: set[str], path: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                self.err(path + (key,), f'unknown key "{key}"{did_you_mean(key, allowed)}')

    # -- typed getters: None when absent or wrong (wrong is reported) ------------------------
    def get(self, table: Mapping[str, Any], key: str, path: tuple[str, ...], types: tuple[type, ...], what: str) -> Any:
        if key not in table:
            return None
        value = table[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            self.err(path + (key,), f"must be {what}, not {_type_name(value)}")
            return None
        return value

    def number(self, table, key, path, minimum: float = 0.0, integer: bool = False) -> Any:
        types = (int,) if integer else (int, float)
        value = self.get(table, key, path, types, "an integer" if integer else "a number")
        if isinstance(value, float) and not math.isfinite(value):
            self.err(path + (key,), f"must be a finite number, not {value}")
            return None
        if value is not None and value < minimum:
            self.err(path + (key,), f"must be at least {minimum:g}, not {value}")
            return None
        return value

    def string_list(self, table, key, path, scalar_ok: bool = False) -> tuple[str, ...] | None:
        """An array of strings (or, with ``scalar_ok``, one string). A lone string where an array
        is wanted is an error with the fix: ``use ["**/*.py"]``."""
        value = table.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            if scalar_ok:
                return (value,)
            self.err(path + (key,), f"must be an array of strings, not a string: use [{_toml(value)}]")
            return None
        if not isinstance(value, list):
            self.err(path + (key,), f"must be {'a string or ' if scalar_ok else ''}an array of strings, "
                     f"not {_type_name(value)}")
            return None
        for v in value:
            if not isinstance(v, str):
                self.err(path + (key,), f"entries must be strings, not {_type_name(v)}: use [{_toml(str(v))}]",
                         needle=str(v).lower() if isinstance(v, bool) else str(v))
                return None
        return tuple(value)

    # -- sections ----------------------------------------------------------------------------
    def env_files(self, table, path, base: Path) -> dict[str, str]:
        files = self.string_list(table, "env_file", path, scalar_ok=True)
        merged: dict[str, str] = {}
        if files is None:
            if "env_file" not in table and path == ("stack",) and (base / ".env").is_file():
                files = (".env",)
            else:
                return merged
        for name in files:
            full = (base / name) if not Path(name).is_absolute() else Path(name)
            if not full.is_file():
                self.err(path + ("env_file",), f'env file "{name}" not found', needle=name)
                continue
            self.files.append(full)
            try:
                merged.update(dotenv.parse(read_text(full), _rel(full)))
            except ConfigError as e:
                self.problems.extend(e.problems)
        return merged

    def env_table(self, table, key, path) -> dict[str, str]:
        value = self.get(table, key, path, (dict,), "a table")
        out: dict[str, str] = {}
        for k, v in (value or {}).items():
            if isinstance(v, bool):
                out[k] = "true" if v else "false"
            elif isinstance(v, (str, int, float)):
                out[k] = str(v)
            else:
                self.err(path + (key, k), f"must be a string, number or boolean, not {_type_name(v)}")
                continue
            if not ENV_NAME_RE.fullmatch(k):
                self.err(path + (key, k), f"invalid variable name {k!r}")
        return out

    def fallback(self, table, path, port: int | None) -> tuple[int, ...]:
        value = table.get("fallback")
        if value is None:
            if port:
                return tuple(range(port + 1, min(port + 20, 65535) + 1))
            return ()
        if isinstance(value, str):
            m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", value)
            if not m:
                self.err(path + ("fallback",), f'"{value}" is not a range like "8001-8010"')
                return ()
            a, b = int(m.group(1)), int(m.group(2))
            if a > b:
                self.err(path + ("fallback",), f'range "{value}" is empty: {a} is greater than {b}')
                return ()
            if not (1 <= a and b <= 65535):
                self.err(path + ("fallback",), f'range "{value}" goes outside 1-65535')
                return ()
            return tuple(range(a, b + 1))
        if isinstance(value, list):
            out = []
            for v in value:
                if isinstance(v, str) and v.strip().isdigit():
                    self.err(path + ("fallback",), f"entries must be integers, not a string: use {v.strip()}", needle=v)
                    continue
                if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
                    self.err(path + ("fallback",), f"{v!r} is not a port between 1 and 65535",
                             needle=str(v).lower() if isinstance(v, bool) else str(v))
                    continue
                out.append(v)
            return tuple(out)
        self.err(path + ("fallback",), f"must be an array of ports or a range string, not {_type_name(value)}")
        return ()

    def health(self, table, path, port: int | None) -> Health | None:
        value = table.get("health")
        if value is None:
            if port is None:
                return None
            return IMPLICIT_TCP  # one record for every service: it is frozen
        if not isinstance(value, dict):
            self.err(path + ("health",), f"must be a table, not {_type_name(value)}")
            return None
        hpath = path + ("health",)
        self.unknown_keys(value, HEALTH_KEYS, hpath)
        kinds = [k for k in ("http", "tcp", "cmd", "log") if k in value]
        if len(kinds) != 1:
            self.err(hpath, "needs exactly one of http, tcp, cmd, log" + (f" (found {', '.join(kinds)})" if kinds else ""))
            return None
        kind = kinds[0]
        target = self.get(value, kind, hpath, (str,), "a string")
        if target is None:
            return None
        if not target.strip():
            self.err(hpath + (kind,), "must not be empty")
            return None
        if kind == "log":
            try:
                re.compile(target)
            except re.error as e:
                self.err(hpath + ("log",), f"invalid regular expression: {e}")
        args = {}
        for k in ("interval", "timeout", "start_period"):
            v = self.number(value, k, hpath)
            if v is not None:
                if k != "start_period" and v <= 0:
                    self.err(hpath + (k,), "must be greater than 0")
                    continue
                args[k] = float(v)
        r = self.number(value, "retries", hpath, minimum=1, integer=True)
        if r is not None:
            args["retries"] = r
        return Health(HealthKind(kind), target, **args)

    def depends(self, table, path, names: set[str]) -> tuple[Dependency, ...]:
        value = table.get("depends_on")
        if value is None:
            return ()
        items: list[tuple[str, str | None]] = []
        if isinstance(value, list):
            for v in value:
                if not isinstance(v, str):
                    self.err(path + ("depends_on",), f"entries must be service names, not {_type_name(v)}")
                    continue
                items.append((v, None))
        elif isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(v, str) or v not in {c.value for c in Condition}:
                    self.err(path + ("depends_on", k), f'condition must be started, healthy or completed, not {v!r}'
                             + (did_you_mean(v, [c.value for c in Condition]) if isinstance(v, str) else ""))
                    continue
                items.append((k, v))
        else:
            hint = f': use [{_toml(value)}] or {{ {value} = "healthy" }}' if isinstance(value, str) else ""
            self.err(path + ("depends_on",), f"must be an array or a table, not {_type_name(value)}{hint}")
            return ()
        out = []
        for name, cond in items:
            if name not in names:
                self.err(path + ("depends_on",), f'unknown service "{name}"{did_you_mean(name, names)}', needle=name)
                continue
            out.append(Dependency(name, Condition(cond) if cond else None))  # type: ignore[arg-type]
        return tuple(out)

    # -- the whole file ----------------------------------------------------------------------
    def load(self) -> Stack:
        doc = self.parse()
        return self.build(doc)

    def parse(self) -> dict:
        """The document. tomllib reads it (a few ms; tomlkit costs ~30 ms to import and as much
        to parse), or the parse cache when the text has not changed since the last read; only a
        file with a syntax error is read again by tomlkit, whose messages and positions the
        errors keep."""
        from revostack import parsecache

        try:
            return parsecache.parsed(self.text, self.path, _toml_loads)
        except _InvalidToml:
            pass  # worded and located by tomlkit below
        import tomlkit
        from tomlkit.exceptions import ParseError

        try:
            return tomlkit.parse(self.text).unwrap()
        except ParseError as e:
            msg = str(e)
            msg = re.sub(r"\s+at line \d+ col \d+$", "", msg)
            raise ConfigError([Problem(self.display, f"invalid TOML: {msg}", e.line, e.col)]) from None
        except Exception as e:  # tomlkit raises a few other types on odd input
            m = re.match(r'Key "(.*)" already exists', str(e))
            line, col = self.loc.repeated(m.group(1)) if m else (None, None)
            raise ConfigError([Problem(self.display, f"invalid TOML: {e}", line, col)]) from None

    def build(self, doc: dict) -> Stack:
        root = self.path.parent
        self.unknown_keys(doc, TOP_KEYS, ())
        st = self.get(doc, "stack", (), (dict,), "a table") or {}
        self.unknown_keys(st, STACK_KEYS, ("stack",))
        p = ("stack",)
        name = self.get(st, "name", p, (str,), "a string") or root.resolve().name or "stack"
        host = self.get(st, "host", p, (str,), "a string") or "127.0.0.1"
        strategy = Strategy.INTELLIGENT
        s = self.get(st, "strategy", p, (str,), "a string")
        if s is not None:
            try:
                strategy = Strategy(s)
            except ValueError:
                self.err(p + ("strategy",), f'must be conservative, intelligent or aggressive, not "{s}"'
                         + did_you_mean(s, [x.value for x in Strategy]))
        stop_timeout = self.number(st, "stop_timeout", p)
        stop_timeout = 10.0 if stop_timeout is None else float(stop_timeout)
        defaults: dict[str, Any] = {}
        restart = self.enum(st, "restart", p, Restart)
        if restart:
            defaults["restart"] = restart
        for k in ("max_restarts",):
            v = self.number(st, k, p, integer=True)
            if v is not None:
                defaults[k] = v
        v = self.number(st, "backoff", p)
        if v is not None:
            defaults["backoff"] = float(v)
        handoff = self.enum(st, "handoff", p, Handoff)
        if handoff:
            defaults["handoff"] = handoff
        stack_dotenv = self.env_files(st, p, root)
        stack_env = self.env_table(doc, "env", ())

        services_raw = self.get(doc, "services", (), (dict,), "a table")
        if services_raw is None and "services" not in doc:
            self.err((), "no services: add a [services.NAME] table with a cmd")
            services_raw = {}
        services_raw = services_raw or {}
        names = set(services_raw)
        services: dict[str, Service] = {}
        fixed_ports: dict[int, str] = {}
        for sname, table in services_raw.items():
            sp = ("services", sname)
            if not NAME_RE.fullmatch(sname):
                self.err(sp, f'invalid service name "{sname}": use letters, digits, "_" and "-", starting with a letter or digit')
            if not isinstance(table, dict):
                self.err(sp, f"must be a table, not {_type_name(table)}")
                continue
            svc = self.service(sname, table, sp, root, names, defaults, stop_timeout)
            if svc is None:
                continue
            if svc.port:
                if svc.port in fixed_ports:
                    self.err(sp + ("port",), f"port {svc.port} is already declared by service \"{fixed_ports[svc.port]}\"")
                else:
                    fixed_ports[svc.port] = sname
            services[sname] = svc

        services = self.check_graph(services)
        stack = Stack(name=name, path=self.path, services=services, host=host, strategy=strategy,
                      stop_timeout=stop_timeout, env=stack_env, dotenv=stack_dotenv,
                      files=tuple(dict.fromkeys(p.resolve() for p in self.files)))
        self.check_references(stack)
        if self.problems:
            raise ConfigError(sorted(self.problems, key=lambda q: (q.line or 0, q.col or 0)))
        return stack

    def enum(self, table, key, path, kind):
        v = self.get(table, key, path, (str,), "a string")
        if v is None:
            return None
        try:
            return kind(v)
        except ValueError:
            options = [x.value for x in kind]
            self.err(path + (key,), f'must be {", ".join(options[:-1])} or {options[-1]}, not "{v}"' + did_you_mean(v, options))
            return None

    def service(self, name, t, sp, root, names, defaults, stack_stop_timeout) -> Service | None:
        self.unknown_keys(t, SERVICE_KEYS, sp)
        ok = True
        cmd_raw = t.get("cmd")
        cmd: str | tuple[str, ...] | None = None
        image = self.get(t, "image", sp, (str,), "a string")
        if image is not None and not IMAGE_RE.fullmatch(image):
            self.err(sp + ("image",), "must be an image reference such as \"postgres:16\" (no spaces, not empty)")
            ok = False
        if cmd_raw is None and image is not None:
            cmd = ()  # the image's own command
        elif cmd_raw is None:
            self.err(sp, "missing required key \"cmd\"")
            ok = False
        elif isinstance(cmd_raw, str):
            if not cmd_raw.strip():
                self.err(sp + ("cmd",), "must not be empty")
                ok = False
            cmd = cmd_raw
        elif isinstance(cmd_raw, list) and cmd_raw and all(isinstance(a, str) for a in cmd_raw):
            if not cmd_raw[0].strip():
                self.err(sp + ("cmd",), "the program (first element) must not be empty")
                ok = False
            cmd = tuple(cmd_raw)
        else:
            self.err(sp + ("cmd",), "must be a non-empty string or a non-empty array of strings"
                     if isinstance(cmd_raw, (str, list)) else f"must be a string or an array of strings, not {_type_name(cmd_raw)}")
            ok = False

        cwd = root
        c = self.get(t, "cwd", sp, (str,), "a string")
        if c is not None:
            cwd = (root / c) if not Path(c).is_absolute() else Path(c)
            if not cwd.is_dir():
                self.err(sp + ("cwd",), f'folder "{c}" does not exist', needle=c)
        port = self.get(t, "port", sp, (int,), "an integer")
        if port is not None and not 0 <= port <= 65535:
            self.err(sp + ("port",), f"{port} is outside 0-65535")
            port = None
        fallback = self.fallback(t, sp, port)
        port_env = self.get(t, "port_env", sp, (str,), "a string") or "PORT"
        if not ENV_NAME_RE.fullmatch(port_env):
            self.err(sp + ("port_env",), f"invalid variable name {port_env!r}")
        deps = self.depends(t, sp, names)
        health = self.health(t, sp, port)
        restart = self.enum(t, "restart", sp, Restart) or defaults.get("restart", Restart.ON_FAILURE)
        max_restarts = self.number(t, "max_restarts", sp, integer=True)
        backoff = self.number(t, "backoff", sp)
        stop_signal = self.get(t, "stop_signal", sp, (str,), "a string") or "SIGTERM"
        sig = stop_signal.upper()
        sig = sig if sig.startswith("SIG") else "SIG" + sig
        if sig not in SIGNALS:
            self.err(sp + ("stop_signal",), f'unknown signal "{stop_signal}"' + did_you_mean(sig, SIGNALS))
            sig = "SIGTERM"
        stop_timeout = self.number(t, "stop_timeout", sp)
        scale = self.number(t, "scale", sp, minimum=1, integer=True)
        autostart = self.get(t, "autostart", sp, (bool,), "a boolean")
        pty = self.get(t, "pty", sp, (bool,), "a boolean")
        watch = self.string_list(t, "watch", sp) or ()
        watch_ignore = self.string_list(t, "watch_ignore", sp) or ()
        env = self.env_table(t, "env", sp)
        svc_dotenv = self.env_files(t, sp, root)
        handoff = self.enum(t, "handoff", sp, Handoff)
        drain_timeout = self.number(t, "drain_timeout", sp)
        if handoff is None:  # the stack's default applies to the services that can have one
            handoff = defaults.get("handoff", Handoff.NONE) if port else Handoff.NONE
        if handoff is not Handoff.NONE and not (image is not None and handoff is Handoff.SOCKET):
            self.check_handoff(handoff, port, health, sp, t)
        container_port, volumes, pull = self.container(t, sp, root, image, port, handoff)
        if not ok or cmd is None:
            return None
        return Service(
            name=name, cmd=cmd, cwd=cwd, env=env, dotenv=svc_dotenv, port=port, fallback=fallback,
            port_env=port_env, depends_on=deps, health=health, restart=restart,
            max_restarts=defaults.get("max_restarts", 5) if max_restarts is None else max_restarts,
            backoff=defaults.get("backoff", 0.5) if backoff is None else float(backoff),
            watch=watch, watch_ignore=watch_ignore, stop_signal=sig,
            stop_timeout=stack_stop_timeout if stop_timeout is None else float(stop_timeout),
            scale=scale or 1, autostart=True if autostart is None else autostart, pty=bool(pty),
            handoff=handoff, drain_timeout=10.0 if drain_timeout is None else float(drain_timeout),
            image=image, container_port=container_port, volumes=volumes, pull=pull,
        )

    def container(self, t, sp, root: Path, image: str | None, port: int | None, handoff: Handoff):
        """The container keys: (container_port, volumes, pull), each checked."""
        if image is None:
            for key in CONTAINER_KEYS:
                if key in t:
                    self.err(sp + (key,), f'"{key}" is for containers: add image = "..." or remove it')
            return None, (), Pull.MISSING
        if handoff is Handoff.SOCKET:
            self.err(sp + ("handoff",), 'handoff = "socket" cannot pass a listening socket into a container: '
                     'use handoff = "proxy" (each generation publishes its own private port)')
        cport = self.get(t, "container_port", sp, (int,), "an integer")
        if cport is not None and not 1 <= cport <= 65535:
            self.err(sp + ("container_port",), f"{cport} is outside 1-65535")
            cport = None
        if cport is not None and port is None:
            self.err(sp + ("container_port",), "there is no port to publish it on: add port = N (0: any free port)")
        if cport is None and port == 0 and "container_port" not in t:
            self.err(sp + ("port",), "port = 0 publishes on any free port, but the port inside is unknown: "
                     "add container_port = N")
        cport = cport if cport is not None else (port or None)
        pull = self.enum(t, "pull", sp, Pull) or Pull.MISSING
        volumes: list[Volume] = []
        raw = self.string_list(t, "volumes", sp) or ()
        for i, spec in enumerate(raw):
            vol = self.volume(spec, sp + ("volumes",), root)
            if vol is not None:
                volumes.append(vol)
        return cport, tuple(volumes), pull

    def volume(self, spec: str, path, root: Path) -> Volume | None:
        parts = spec.split(":")
        mode = None
        if len(parts) == 3:
            parts, mode = parts[:2], parts[2]
        if len(parts) != 2 or not parts[0] or not parts[1]:
            self.err(path, f'volume "{spec}": use "SRC:DST" or "SRC:DST:ro"', needle=spec)
            return None
        src, dst = parts
        if mode not in (None, "ro", "rw"):
            self.err(path, f'volume "{spec}": the mode must be ro or rw, not "{mode}"' + did_you_mean(mode, ["ro", "rw"]),
                     needle=spec)
            return None
        if not dst.startswith("/"):
            self.err(path, f'volume "{spec}": the path inside the container must be absolute, not "{dst}"', needle=spec)
            return None
        if src.startswith((".", "/", "~")):
            host = Path(os.path.expanduser(src))
            host = host if host.is_absolute() else (root / host)
            if not host.exists():
                self.err(path, f'volume "{spec}": "{src}" does not exist', needle=spec)
                return None
            return Volume(str(host.resolve()), dst, mode == "ro", True)
        if not VOLUME_NAME_RE.fullmatch(src):
            self.err(path, f'volume "{spec}": "{src}" is neither a path (start it with ./ or /) nor a volume name',
                     needle=spec)
            return None
        return Volume(src, dst, mode == "ro", False)

    def check_handoff(self, handoff: Handoff, port: int | None, health: Health | None, sp, t) -> None:
        """A handoff needs a port; a socket service needs a check its new generation passes by itself."""
        if not port:
            self.err(sp + ("handoff",), f'"{handoff.value}" needs a port: add port = N (a fixed one: the public port '
                     "must not change)" if port is None else f'"{handoff.value}" needs a fixed port, not 0')
            return
        if handoff is not Handoff.SOCKET or health is None or health.kind not in (HealthKind.TCP, HealthKind.HTTP):
            return
        own = ("${port}", "$port", f"${{{t.get('port_env') or 'PORT'}}}", f"${t.get('port_env') or 'PORT'}", str(port))
        if health.implicit or any(o in health.target for o in own):
            where = sp + ("health",) if not health.implicit else sp + ("handoff",)
            self.err(where, 'handoff = "socket": revostack holds the listening socket, so a '
                     f"{health.kind.value} check on the shared port passes whatever generation answers; "
                     'give a check the new process passes by itself: health = { log = "..." } or { cmd = "..." }')

    def check_graph(self, services: dict[str, Service]) -> dict[str, Service]:
        """Report a cycle; resolve list-form conditions; check that "healthy" can happen."""
        cycle = graph.find_cycle({n: [d.name for d in s.depends_on] for n, s in services.items()})
        if cycle:
            first = cycle[0]
            self.err(("services", first, "depends_on"), f"dependency cycle: {' -> '.join(cycle)}", needle=cycle[1])
        fixed: dict[str, Service] = {}
        for name, svc in services.items():
            if not svc.depends_on:
                fixed[name] = svc
                continue
            deps = []
            for d in svc.depends_on:
                target = services.get(d.name)
                if d.condition is None:
                    d = Dependency(d.name, Condition.HEALTHY if target is not None and target.health else Condition.STARTED)
                elif d.condition is Condition.HEALTHY and target is not None and target.health is None:
                    self.err(("services", name, "depends_on", d.name),
                             f'"{d.name}" has no health check (no port and no health table), so it can never be healthy')
                deps.append(d)
            changed = any(a is not b for a, b in zip(deps, svc.depends_on))  # only list forms need resolving
            fixed[name] = replace(svc, depends_on=tuple(deps)) if changed else svc
        return fixed

    def check_references(self, stack: Stack) -> None:
        base = set(self.environ) | set(stack.dotenv) | set(stack.env)
        provided = {"PYTHONUNBUFFERED", "REVOSTACK_STACK", "REVOSTACK_SERVICE"}
        for s in stack.services.values():
            if s.port is not None:
                provided |= {f"{env_prefix(s.name)}_PORT", f"{env_prefix(s.name)}_HOST"}
                if s.scale > 1:
                    for inst in s.instances:
                        provided |= {f"{env_prefix(inst)}_PORT", f"{env_prefix(inst)}_HOST"}
        for name, s in stack.services.items():
            # a view, not a union: 200 services x (environ + every NAME_PORT) set copies cost ~2 ms
            known = _Known(base, s.dotenv, s.env, provided, {s.port_env} if s.port is not None else ())
            sp = ("services", name)
            # an env value is expanded when its key is set: it sees only the keys before it
            keys = list(s.env)
            for i, (key, value) in enumerate(s.env.items()):
                if "$" not in value:
                    continue
                later = {k for k in keys[i:] if k not in base and k not in s.dotenv and k not in provided}
                before = _Known(*known.sets, exclude=later)
                self.check_refs(value, sp + ("env", key), stack, s, before, shell=False)
            if isinstance(s.cmd, str):
                self.check_refs(s.cmd, sp + ("cmd",), stack, s, known, shell=True)
            else:
                for arg in s.cmd:
                    self.check_refs(arg, sp + ("cmd",), stack, s, known, shell=False)
            if s.health and not s.health.implicit:
                self.check_refs(s.health.target, sp + ("health", s.health.kind.value), stack, s, known,
                                shell=s.health.kind is HealthKind.CMD)
        known = base | provided
        keys = list(stack.env)
        for i, (key, value) in enumerate(stack.env.items()):
            before = known - (set(keys[i:]) - set(self.environ) - set(stack.dotenv) - provided)
            self.check_refs(value, ("env", key), stack, None, before, shell=False)

    def check_refs(self, text: str, path, stack: Stack, svc: Service | None, known, shell: bool) -> None:
        if "$" not in text:
            return  # every reference, and every malformed one, starts with "$"
        bad = interp.malformed(text, shell)
        for fragment, why in bad:
            self.err(path, why, needle=fragment)
        for ref in interp.references(text):
            if any(ref.text in fragment for fragment, _ in bad):
                continue
            if ref.is_stack_ref:
                if ref.service == "":
                    if svc is None:
                        self.err(path, f"{ref.text} means the service's own {ref.attr}: use it in a service", needle=ref.text)
                    elif ref.attr == "port" and svc.port is None:
                        self.err(path, f'{ref.text}: service "{svc.name}" has no port', needle=ref.text)
                    continue
                other = stack.services.get(ref.service or "")
                if other is None:
                    self.err(path, f'unknown service "{ref.service}" in {ref.text}{did_you_mean(ref.service or "", stack.services)}',
                             needle=ref.text)
                elif ref.attr == "port" and other.port is None:
                    self.err(path, f'{ref.text}: service "{other.name}" has no port', needle=ref.text)
            elif not shell and ref.var not in known and ref.default is None:
                later = path[-2:-1] == ("env",) and ref.var in (svc.env if svc is not None else stack.env)
                hint = (" (it is set later in the same table: a value can only use variables set before it)" if later
                        else did_you_mean(ref.var or "", known - set(self.environ)))
                self.err(path, f'unknown variable "{ref.var}" in {ref.text}{hint}', needle=ref.text)


class _Known:
    """The variable names a value may use, as a view over several sets (``in`` asks each; the
    union is built only for a suggestion, when a name is wrong), less ``exclude``."""

    def __init__(self, *sets, exclude=()):
        self.sets = sets
        self.exclude = exclude

    def __contains__(self, name) -> bool:
        return name not in self.exclude and any(name in s for s in self.sets)

    def __iter__(self):
        return iter(set().union(*self.sets).difference(self.exclude))

    def __sub__(self, other) -> set[str]:
        return set(self) - set(other)


def _toml(text: str) -> str:
    """``text`` as a TOML basic string, for hints."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def env_prefix(name: str) -> str:
    """``my-api.2`` -> ``MY_API_2``."""
    return name.replace("-", "_").replace(".", "_").upper()


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _display(path: Path) -> str:
    """How problems name a file: relative to the cwd when it is under it, else as given."""
    return str(path) if path.is_absolute() and not _is_under_cwd(path) else _rel(path)


def _is_under_cwd(path: Path) -> bool:
    try:
        path.resolve().relative_to(Path.cwd().resolve())
        return True
    except (ValueError, OSError):
        return False


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> Stack:
    """Load and validate a Stackfile. Raises ConfigError with every problem found."""
    path = Path(path)
    try:
        text = read_text(path)
    except ConfigError as e:  # name the file as every other problem does
        raise ConfigError(replace(p, file=_display(path)) if p.file == str(path) else p for p in e.problems) from None
    return loads(text, path, environ)


def loads(text: str, path: str | Path, environ: Mapping[str, str] | None = None) -> Stack:
    path = Path(path)
    return _Loader(path, text, os.environ if environ is None else environ).load()

"""Interpolation of ``$VAR``, ``${VAR}``, ``${port}``, ``${host}``, ``${NAME.port}``, ``$$``. Pure."""

from __future__ import annotations

import re
from typing import Callable

from revostack.record import record

# $$ | ${...} | $NAME
_TOKEN = re.compile(r"\$(?:(\$)|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@record
class Ref:
    """One reference found in a string."""

    text: str  # the reference as written, e.g. "${db.port}"
    var: str | None = None  # a variable name
    default: str | None = None  # from ${VAR:-default}
    service: str | None = None  # "db" in ${db.port}; "" for ${port} / ${host}
    attr: str | None = None  # "port" or "host"
    braced: bool = False
    start: int = 0

    @property
    def is_stack_ref(self) -> bool:
        return self.attr is not None


_parsed: dict[str, tuple[str | None, str | None, str | None, str | None]] = {}  # the same few bodies, again and again


def _parse_braced(body: str) -> tuple[str | None, str | None, str | None, str | None]:
    """-> (var, default, service, attr)"""
    hit = _parsed.get(body)
    if hit is None:
        hit = _parsed[body] = _parse_braced_once(body)
    return hit


def _parse_braced_once(body: str) -> tuple[str | None, str | None, str | None, str | None]:
    if body in ("port", "host"):
        return None, None, "", body
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_-]*)\.(port|host)", body)
    if m:
        return None, None, m.group(1), m.group(2)
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(:?-)(.*)", body, re.S)
    if m:
        return m.group(1), m.group(3), None, None
    return body, None, None, None


# compiled on first use (re caches it): only a string holding "${" needs it
_valid: set[str] = set()  # bodies seen to be valid
_VALID_BODY = r"[A-Za-z_][A-Za-z0-9_]*(?::?-.*)?|port|host|[A-Za-z0-9][A-Za-z0-9_-]*\.(?:port|host)"


def malformed(text: str, shell: bool = False) -> list[tuple[str, str]]:
    """``(fragment, why)`` for each ``${`` that is never closed and — outside a shell command,
    where the shell has forms of its own — each ``${...}`` that is no reference revostack knows."""
    out = []
    i = 0
    while True:
        i = text.find("$", i)
        if i < 0 or i + 1 >= len(text):
            return out
        if text[i + 1] == "$":
            i += 2
            continue
        if text[i + 1] != "{":
            i += 1
            continue
        end = text.find("}", i + 2)
        if end < 0:
            frag = text[i:i + 24]
            out.append((frag, f'unterminated "{frag}": "${{" without its closing "}}"'))
            return out
        body = text[i + 2:end]
        if not shell and body not in _valid:
            if re.fullmatch(_VALID_BODY, body, re.S):
                _valid.add(body)
            else:
                out.append((text[i:end + 1], _why(body)))
        i = end + 1


def _why(body: str) -> str:
    ref = "${" + body + "}"
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_-]*)\.(.*)", body)
    if m:
        return f'{ref}: a service has only .port and .host, not ".{m.group(2)}"'
    if not body:
        return f"{ref} is empty: write ${{VAR}}, ${{port}}, ${{host}} or ${{NAME.port}}"
    return (f"{ref} is not a reference: write ${{VAR}}, ${{VAR:-default}}, ${{port}}, ${{host}}, "
            "${NAME.port} or ${NAME.host} (and $$ for a literal $)")


def references(text: str) -> list[Ref]:
    refs = []
    for m in _TOKEN.finditer(text):
        if m.group(1):
            continue
        if m.group(3) is not None:
            refs.append(Ref(m.group(0), var=m.group(3), start=m.start()))
            continue
        var, default, service, attr = _parse_braced(m.group(2))
        refs.append(Ref(m.group(0), var, default, service, attr, True, m.start()))
    return refs


_token_refs: dict[str, Ref] = {}  # a token's reference, for a resolver (which never asks where it stood)


def _token_ref(m: re.Match[str]) -> Ref:
    text = m.group(0)
    ref = _token_refs.get(text)
    if ref is None:
        if m.group(3) is not None:
            ref = Ref(text, var=m.group(3))
        else:
            var, default, service, attr = _parse_braced(m.group(2))
            ref = Ref(text, var, default, service, attr, True)
        _token_refs[text] = ref
    return ref


def expand(text: str, resolve: Callable[[Ref], str | None], *, shell: bool = False) -> str:
    """Replace every reference by ``resolve(ref)``.

    ``shell=True`` is for a string ``cmd`` run through ``/bin/sh -c``: only revostack's own
    ``${port}``/``${host}``/``${NAME.port}``/``${NAME.host}`` are replaced; ``$VAR``, ``${VAR}``
    and ``$$`` are left to the shell, which sees the same environment.
    A resolver returning None leaves the reference as written.
    """
    if "$" not in text:  # most words of most commands: nothing to replace
        return text

    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(0) if shell else "$"
        ref = _token_ref(m)
        if shell and not ref.is_stack_ref:
            return m.group(0)
        value = resolve(ref)
        return m.group(0) if value is None else value

    return _TOKEN.sub(sub, text)

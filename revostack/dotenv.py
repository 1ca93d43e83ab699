"""`.env` files: KEY=value lines, as docs/stackfile.md describes. Pure."""

from __future__ import annotations

import re

from revostack.errors import ConfigError, Problem

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse(text: str, source: str = ".env") -> dict[str, str]:
    """Parse ``.env`` text into an ordered dict; every malformed line is reported with its number."""
    values: dict[str, str] = {}
    problems: list[Problem] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        lineno = i + 1
        raw = lines[i]
        i += 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        body = stripped[7:].lstrip() if stripped.startswith("export ") else stripped
        key, eq, rest = body.partition("=")
        key = key.strip()
        if not eq or not _KEY.fullmatch(key):
            what = "expected KEY=value" if not eq else f"invalid variable name {key!r}"
            problems.append(Problem(source, what, lineno, 1))
            continue
        rest = rest.lstrip()
        col = raw.find(rest[:1]) + 1 if rest else len(raw) + 1
        if rest[:1] in ("'", '"'):
            quote = rest[0]
            value, tail, consumed = _quoted(rest[1:], quote, lines, i)
            if value is None:
                problems.append(Problem(source, f"unterminated {quote} quote", lineno, col))
                break
            i += consumed
            tail = tail.strip()
            if tail and not tail.startswith("#"):
                problems.append(Problem(source, f"unexpected text after the closing quote: {tail!r}", lineno + consumed, 1))
                continue
            values[key] = value
        else:
            cut = rest.find(" #")
            value = rest[:cut] if cut >= 0 else rest
            if value.startswith("#"):
                value = ""
            values[key] = value.rstrip()
    if problems:
        raise ConfigError(problems)
    return values


def _quoted(first: str, quote: str, lines: list[str], next_index: int) -> tuple[str | None, str, int]:
    """Read a quoted value that may continue over the following lines.

    Returns (value or None when unterminated, text after the closing quote, extra lines used).
    """
    out: list[str] = []
    text = first
    consumed = 0
    while True:
        j = 0
        while j < len(text):
            ch = text[j]
            if ch == quote:
                return "".join(out), text[j + 1 :], consumed
            if ch == "\\" and quote == '"' and j + 1 < len(text):
                nxt = text[j + 1]
                out.append(_ESCAPES.get(nxt, "\\" + nxt))
                j += 2
                continue
            out.append(ch)
            j += 1
        if next_index + consumed >= len(lines):
            return None, "", consumed
        out.append("\n")
        text = lines[next_index + consumed]
        consumed += 1

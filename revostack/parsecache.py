"""Parsed Stackfiles, kept by their content, as Python keeps bytecode.

Reading a Stackfile with tomllib costs ~9 ms on every command, ~7 of them to import tomllib
(its regexes are compiled and ``datetime`` loaded on import): a quarter of what ``revostack
ports`` spends beyond the interpreter. Most runs read a file that has not changed since the
last one, so the parsed document is kept, marshalled, in one small file per Stackfile path
under ``$XDG_CACHE_HOME/revostack/parsed/`` (``~/.cache`` by default), with the SHA-1 of the
text it came from. A hit needs the same text, byte for byte, the same Python and the same
format; anything else — an edit, a corrupt or foreign file, no cache folder, no right to write
one — reads the file again, exactly as without the cache. The cache holds only what tomllib
returns for valid TOML: every validation still runs on every read, and errors are located in
the text itself. ``REVOSTACK_NO_CACHE=1`` turns it off.

Layer 0: stdlib only.
"""

from __future__ import annotations

import marshal
import os
import sys
from pathlib import Path
from typing import Callable

try:  # Python's own sha1 (also the stack id's): hashlib loads OpenSSL's, ~5 ms more on every command
    from _sha1 import sha1
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import sha1

FORMAT = b"revostack-parsed-1 %d.%d\n" % sys.version_info[:2]


def folder() -> Path | None:
    """Where the cache lives, or None when it is turned off or has no home."""
    if os.environ.get("REVOSTACK_NO_CACHE"):
        return None
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, or relative: ignored, as the XDG spec says
        home = os.path.expanduser("~")
        base = os.path.join(home, ".cache") if os.path.isabs(home) else ""
    return Path(base) / "revostack" / "parsed" if base else None


def parsed(text: str, path: Path, parse: Callable[[str], dict]) -> dict:
    """``parse(text)``, or the document it gave for the same text before. ``parse`` raises
    for invalid TOML; nothing is kept then."""
    where = folder()
    if where is None:
        return parse(text)
    data = text.encode("utf-8", "surrogatepass")
    key = sha1(data).hexdigest().encode()
    entry = where / sha1(os.path.abspath(path).encode("utf-8", "surrogatepass")).hexdigest()[:24]
    head = FORMAT + key + b"\n"
    try:
        with open(entry, "rb") as f:
            blob = f.read()
        if blob.startswith(head):
            doc = marshal.loads(blob[len(head):])
            if isinstance(doc, dict):
                return doc
    except (OSError, ValueError, EOFError, TypeError):
        pass  # absent, unreadable or not ours: parse
    doc = parse(text)
    _store(entry, head, doc)
    return doc


def _store(entry: Path, head: bytes, doc: dict) -> None:
    try:
        body = marshal.dumps(doc)
    except ValueError:
        return  # a value marshal cannot keep (a TOML date or time): read it each time
    tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)  # it may hold secrets
        with open(fd, "wb") as f:
            f.write(head + body)
        os.replace(tmp, entry)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass

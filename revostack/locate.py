"""Find the line and column of a TOML key path in the source text.

tomlkit reports positions only for syntax errors, so validation messages use this small scanner:
it follows ``[table]`` headers, ``key = value`` lines (dotted keys included) and the keys of
inline tables, and remembers where each key path starts. Pure.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")
_INLINE_KEY = re.compile(r"""(?:^|[{,])\s*([A-Za-z0-9_-]+|"[^"]*"|'[^']*')\s*=""")


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


class Locator:
    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.where: dict[tuple[str, ...], tuple[int, int]] = {}
        self.repeats: list[tuple[tuple[str, ...], tuple[int, int]]] = []  # a key path seen again
        table: tuple[str, ...] = ()
        depth = 0  # open brackets of a multi-line array
        for no, line in enumerate(self.lines, 1):
            if depth > 0:
                depth += _bracket_balance(line)
                continue
            m = _HEADER.match(line)
            if m and not _KEY.match(line):
                table = _split_key(m.group(1))
                for i in range(1, len(table) + 1):  # [a.b] also locates a
                    self.where.setdefault(table[:i], (no, line.index("[") + 1))
                continue
            m = _KEY.match(line)
            if not m:
                continue
            path = table + _split_key(m.group(1))
            col = len(line) - len(line.lstrip()) + 1
            for i in range(len(table) + 1, len(path)):  # a.b = 1 also locates a
                self.where.setdefault(path[:i], (no, col))
            self._add(path, (no, col))
            value = line[m.end():]
            if value.lstrip().startswith("{"):
                offset = m.end() + value.index("{")
                for km in _INLINE_KEY.finditer(line, offset):
                    key = _split_key(km.group(1))
                    self._add(path + key, (no, km.start(1) + 1))
            depth = max(0, _bracket_balance(value))

    def _add(self, path: tuple[str, ...], where: tuple[int, int]) -> None:
        if path in self.where:
            self.repeats.append((path, where))
        else:
            self.where[path] = where

    def repeated(self, key: str) -> tuple[int | None, int | None]:
        """Where a key named ``key`` is first defined a second time (for tomlkit's
        "Key already exists", which carries no position)."""
        for path, (line, col) in self.repeats:
            if path[-1] == key:
                return line, col
        return None, None

    def find(self, path: tuple[str, ...] | list[str], needle: str | None = None) -> tuple[int | None, int | None]:
        """Line and column of ``path`` (or its longest known prefix); with ``needle``, the column
        of that text on the key's line (or the next few lines) when it is there."""
        path = tuple(str(p) for p in path)
        while path and path not in self.where:
            path = path[:-1]
        if not path:
            return None, None
        line, col = self.where[path]
        if needle:
            for no in range(line, min(line + 20, len(self.lines) + 1)):
                idx = self.lines[no - 1].find(needle, col - 1 if no == line else 0)
                if idx >= 0:
                    return no, idx + 1
        return line, col


def _bracket_balance(text: str) -> int:
    # strings may hold brackets: drop them first
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'[^\']*\'', "", text.split("#", 1)[0] if '"' not in text else text)
    return text.count("[") + text.count("{") - text.count("]") - text.count("}")

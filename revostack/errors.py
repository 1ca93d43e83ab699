"""Error types. Every user-facing error carries where it happened and an exit code."""

from __future__ import annotations

from typing import Iterable

from revostack.record import record

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PORTS = 3
EXIT_RUNNING = 4


@record
class Problem:
    """One configuration problem, rendered as ``FILE:LINE:COL: key.path: message``."""

    file: str
    message: str
    line: int | None = None
    col: int | None = None
    path: str = ""

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.col or 1}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return _one_line(text)


def _one_line(text: str) -> str:
    """A problem is one line: control characters from the user's file are shown escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class RevostackError(Exception):
    """Base of every error shown to the user as one line (or a few) with an exit code."""

    exit_code = EXIT_FAILED


class UsageError(RevostackError):
    exit_code = EXIT_USAGE


class ConfigError(RevostackError):
    """One or more problems in a Stackfile, Procfile or .env file (exit 2)."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class PortError(RevostackError):
    exit_code = EXIT_PORTS


class StateError(RevostackError):
    """The stack is running when it must not be, or not running when it must be (exit 4)."""

    exit_code = EXIT_RUNNING


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean "x"?)`` when a choice is close to ``word``, else ``""``: similar by
    difflib's measure, or one typo away (a letter wrong, missing, extra, or two swapped —
    which catches short names like "bd" for "db")."""
    import difflib  # only when a name is wrong: ~2 ms off every run

    ordered = sorted(choices)
    typo = sorted((c for c in ordered if len(word) > 1 and _typos(word.lower(), c.lower()) <= 1),
                  key=lambda c: abs(len(c) - len(word)))  # one typo away wins; a swap before a drop
    close = typo[:1] or difflib.get_close_matches(word, ordered, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _typos(a: str, b: str) -> int:
    """Optimal string alignment distance: edits with adjacent swaps, capped at 2."""
    if abs(len(a) - len(b)) > 1:
        return 2
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return min(prev[-1], 2)

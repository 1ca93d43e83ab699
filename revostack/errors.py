"""Error types. Every user-facing error carries where it happened and an exit code."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PORTS = 3
EXIT_RUNNING = 4


@dataclass(frozen=True)
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
    """`` (did you mean "x"?)`` when a choice is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""

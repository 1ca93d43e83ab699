"""Restart decisions: policy, backoff and the flap counter. Pure: ``now`` is passed in."""

from __future__ import annotations

from dataclasses import dataclass

from revostack.stackfile import Restart

BACKOFF_CAP = 30.0
STABLE_AFTER = 60.0  # a run healthy (or running, without a check) this long resets the count


@dataclass(frozen=True)
class Decision:
    restart: bool
    delay: float = 0.0
    failed: bool = False  # gave up: max_restarts reached, or a failure with restart = "no"
    completed: bool = False  # exited 0 and stays down
    why: str = ""


class RestartTracker:
    """Counts restarts in a row for one instance and decides what an exit leads to."""

    def __init__(self, policy: Restart, max_restarts: int, backoff: float = 0.5, stable_after: float = STABLE_AFTER):
        self.stable_after = stable_after
        self.policy = policy
        self.max_restarts = max_restarts
        self.backoff = backoff
        self.count = 0

    def stable(self, stable_since: float | None, now: float) -> bool:
        return stable_since is not None and now - stable_since >= self.stable_after

    def on_exit(self, returncode: int | None, stable_since: float | None, now: float, unhealthy: bool = False) -> Decision:
        """``returncode`` as asyncio gives it (negative: killed by a signal);
        ``stable_since``: when the run became healthy (or started, without a check)."""
        if self.stable(stable_since, now):
            self.count = 0
        failure = unhealthy or returncode != 0
        if not failure and self.policy is not Restart.ALWAYS:
            return Decision(False, completed=True, why="exited 0")
        why = "unhealthy" if unhealthy else describe_exit(returncode)
        if self.policy is Restart.NO or (self.policy is Restart.ON_FAILURE and not failure):
            return Decision(False, failed=failure, why=why)
        if self.count >= self.max_restarts:
            return Decision(False, failed=True, why=f"{why}; gave up after {self.count} restart{'s' if self.count != 1 else ''} in a row")
        delay = min(self.backoff * (2 ** self.count), BACKOFF_CAP)
        self.count += 1
        return Decision(True, delay, why=why)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "exited"
    if returncode < 0:
        import signal

        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"

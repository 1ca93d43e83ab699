"""The pure restart policy and the watch globs (no processes, time injected)."""

from revostack.policy import BACKOFF_CAP, RestartTracker
from revostack.stackfile import Restart
from revostack.watch import matches


def test_backoff_doubles_and_caps_then_gives_up():
    t = RestartTracker(Restart.ON_FAILURE, max_restarts=8, backoff=0.5)
    delays = [t.on_exit(1, None, now=float(i)).delay for i in range(8)]
    assert delays == [0.5, 1, 2, 4, 8, 16, BACKOFF_CAP, BACKOFF_CAP]
    last = t.on_exit(1, None, now=9.0)
    assert not last.restart and last.failed and "gave up after 8 restarts" in last.why


def test_stable_run_resets_the_count():
    t = RestartTracker(Restart.ON_FAILURE, max_restarts=2, backoff=1, stable_after=60)
    assert t.on_exit(1, stable_since=0, now=10).delay == 1
    assert t.on_exit(1, stable_since=0, now=20).delay == 2
    d = t.on_exit(1, stable_since=100, now=161)  # healthy for 61 s: the count starts again
    assert d.restart and d.delay == 1


def test_policies():
    assert RestartTracker(Restart.ON_FAILURE, 5).on_exit(0, None, 0).completed
    assert RestartTracker(Restart.ON_FAILURE, 5).on_exit(-15, None, 0).restart  # killed by a signal
    assert RestartTracker(Restart.ALWAYS, 5).on_exit(0, None, 0).restart
    no = RestartTracker(Restart.NO, 5).on_exit(2, None, 0)
    assert not no.restart and no.failed
    assert RestartTracker(Restart.ON_FAILURE, 5).on_exit(0, None, 0, unhealthy=True).restart
    assert not RestartTracker(Restart.NO, 5).on_exit(0, None, 0).failed


def test_watch_globs():
    assert matches("app.py", ["**/*.py"]) and matches("a/b/c.py", ["**/*.py"])
    assert matches("deep/x.js", ["*.js"])  # no slash: any depth, like .gitignore
    assert not matches("src/x.js", ["lib/*.js"]) and matches("lib/x.js", ["lib/*.js"])
    assert matches("tests/unit/t.py", ["tests/**"]) and not matches("src/tests.py", ["tests/**"])
    assert not matches("app.pyc", ["*.py"])

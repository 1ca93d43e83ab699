"""The benchmark harness (``python -m benchmarks``) keeps working: every workload runs once at
tiny sizes, every line arrives whole and once, nothing is left running, and every variant
produces its numbers. Timing targets are not checked here (docs/performance.md has them).
honcho is optional: without it the honcho column is simply left out."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `benchmarks` lives next to `revostack`, not inside the installed package
    sys.path.insert(0, str(REPO))

from benchmarks import harness, report, runner  # noqa: E402
from benchmarks.workloads import FLOOR, HONCHO, UP, Context, Sizes, all_workloads  # noqa: E402

pytestmark = pytest.mark.timeout(120)

NAMES = ["throughput", "start", "start-many", "start-sh", "chain", "shutdown", "shutdown-ignore", "idle", "cli",
         "filechange", "scan", "handoff", "proxy", "big", "soak", "ui"]


@pytest.fixture(scope="module")
def bench_ctx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    saved = harness.PYCACHE
    harness.PYCACHE = folder / "pycache"
    # honcho only where it is cheap (the throughput test below); the quick run stays well under a minute
    ctx = Context(harness.Tools.find(with_honcho=False), folder, Sizes.quick(), lambda text: None)
    harness.warm_up(ctx.tools)
    yield ctx
    harness.PYCACHE = saved
    shutil.rmtree(folder, ignore_errors=True)


def workload(ctx: Context, name: str):
    return next(w for w in all_workloads(ctx) if w.name == name)


def check(results) -> None:
    for wl, rounds in results:
        assert len(rounds) == 1
        (rnd,) = rounds
        assert set(rnd) == set(wl.variants()), f"{wl.name}: not every variant ran"
        for variant, sample in rnd.items():
            assert not sample.problems, f"{wl.name} / {variant}: {sample.problems}"
            first = wl.metrics[0].key
            assert first in sample.values, f"{wl.name} / {variant}: no {first} in {sample.values}"
            for key, value in sample.values.items():
                assert math.isfinite(value), f"{wl.name} / {variant}: {key} = {value}"
        # the report renders and evaluates without a honcho column
        assert wl.name in report.table(results)
        report.targets_table(results)


@pytest.mark.parametrize("name", NAMES)
def test_workload_runs_once_at_tiny_size(bench_ctx, name):
    wl = workload(bench_ctx, name)
    results = runner.run([wl], 1, log=lambda text: None)
    check(results)
    (rnd,) = results[0][1]
    if name == "throughput":
        assert rnd[UP].values["lines_per_s"] > 0
    if name == "chain":
        assert "overhead_per_level" in rnd[UP].values
    if name == "shutdown":
        assert all("overhead" in s.values for v, s in rnd.items() if v != FLOOR)


def test_integrity_check_catches_lost_torn_and_duplicated_lines(tmp_path):
    from benchmarks.workloads import check_lines

    line = b"BENCH c=1 n=%09d " + b"x" * 53 + b" END\n"
    good = b"".join(b"12:00:00 w1.1 | " + line % i for i in range(5))
    (tmp_path / "good").write_bytes(good)
    assert check_lines(tmp_path / "good", 1, 5) == []
    bad = (b"12:00:00 w1.1 | " + line % 0 + b"12:00:00 w1.1 | " + line % 0   # duplicated
           + b"12:00:00 w1.1 | " + (line % 1)[:30] + b"\n12:00:00 w1.1 | " + (line % 1)[30:]  # torn
           + b"".join(b"12:00:00 w1.1 | " + line % i for i in (2, 3)))  # 4 missing
    (tmp_path / "bad").write_bytes(bad)
    problems = " ".join(check_lines(tmp_path / "bad", 1, 5))
    assert "missing" in problems and "1 duplicated" in problems and "torn" in problems


def test_honcho_column_when_installed(bench_ctx):
    pytest.importorskip("honcho")
    tools = harness.Tools.find(with_honcho=True)
    ctx = Context(tools, bench_ctx.folder / "with-honcho", Sizes.quick(), lambda text: None)
    wl = workload(ctx, "throughput")
    assert HONCHO in wl.variants()
    results = runner.run([wl], 1, log=lambda text: None)
    check(results)
    row = next(r for r in report.rows_for(wl, results[0][1]) if r.variant == "revostack start"
               and r.metric.key == "lines_per_s")
    assert row.vs_honcho is not None and row.vs_floor is not None


def test_cli_lists_workloads(capsys):
    assert runner.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out

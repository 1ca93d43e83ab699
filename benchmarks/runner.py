"""``python -m benchmarks``: run the workloads, interleaved round by round, print the report."""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import harness, report
from benchmarks.workloads import Context, Sample, Sizes, Workload, all_workloads


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--runs", type=int, default=3, help="rounds per workload; medians over them (default 3)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that every workload works, not how fast")
    p.add_argument("--only", help="comma-separated workload names (see --list)")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument("--no-honcho", action="store_true", help="leave honcho out even when it is installed")
    p.add_argument("--json", metavar="FILE", help="also write every raw value to FILE")
    p.add_argument("--soak-minutes", type=float, metavar="M", help="length of the soak workload (default 30)")
    p.add_argument("--big-sizes", metavar="N,N", help="stack sizes of the big workload (default 50,200,1000)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (printed at the end)")
    p.add_argument("--as-is", action="store_true",
                   help="do not give the launched interpreters a bytecode cache (keep PYTHONDONTWRITEBYTECODE "
                        "and friends as the environment has them)")
    return p


def run(workloads: list[Workload], runs: int, log=print) -> list[tuple[Workload, list[dict[str, Sample]]]]:
    """Each workload: ``runs`` rounds; in each round every variant once, the order rotated
    so that no variant always goes first (or always follows the heaviest one)."""
    results = []
    for wl in workloads:
        wl.prepare()
        variants = wl.variants()
        rounds: list[dict[str, Sample]] = []
        for i in range(runs):
            k = i % len(variants)
            order = variants[k:] + variants[:k]
            rnd: dict[str, Sample] = {}
            for v in order:
                t0 = time.perf_counter()
                try:
                    sample = wl.measure(v)
                except harness.BenchError as e:
                    sample = Sample(problems=[f"not measured: {e}"])
                rnd[v] = sample
                shown = ", ".join(f"{k_}={x:.4g}" for k_, x in sample.values.items())
                log(f"[{wl.name}] round {i + 1}/{runs} {v}: {shown}"
                    + (f"  PROBLEMS: {'; '.join(sample.problems)}" if sample.problems else "")
                    + f"  ({time.perf_counter() - t0:.1f} s)")
            wl.derive(rnd)
            rounds.append(rnd)
        results.append((wl, rounds))
    return results


def render(results, info: dict) -> str:
    m = info["machine"]
    out = [
        f"machine: {m['cpus']} CPUs, {m['cpu_model']}, {m['memory_gb']} GB, {m['system']}; "
        f"Python {m['python']} ({m['implementation']})",
        "versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"date: {info['date']}",
        f"command: {info['command']}",
        f"runs: {info['runs']} interleaved rounds per workload{' (quick sizes)' if info['quick'] else ''}; "
        f"bytecode: {info['bytecode']}; load average before {m['loadavg']}, after {info['loadavg_after']}; took {info['took_s']:.0f} s",
        "",
        report.titles(results),
        "",
        "Medians. `x honcho` / `x floor`: this variant's value divided by honcho's / the floor's, in the same "
        "round, median over the rounds (for times lower is better, for lines/s higher is better). "
        "`(!)`: a problem was seen, listed below.",
        "",
        report.table(results),
        "",
        report.targets_table(results),
    ]
    probs = report.problems(results)
    out += ["", "Problems:", probs] if probs else ["", "Problems: none (every line whole and once, nothing left running)."]
    return "\n".join(out)


def select(workloads: list[Workload], only: str | None) -> list[Workload]:
    if not only:
        return [w for w in workloads if not w.optional]
    names = [n.strip() for n in only.split(",") if n.strip()]
    known = {w.name for w in workloads}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    return [w for w in workloads if w.name in names]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    harness.normal_signals()
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.soak_minutes is not None:
        sizes.soak_minutes = args.soak_minutes
    if args.big_sizes:
        sizes.big_sizes = tuple(int(n) for n in args.big_sizes.split(",") if n.strip())
    tools = harness.Tools.find(with_honcho=not args.no_honcho)
    folder = Path(tempfile.mkdtemp(prefix="revostack-bench-"))

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    ctx = Context(tools, folder, sizes, log)
    if not args.as_is:
        harness.PYCACHE = folder / "pycache"
    workloads = all_workloads(ctx)
    if args.list:
        for w in workloads:
            print(f"{w.name:16} {w.title}")
        shutil.rmtree(folder, ignore_errors=True)
        return 0
    try:
        workloads = select(workloads, args.only)
        info = {"machine": harness.machine(), "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": shlex.join(["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)]),
                "runs": args.runs, "quick": args.quick}
        if tools.honcho is None:
            log("honcho left out (--no-honcho)" if args.no_honcho else
                "honcho is not installed (pip install -e '.[bench]'): no honcho column")
        info["bytecode"] = ("as the environment has it" if args.as_is else
                            "cached in a private PYTHONPYCACHEPREFIX (warmed up before the first round)")
        t0 = time.perf_counter()
        if not args.as_is:
            harness.warm_up(tools)
        results = run(workloads, args.runs, log)
        info["took_s"] = time.perf_counter() - t0
        info["loadavg_after"] = harness.machine()["loadavg"]
        print(render(results, info))
        if args.json:
            Path(args.json).write_text(json.dumps(to_json(results, info), indent=2))
    finally:
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


def to_json(results, info: dict) -> dict:
    return {
        **info,
        "workloads": [{
            "name": wl.name, "title": wl.title,
            "rounds": [{v: {"values": s.values, "problems": s.problems} for v, s in r.items()} for r in rounds],
            "rows": [{"variant": row.variant, "metric": row.metric.key, "unit": row.metric.unit,
                      "median": row.median, "values": row.values, "vs_honcho": row.vs_honcho,
                      "vs_floor": row.vs_floor} for row in report.rows_for(wl, rounds)],
        } for wl, rounds in results],
        "targets": [{"target": t.text, "variant": t.variant, "result": verdict, "measured": shown}
                    for t, verdict, shown in report.evaluate(results)],
    }

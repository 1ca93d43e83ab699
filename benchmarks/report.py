"""Medians, paired ratios and the targets, printed as Markdown tables.

A ratio is computed inside each round (this variant / the reference, measured minutes apart
on the same machine) and the median of those per-round ratios is shown: that is what keeps
ratios steady when a noisy machine moves the absolute numbers.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from benchmarks.workloads import START, UP, Metric, Sample, Workload


@dataclass
class Row:
    workload: str
    variant: str
    metric: Metric
    values: list[float]
    vs_honcho: float | None
    vs_floor: float | None

    @property
    def median(self) -> float:
        return statistics.median(self.values)


def rows_for(wl: Workload, rounds: list[dict[str, Sample]]) -> list[Row]:
    out = []
    variants = wl.variants()
    for m in wl.metrics:
        for v in variants:
            vals = [r[v].values[m.key] for r in rounds if v in r and m.key in r[v].values]
            if not vals:
                continue
            ratios = {}
            for kind in ("honcho", "floor"):
                ref = wl.reference(v, kind) if m.ratios else None
                paired = [r[v].values[m.key] / r[ref].values[m.key] for r in rounds
                          if ref and v in r and ref in r and m.key in r[v].values and m.key in r[ref].values
                          and r[ref].values[m.key]]
                ratios[kind] = statistics.median(paired) if paired else None
            out.append(Row(wl.name, v, m, vals, ratios["honcho"], ratios["floor"]))
    return out


def problems_for(rounds: list[dict[str, Sample]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i, r in enumerate(rounds, 1):
        for v, s in r.items():
            for p in s.problems:
                out.setdefault(v, []).append(f"round {i}: {p}")
    return out


def fmt(value: float, m: Metric) -> str:
    if m.unit == "lines/s":
        return f"{value / 1e6:.3f} M" if value >= 1e6 else f"{value / 1e3:.1f} k"
    if m.unit == "s":
        return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.3f} s"
    if m.digits == 0:
        return f"{value:.0f}" + (f" {m.unit}" if m.unit else "")
    return f"{value:.{m.digits}f} {m.unit}".rstrip()


def ratio(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:.3f}x" if x < 0.1 else f"{x:.2f}x"


def table(results: list[tuple[Workload, list[dict[str, Sample]]]]) -> str:
    lines = ["| workload | variant | metric | median | min - max | x honcho | x floor |",
             "|---|---|---|---|---|---|---|"]
    for wl, rounds in results:
        probs = problems_for(rounds)
        first = True
        for row in rows_for(wl, rounds):
            name = f"**{wl.name}**" if first else ""
            first = False
            spread = f"{fmt(min(row.values), row.metric)} - {fmt(max(row.values), row.metric)}" if len(row.values) > 1 else ""
            variant = row.variant + (" (!)" if probs.get(row.variant) else "")
            lines.append(f"| {name} | {variant} | {row.metric.label} | {fmt(row.median, row.metric)} | {spread} | "
                         f"{ratio(row.vs_honcho)} | {ratio(row.vs_floor)} |")
    return "\n".join(lines)


def titles(results) -> str:
    return "\n".join(f"- **{wl.name}**: {wl.title}" for wl, _ in results)


def problems(results) -> str:
    out = []
    for wl, rounds in results:
        for v, ps in problems_for(rounds).items():
            for p in ps:
                out.append(f"- {wl.name} / {v}: {p}")
    return "\n".join(out)


# -- targets ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    text: str
    workload: str
    variant: str
    metric: str
    kind: str  # "value" | "honcho" | "floor" | "clean" (no problem in any round)
    op: str = "<"
    threshold: float = 0.0


TARGETS = (
    Target("throughput >= 3x honcho", "throughput", START, "lines_per_s", "honcho", ">=", 3.0),
    Target("throughput >= 0.5x floor (brief; PERFORMANCE.md stretch)", "throughput", START, "lines_per_s", "floor", ">=", 0.5),
    Target("throughput >= 0.35x floor (PERFORMANCE.md minimum)", "throughput", START, "lines_per_s", "floor", ">=", 0.35),
    Target("throughput (up, also writes logs) >= 0.35x floor", "throughput", UP, "lines_per_s", "floor", ">=", 0.35),
    Target("orchestrator CPU well under 1 us per line (PERFORMANCE.md)", "throughput", START, "steady_cpu_us_per_line",
           "value", "<", 1.0),
    Target("nothing lost, torn or duplicated; nothing left running", "throughput", START, "", "clean"),
    Target("nothing lost, torn or duplicated; nothing left running", "throughput", UP, "", "clean"),
    Target("30 children: spawn -> all lines <= 0.5x honcho", "start", START, "seconds", "honcho", "<=", 0.5),
    Target("30 children: time beyond the floor <= 0.5x honcho's", "start", START, "overhead", "honcho", "<=", 0.5),
    Target("100 children: spawn -> all lines <= 0.5x honcho", "start-many", START, "seconds", "honcho", "<=", 0.5),
    Target("100 children: time beyond the floor <= 0.5x honcho's", "start-many", START, "overhead", "honcho", "<=", 0.5),
    Target("30 sh children (issue 12): all ready <= 0.5x honcho", "start-sh", START, "seconds", "honcho", "<=", 0.5),
    Target("100 sh children (issue 12): all ready <= 0.5x honcho", "start-sh-many", START, "seconds", "honcho", "<=",
           0.5),
    Target("dependency chain overhead < 30 ms per level", "chain", UP, "overhead_per_level", "value", "<", 0.030),
    Target("Ctrl-C, 10 children: < 100 ms beyond the children's own exit", "shutdown", START, "overhead", "value", "<", 0.100),
    Target("Ctrl-C, 10 children: < 100 ms beyond the children's own exit", "shutdown", UP, "overhead", "value", "<", 0.100),
    Target("Ctrl-C, 10 children: <= 50 ms in all (PERFORMANCE.md)", "shutdown", START, "seconds", "value", "<=", 0.050),
    Target("Ctrl-C, 10 children: <= 50 ms in all (PERFORMANCE.md)", "shutdown", UP, "seconds", "value", "<=", 0.050),
    Target("Ctrl-C: zero children left", "shutdown", START, "", "clean"),
    Target("Ctrl-C: zero children left", "shutdown", UP, "", "clean"),
    Target("one child ignores signals: stop_timeout + < 100 ms", "shutdown-ignore", UP, "overhead", "value", "<", 0.100),
    Target("idle CPU < 0.5 % of one core (10 services, health every 1 s)", "idle", UP, "cpu_pct", "value", "<", 0.5),
    Target("idle CPU <= 10 ms per 10 s (PERFORMANCE.md: no health checks)", "idle", START, "cpu_ms_precise", "value",
           "<=", 10.0),
    Target("idle CPU <= 10 ms per 10 s, with a tcp check every 1 s", "idle", UP, "cpu_ms_precise", "value", "<=", 10.0),
    Target("RSS < 60 MB with 100 services", "start-many", UP, "rss_mb", "value", "<", 60.0),
    Target("PSS <= 40 MB with 100 services, whole orchestrator tree (PERFORMANCE.md)", "start-many", UP, "tree_pss_mb",
           "value", "<=", 40.0),
    Target("`revostack ports` < 150 ms", "cli", "revostack ports", "seconds", "value", "<", 0.150),
    Target("file change -> new child's first line < 500 ms after the debounce", "filechange", UP, "after_debounce",
           "value", "<", 0.500),
    Target("scan of 1000 ports < 200 ms", "scan", "revostack scan --range", "seconds", "value", "<", 0.200),
    Target("0 failed requests over the saves, proxy", "handoff", "up, handoff proxy", "failed_save", "value", "<=", 0),
    Target("0 failed requests over restart, proxy", "handoff", "up, handoff proxy", "failed_restart", "value", "<=", 0),
    Target("0 failed requests over the crashes, proxy", "handoff", "up, handoff proxy", "failed_crash", "value", "<=", 0),
    Target("0 failed requests over the saves, socket", "handoff", "up, handoff socket", "failed_save", "value", "<=", 0),
    Target("0 failed requests over restart, socket", "handoff", "up, handoff socket", "failed_restart", "value", "<=", 0),
    Target("0 failed requests over the crashes, socket", "handoff", "up, handoff socket", "failed_crash", "value", "<=", 0),
    Target("save -> new generation serving <= child's start + health + 50 ms (proxy)", "handoff", "up, handoff proxy",
           "takeover_overhead_s", "value", "<=", 0.050),
    Target("save -> new generation serving <= child's start + health + 50 ms (socket)", "handoff",
           "up, handoff socket", "takeover_overhead_s", "value", "<=", 0.050),
    Target("proxy adds <= 0.25 ms at p50 (fresh connection, small GET)", "proxy", UP, "added_p50_ms", "value", "<=", 0.25),
    Target("proxy adds <= 1 ms at p99", "proxy", UP, "added_p99_ms", "value", "<=", 1.0),
    Target("proxy bulk throughput >= 0.5x direct", "proxy", UP, "bulk_ratio", "value", ">=", 0.5),
    Target("idle CPU with proxied services: as without (< 0.5 % of one core)", "idle", "revostack up, proxied",
           "cpu_pct", "value", "<", 0.5),
)


def evaluate(results) -> list[tuple[Target, str, str]]:
    """(target, "PASS" | "MISS" | "n/a", the measured number)."""
    by_name = {wl.name: (wl, rounds) for wl, rounds in results}
    out = []
    for t in TARGETS:
        if t.workload not in by_name:
            continue
        wl, rounds = by_name[t.workload]
        if t.kind == "clean":
            ran = any(t.variant in r for r in rounds)
            probs = problems_for(rounds).get(t.variant, [])
            out.append((t, "n/a" if not ran else ("MISS" if probs else "PASS"),
                        "; ".join(probs[:3]) if probs else ("clean in every round" if ran else "not run")))
            continue
        row = next((r for r in rows_for(wl, rounds) if r.variant == t.variant and r.metric.key == t.metric), None)
        if row is None:
            out.append((t, "n/a", "not measured"))
            continue
        if t.kind == "value":
            x, shown = row.median, fmt(row.median, row.metric)
        else:
            x = row.vs_honcho if t.kind == "honcho" else row.vs_floor
            if x is None:
                out.append((t, "n/a", f"no {t.kind} in this run"))
                continue
            shown = f"{ratio(x)} {t.kind} ({fmt(row.median, row.metric)})"
        ok = {"<": x < t.threshold, "<=": x <= t.threshold, ">=": x >= t.threshold}[t.op]
        out.append((t, "PASS" if ok else "MISS", shown))
    return out


def targets_table(results) -> str:
    lines = ["| target | variant | measured (median) | result |", "|---|---|---|---|"]
    for t, verdict, shown in evaluate(results):
        lines.append(f"| {t.text} | {t.variant} | {shown} | **{verdict}** |")
    return "\n".join(lines)

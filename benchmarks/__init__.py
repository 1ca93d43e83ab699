"""revostack's benchmark harness (issue 8): ``python -m benchmarks``.

Measures revostack against honcho and against the floor (the same children run by bash with
``&`` and ``wait``, writing straight to the file), interleaved round by round on the same
machine, and prints medians, paired ratios and the targets of PERFORMANCE.md as Markdown.
See ``python -m benchmarks --help`` and docs/performance.md.
"""

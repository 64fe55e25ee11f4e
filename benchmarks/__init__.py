"""Benchmark suite: recovery of known circuits, false positives on known nulls, calibration, speed.

Run everything with ``python -m benchmarks`` (writes benchmarks/RESULTS.md and benchmarks/results.json);
each part also runs alone, e.g. ``python -m benchmarks.recovery_induction``.
"""

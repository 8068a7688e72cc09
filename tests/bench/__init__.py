"""Benchmarks (`make bench`, i.e. `python -m tests.bench`): real servers on loopback, figures as markdown tables.

Each module in `tests.bench.__main__.MODULES` has `main() -> list[str]`: it runs its benchmarks, prints a
markdown report and returns its lines, writing PASS or FAIL per goal. BENCH_QUICK=1 asks every module for a
short smoke run.
"""

"""`python -m tests.bench [name ...]`: run every benchmark module in MODULES (or those named: `predictor`,
`watch`, `request_path`, ...); write their figures into docs/benchmarks.md (between its `bench:latest` markers,
with the date and the machine); exit 1 if any goal says FAIL.

Add a module by appending its name to MODULES; it needs `main() -> list[str]` (see tests/bench/__init__.py).
`python -m tests.bench request_path ...` runs only those (and writes only their figures).
"""

from __future__ import annotations

import importlib
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

MODULES = [
    "tests.bench.predictor",
    "tests.bench.request_path",
    "tests.bench.adapter",
    "tests.bench.watch",
    "tests.bench.auth",
    "tests.bench.inference_log",
    "tests.bench.cluster",
]


DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:latest -->", "<!-- /bench:latest -->"


def write(figures: list[str]) -> None:
    """Replace the latest run's section of docs/benchmarks.md with these figures."""
    text = DOC.read_text()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cores = os.cpu_count()
    block = [BEGIN, f"## Latest `make bench` run ({when}, {cores} cores)", "", *figures, END]
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + "\n".join(block) + rest.split(END, 1)[1]
    else:
        first, _, rest = text.partition("\n\n")
        text = first + "\n\n" + "\n".join(block) + "\n\n" + rest
    DOC.write_text(text)


def main() -> int:
    wanted = sys.argv[1:]
    unknown = [w for w in wanted if f"tests.bench.{w}" not in MODULES]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(m.rsplit('.', 1)[1] for m in MODULES)}")
        return 2
    failed: list[str] = []
    figures: list[str] = []
    for name in MODULES:
        if wanted and name.rsplit(".", 1)[1] not in wanted:
            continue
        lines = importlib.import_module(name).main()
        figures += [*lines, ""]
        if any("FAIL" in line for line in lines):
            failed.append(name)
        print(flush=True)
    write(figures)
    if failed:
        print(f"goals missed in: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

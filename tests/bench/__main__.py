"""`python -m tests.bench [name ...]`: run every benchmark module in MODULES (or those named: `adapter`, `watch`,
`predictor`); exit 1 if any goal says FAIL.

Add a module by appending its name to MODULES; it needs `main() -> list[str]` (see tests/bench/__init__.py).
"""

from __future__ import annotations

import importlib
import sys

MODULES = [
    "tests.bench.predictor",
    "tests.bench.adapter",
    "tests.bench.watch",
]


def main() -> int:
    wanted = sys.argv[1:]
    unknown = [w for w in wanted if f"tests.bench.{w}" not in MODULES]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(m.rsplit('.', 1)[1] for m in MODULES)}")
        return 2
    failed: list[str] = []
    for name in MODULES:
        if wanted and name.rsplit(".", 1)[1] not in wanted:
            continue
        lines = importlib.import_module(name).main()
        if any("FAIL" in line for line in lines):
            failed.append(name)
        print(flush=True)
    if failed:
        print(f"goals missed in: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m tests.bench`: run every benchmark module in MODULES; exit 1 if any goal says FAIL.

Add a module by appending its name to MODULES; it needs `main() -> list[str]` (see tests/bench/__init__.py).
"""

from __future__ import annotations

import importlib
import sys

MODULES = [
    "tests.bench.predictor",
    "tests.bench.request_path",
    "tests.bench.adapter",
    "tests.bench.auth",
    "tests.bench.inference_log",
    "tests.bench.cluster",
]


def main() -> int:
    failed: list[str] = []
    for name in MODULES:
        lines = importlib.import_module(name).main()
        if any("FAIL" in line for line in lines):
            failed.append(name)
        print(flush=True)
    if failed:
        print(f"goals missed in: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

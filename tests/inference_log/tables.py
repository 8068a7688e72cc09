"""Reading an inference table in tests exactly as docs/inference-log.md says: its one line each for pandas, pyarrow
and DuckDB, taken from the document and run with `root` bound."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "inference-log.md"


def documented_lines() -> dict[str, str]:
    """{"pandas": line, "pyarrow": line, "duckdb": line} from the doc's "Reading it" block."""
    block = DOC.read_text().split("Reading it", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    out = {}
    for line in block.strip().splitlines():
        code, _, comment = line.partition("  # ")
        reader = re.match(r"\s*(\w+)", comment)
        assert reader, f"no reader named in {line!r}"
        out[reader.group(1).lower()] = code.strip()
    return out


def read(reader: str, root: str, **extra: Any) -> Any:
    """Run the documented line of `reader` on `root`; returns a pandas DataFrame or a pyarrow Table."""
    import duckdb
    import pandas
    import pyarrow
    import pyarrow.dataset

    scope: dict[str, Any] = {"pandas": pandas, "pyarrow": pyarrow, "duckdb": duckdb, "root": root, **extra}
    line = documented_lines()[reader]
    exec(line, scope)
    return scope.get("df", scope.get("table"))

"""Structured log lines: `message key=value ...` (logfmt values, quoted and escaped when needed).

Every line names its object (`model=... version=... isvc=ns/name action=...`). Untrusted values are
escaped, so a model name with a newline stays on one line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any


def _value(v: Any) -> str:
    s = "" if v is None else str(v)
    if s and all(c.isalnum() or c in "-_./:@%+=," for c in s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


def kv(**fields: Any) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items() if v is not None and v != "")


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "kubernetes", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

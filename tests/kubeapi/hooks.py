"""Records of the test hooks: `Request` (one entry of the request log) and `Fault` (one injection rule)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    """One logged request: what the client asked and the status it got (0: connection dropped)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    status: int
    seconds: float
    body: bytes = field(default=b"", repr=False)


@dataclass
class Fault:
    method: str
    pattern: str | re.Pattern[str]
    action: str  # "inject" | "drop" | "delay"
    times: int | None
    status: int = 500
    body: Any = None
    headers: dict[str, str] | None = None
    seconds: float = 0.0

    def matches(self, method: str, target: str) -> bool:
        if self.method not in ("*", method):
            return False
        if isinstance(self.pattern, re.Pattern):
            return bool(self.pattern.search(target))
        return self.pattern in target

"""Helpers of the auth tests: predictor settings, a gate built from them with a fresh registry and a clock the
test moves, reading a metric, and the hostile headers every mode must refuse with a 401."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry

from custom_predictor.auth import Caller, Gate, Refused
from custom_predictor.settings import Settings

T = TypeVar("T")

HOSTILE_HEADERS: dict[str, dict[str, str]] = {
    "no header": {},
    "empty bearer": {"authorization": "Bearer "},
    "basic scheme": {"authorization": "Basic YWxpY2U6c2VjcmV0"},
    "100 KB header": {"authorization": "Bearer " + "A" * 100_000},
    "100 KB api key": {"x-api-key": "sbk_demo_" + "A" * 100_000},
    "non-ASCII": {"authorization": "Bearer Ünïcødé-模型"},
    "binary junk (latin-1 decoded, as Starlette does)": {
        "authorization": "Bearer " + bytes(range(256)).decode("latin-1")
    },
    "NUL and newline": {"authorization": "Bearer abc\x00def\nghi"},
    "junk API key": {"x-api-key": "sbk_" + "\x7f" * 40},
    "two dots, not base64": {"authorization": "Bearer a.b.c"},
    "JWT-shaped junk": {"authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjF9.c2ln"},
}


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Built:
    gate: Gate
    registry: CollectorRegistry
    clock: Clock
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def check(self, headers: Mapping[str, str]) -> Caller:
        return self.run(self.gate.check(headers))

    def refused(self, headers: Mapping[str, str]) -> Refused:
        try:
            caller = self.check(headers)
        except Refused as r:
            return r
        raise AssertionError(f"expected a refusal, got {caller}")

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def close(self) -> None:
        self.run(self.gate.close())
        self.loop.close()


def settings(**auth: Any) -> Settings:
    """Predictor settings with these auth fields; the machine's KUBECONFIG or pod environment never leaks in."""
    auth.setdefault("kubeconfig", "")
    auth.setdefault("kubernetes_service_host", "")
    return Settings(model_uri="models:/m/1", **auth)


@pytest.fixture
def build() -> Any:
    made: list[Built] = []

    def make(**auth: Any) -> Built:
        clock = Clock()
        registry = CollectorRegistry()
        built = Built(Gate.from_settings(settings(**auth), registry, clock=clock), registry, clock)
        built.run(built.gate.start())
        made.append(built)
        return built

    yield make
    for b in made:
        b.close()

"""The verified-credentials cache (pure logic, a fetch function of the test's): bounded, expiring, one fetch per
key for concurrent callers, refusals kept but a 503 never."""

from __future__ import annotations

import asyncio

import pytest

from custom_predictor.auth import Caller, Refused
from custom_predictor.auth.cache import Fetch, Outcome, TtlCache, key_of
from tests.auth.conftest import Clock


def test_bounded_expiring_and_asked_once_for_concurrent_callers() -> None:
    clock = Clock()
    cache = TtlCache(size=3, ttl=60, clock=clock)
    asked: list[str] = []

    def fetch(name: str, keep: float = 600, outcome: Outcome | None = None) -> Fetch:
        async def run() -> tuple[Outcome, float]:
            asked.append(name)
            await asyncio.sleep(0.01)
            return outcome or Caller(name, "kubernetes"), keep

        return run

    async def scenario() -> None:
        callers = await asyncio.gather(*(cache.load(key_of("a"), fetch("a")) for _ in range(10)))
        assert {c.subject for c in callers} == {"a"} and asked == ["a"]
        for name in ("b", "c", "d"):  # "a" is the least recently used: it goes
            await cache.load(key_of(name), fetch(name))
        assert len(cache) == 3 and cache.get(key_of("a")) is None
        await cache.load(key_of("e"), fetch("e", keep=5))  # kept only as long as the credential lives
        clock.advance(6)
        assert cache.get(key_of("e")) is None and cache.get(key_of("d")) is not None
        clock.advance(60)  # the TTL caps the rest
        assert cache.get(key_of("d")) is None
        with pytest.raises(Refused) as first:
            await cache.load(key_of("x"), fetch("x", outcome=Refused(403, "no")))
        with pytest.raises(Refused) as again:
            await cache.load(key_of("x"), fetch("x"))
        assert first.value.status == again.value.status == 403 and first.value is not again.value
        with pytest.raises(Refused):
            await cache.load(key_of("y"), fetch("y", outcome=Refused(503, "down")))
        assert (await cache.load(key_of("y"), fetch("y"))).subject == "y"  # a 503 is asked again

    asyncio.run(scenario())
    assert asked == ["a", "b", "c", "d", "e", "x", "y", "y"]

"""The run loop (`adapter.manager.Manager`) with fakes at the adapter's own boundaries (Registry, Cluster, the
change source, the elector): what wakes a reconcile, of which models, and who may act. Real time, short rounds,
bounded waits. The same loop against the real servers: tests/adapter/test_watch_faults.py, test_ha.py,
tests/webhooks/test_run_loop.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adapter.errors import TransientError
from adapter.manager import Manager
from adapter.reconcile import Reconciler
from adapter.settings import AdapterSettings
from tests.adapter.fakes import FakeCluster, FakeRegistry, transient


def until(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Recording(Reconciler):
    """The real reconciler, noting which passes ran (None: a full pass)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.passes: list[frozenset[str] | None] = []
        self.before_pass: Callable[[], None] = lambda: None

    def run_pass(self, only: Any = None) -> Any:
        self.passes.append(None if only is None else frozenset(only))
        self.before_pass()
        return super().run_pass(only)


class Source:
    """A change source whose list answers at once (or never, with `lists=False`)."""

    def __init__(self, lists: bool = True) -> None:
        self.lists = lists
        self.changed: Callable[[str], None] | None = None
        self.starts = 0
        self.stops = 0

    def start(self, changed: Callable[[str], None], resync: Callable[[], None]) -> None:
        self.starts += 1
        self.changed = changed
        if self.lists:
            resync()

    def stop(self) -> None:
        self.stops += 1
        self.changed = None

    @property
    def running(self) -> bool:
        return self.changed is not None


class Elector:
    identity = holder = "me"
    holder_url = advertise = ""
    observed = alive = True

    def __init__(self, leading: bool) -> None:
        self.leading = leading
        self.on_change: Callable[[bool], None] = lambda _: None

    def tick(self) -> bool:
        return self.leading

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def release(self) -> None: ...

    def set(self, leading: bool) -> None:
        self.leading = leading
        self.on_change(leading)


@pytest.fixture
def make() -> Iterator[Callable[..., tuple[Manager, Recording, FakeRegistry, FakeCluster]]]:
    running: list[Manager] = []

    def build(
        source: Source | None = None, elector: Elector | None = None, tick: Any = None, **settings: Any
    ) -> tuple[Manager, Recording, FakeRegistry, FakeCluster]:
        s = AdapterSettings(
            k8s_name_space="models",
            predictor_image="img:1",
            poll_interval_seconds=600,
            webhook_port=0,
            **settings,
        )
        reg, cluster = FakeRegistry(), FakeCluster()
        rec = Recording(s, reg, cluster, retry_delays=(), backoff=(0.2,))
        m = Manager(
            s,
            rec,
            source=source or Source(),
            elector=elector,
            tick=tick,
            round_seconds=0.05,
            first_list_grace=0.5,
            on_lost_in_pass=lambda: lost.append(rec.passes[-1]),
        )
        lost: list[Any] = []
        m.lost = lost  # type: ignore[attr-defined]
        if elector is not None:
            elector.on_change = m.leadership_changed
        running.append(m)
        return m, rec, reg, cluster

    yield build
    for m in running:
        m.shutdown()
        thread = getattr(m, "thread", None)
        if thread is not None:
            thread.join(timeout=10)
            assert not thread.is_alive(), "the run loop ends on shutdown()"


def test_the_first_list_brings_one_full_pass_and_each_change_a_reconcile_of_that_model(make) -> None:
    source = Source()
    m, rec, reg, cluster = make(source)
    reg.add("risk", "1", stage="production")
    reg.add("other", "1", stage="production")
    _run(m)
    until(lambda: rec.passes == [None], "the full pass after the first list")
    until(lambda: "risk" in cluster.objects, "the apply")
    cluster.roll("risk", "ready")  # KServe reports it: the watch sees the change
    assert source.changed is not None
    source.changed("risk")
    until(lambda: reg.versions[("risk", "1")].tags.get("deployment.status") == "ready", "the ready tag")
    assert rec.passes == [None, frozenset({"risk"})], "one reconcile of that one model; no second full pass"
    assert cluster.writes["apply"] == 2, "each model applied once"


def test_a_change_source_that_does_not_list_in_time_does_not_hold_up_the_first_pass(make) -> None:
    m, rec, reg, _cluster = make(Source(lists=False))
    reg.add("risk", "1", stage="production")
    _run(m)
    until(lambda: rec.passes == [None], "the first pass after the grace period")


def test_a_rollout_fails_at_its_deadline_with_no_event_and_no_poll(make) -> None:
    m, rec, reg, _cluster = make(rollout_deadline_seconds=1)
    reg.add("risk", "1", stage="production")
    _run(m)
    until(lambda: reg.versions[("risk", "1")].tags.get("deployment.status") == "failed", "the deadline")
    assert "ProgressDeadlineExceeded" in reg.versions[("risk", "1")].tags["deployment.message"]
    assert rec.passes[0] is None and set(rec.passes[1:]) == {frozenset({"risk"})}, "requeued, not polled"


def test_a_transient_failure_is_retried_when_its_backoff_ends(make) -> None:
    m, rec, reg, cluster = make()
    reg.add("risk", "1", stage="production")
    cluster.errors["apply"] = [transient()]
    _run(m)
    until(lambda: "risk" in cluster.objects, "the apply after the backoff")
    assert rec.passes == [None, frozenset({"risk"})]


def test_a_pass_that_reaches_nothing_is_tried_again_soon(make) -> None:
    m, rec, reg, cluster = make()
    reg.add("risk", "1", stage="production")
    snapshot = reg.snapshot
    failures = [TransientError("MLflow unreachable")]

    def flaky() -> Any:
        if failures:
            raise failures.pop()
        return snapshot()

    reg.snapshot = flaky  # type: ignore[method-assign]
    _run(m)
    until(lambda: "risk" in cluster.objects, "the second full pass, a backoff after the first")
    assert rec.passes == [None, None]


def test_only_the_leader_watches_and_reconciles(make) -> None:
    source, elector = Source(), Elector(leading=False)
    m, rec, reg, cluster = make(source, elector)
    reg.add("risk", "1", stage="production")
    _run(m)
    time.sleep(0.3)
    assert source.starts == 0 and rec.passes == [], "a standby neither watches nor passes"

    elector.set(True)
    until(lambda: rec.passes == [None] and "risk" in cluster.objects, "the new leader's full pass")
    until(lambda: not m.in_pass.is_set(), "the pass to end")
    assert source.starts == 1

    elector.set(False)
    until(lambda: source.stops == 1, "the watch to stop")
    m.queue.request("risk")  # e.g. a webhook that came in just before
    time.sleep(0.3)
    assert rec.passes == [None] and m.queue.pending == set(), "queued work is dropped, not done"

    elector.set(True)
    until(lambda: rec.passes == [None, None], "a fresh list and full pass")
    assert source.starts == 2
    assert m.lost == [], "no loss happened during a pass"  # type: ignore[attr-defined]


def test_losing_the_lease_during_a_pass_ends_the_process_before_its_writes(make) -> None:
    elector = Elector(leading=True)
    m, rec, reg, _cluster = make(Source(), elector)
    reg.add("risk", "1", stage="production")
    rec.before_pass = lambda: elector.set(False)
    _run(m)
    until(lambda: m.lost == [None], "the exit of the leader that lost its Lease in a pass")  # type: ignore[attr-defined]


def test_the_local_supervisor_is_ticked_every_round(make) -> None:
    ticks: list[float] = []
    m, _rec, _reg, _cluster = make(tick=lambda: ticks.append(time.monotonic()))
    _run(m)
    until(lambda: len(ticks) >= 5, "five supervision rounds")


def _run(m: Manager) -> None:
    """The run loop in a thread (the fixture stops it)."""
    m.thread = threading.Thread(target=m.run, daemon=True, name="manager")  # type: ignore[attr-defined]
    m.thread.start()  # type: ignore[attr-defined]

"""The reconcile queue (`adapter.workqueue`): deduplicated, settled, rate-limited per model, delayed requeues,
full passes, and cleared on leadership loss. Real time, short intervals, bounded waits."""

from __future__ import annotations

import itertools
import threading
import time

from adapter.workqueue import WorkQueue


def test_trigger_returns_empty_set_on_timeout() -> None:
    t = WorkQueue()
    started = time.monotonic()
    assert t.wait(0.2).names == frozenset()
    assert 0.18 <= time.monotonic() - started < 1.0


def test_trigger_coalesces_and_clears() -> None:
    t = WorkQueue(settle=0.05)
    started = time.monotonic()
    for _ in range(50):
        t.request("m")
    t.request("n")
    assert t.wait(1).names == {"m", "n"}
    assert 0.04 <= time.monotonic() - started < 1.0  # due after `settle`, not before
    assert t.pending == set()
    assert t.wait(0.05).names == frozenset()


def wake_ups_during(t: WorkQueue, send) -> list[tuple[float, set[str]]]:
    """Run `send` in a thread while waiting on `t`; (seconds since start, names) per wake-up."""
    sender = threading.Thread(target=send)
    started = time.monotonic()
    sender.start()
    wake_ups = []
    while sender.is_alive() or t.pending:
        names = t.wait(0.5).names
        if names:
            wake_ups.append((time.monotonic() - started, names))
    sender.join()
    return wake_ups


def test_a_fast_burst_wakes_the_loop_once() -> None:
    t = WorkQueue(settle=0.5, cooldown=2.0, burst=1)

    def burst() -> None:
        for _ in range(10):  # about 0.1 s: well inside `settle`
            t.request("m")
            time.sleep(0.01)

    assert [names for _, names in wake_ups_during(t, burst)] == [{"m"}]


def test_a_slow_burst_wakes_the_loop_once_per_cooldown_and_covers_the_last_event() -> None:
    t = WorkQueue(settle=0.02, cooldown=0.3, burst=1)
    last_sent: list[float] = []

    def burst() -> None:
        started = time.monotonic()
        for _ in range(50):  # one request every 20 ms for about a second
            t.request("m")
            sent_at = time.monotonic() - started
            time.sleep(0.02)
        last_sent.append(sent_at)

    wake_ups = wake_ups_during(t, burst)
    assert all(names == {"m"} for _, names in wake_ups)
    assert 2 <= len(wake_ups) <= 2 + last_sent[0] / 0.3  # about 1 + 1.0 s / 0.3 s, not 50
    assert wake_ups[0][0] < 0.25  # the first event is not held back by the cooldown
    assert wake_ups[-1][0] >= last_sent[0]  # the last event got its own reconcile
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(wake_ups)]
    assert min(gaps) >= 0.29


def test_one_models_cooldown_does_not_hold_back_another() -> None:
    t = WorkQueue(settle=0.01, cooldown=5.0, burst=1)
    t.request("m")
    assert t.wait(1).names == {"m"}
    t.request("m")
    t.request("n")
    started = time.monotonic()
    assert t.wait(1).names == {"n"}
    assert time.monotonic() - started < 0.5
    assert t.pending == {"m"}
    assert t.wait(0.2).names == frozenset()  # m waits out its cooldown


def test_trigger_is_thread_safe() -> None:
    t = WorkQueue(settle=0.001, cooldown=0.01, burst=1)
    names = {f"model-{i}" for i in range(20)}
    got: set[str] = set()

    def send() -> None:
        for _ in range(200):
            for n in names:
                t.request(n)

    senders = [threading.Thread(target=send) for _ in range(4)]
    for s in senders:
        s.start()
    while any(s.is_alive() for s in senders):
        got |= t.wait(0.05).names
    got |= t.wait(0.05).names
    assert got == names


def test_close_wakes_a_waiter() -> None:
    t = WorkQueue()
    result: list[set[str]] = []
    waiter = threading.Thread(target=lambda: result.append(t.wait(30).names))
    waiter.start()
    time.sleep(0.05)
    started = time.monotonic()
    t.close()
    waiter.join(timeout=2)
    assert not waiter.is_alive()
    assert result == [set()]
    assert time.monotonic() - started < 1
    assert t.closed
    assert t.wait(30).names == frozenset()  # later waits return at once


def test_a_delayed_request_is_due_no_sooner_and_an_earlier_request_wins() -> None:
    t = WorkQueue(settle=0.01, cooldown=0.0, burst=1)
    t.request("m", after=30.0, reason="requeue")
    assert t.wait(0.1).names == frozenset()
    due = t.due_in("m")
    assert due is not None and 29 < due <= 30
    t.request("m", after=60.0)  # later than what is pending: changes nothing
    due = t.due_in("m")
    assert due is not None and due <= 30
    t.request("m", reason="webhook")  # sooner: wins
    work = t.wait(1)
    assert work.names == {"m"} and work.reasons == {"requeue", "webhook"}
    assert t.due_in("m") is None


def test_a_delayed_request_comes_when_due() -> None:
    t = WorkQueue(settle=0.01, cooldown=0.0, burst=1)
    started = time.monotonic()
    t.request("m", after=0.3)
    assert t.wait(2).names == {"m"}
    assert time.monotonic() - started >= 0.29


def test_resync_wakes_the_loop_with_whatever_is_due() -> None:
    t = WorkQueue(settle=0.0, cooldown=0.0, burst=1)
    t.request("later", after=30)
    t.resync()
    work = t.wait(1)
    assert work.resync and work.names == frozenset() and bool(work)
    assert t.pending == {"later"}, "a full pass does not drop a requeue that is not due yet"
    assert not t.wait(0.05)


def test_clear_forgets_pending_work() -> None:
    t = WorkQueue(settle=0.0, cooldown=10.0, burst=1)
    t.request("m")
    assert t.wait(1).names == {"m"}
    t.request("m")  # held by the cooldown
    t.request("n", after=30)
    t.resync()
    t.clear()
    assert t.pending == set() and not t.wait(0.05)
    t.request("m")
    assert t.wait(1).names == {"m"}, "the cooldown is forgotten too: a new leader starts afresh"


def test_a_burst_of_reconciles_then_one_per_cooldown() -> None:
    t = WorkQueue(settle=0.0, cooldown=0.5, burst=3)
    started = time.monotonic()
    times = []
    for _ in range(5):
        t.request("m")
        assert t.wait(5).names == {"m"}
        times.append(time.monotonic() - started)
    assert times[2] < 0.3, "three at once: an apply and KServe's first status writes are not held back"
    assert times[3] >= 0.45 and times[4] - times[3] >= 0.45, "then one per cooldown"

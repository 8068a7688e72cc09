"""Unit tests of the watch loop (`adapter.watch.Watcher`) over a scripted source at the adapter's own wrapper
boundary (`list_owned_versioned`, `watch_owned`): what is queued, from where a watch resumes, when it lists again.
The same faults against the real kube-apiserver, through the fault proxy: tests/adapter/test_watch_faults.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from adapter.errors import ExpiredError, PermanentError, TransientError
from adapter.watch import Watcher


def isvc(name: str, rv: str, model: str | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": rv, "annotations": {"mlflow.org/model-name": model or name}}}


def bookmark(rv: str) -> tuple[str, dict[str, Any]]:
    return "BOOKMARK", {"metadata": {"resourceVersion": rv}}


class Stream:
    """Its events (an exception among them is raised); then, if `open_until` is given, a watch with nothing to
    say until it is closed; else the end of the stream (the API server's timeout)."""

    def __init__(self, events: list[Any], open_until: threading.Event | None = None) -> None:
        self.events, self.open_until = events, open_until

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for e in self.events:
            if isinstance(e, Exception):
                raise e
            yield e
        if self.open_until is not None:
            self.open_until.wait(30)

    def close(self) -> None:
        if self.open_until is not None:
            self.open_until.set()


class Source:
    """Lists and watches from scripts; records every call."""

    namespace = "models"

    def __init__(self, lists: list[Any], watches: list[list[Any]]) -> None:
        self.lists, self.watches = lists, watches
        self.calls: list[tuple[str, str]] = []
        self.closed = threading.Event()
        self.idle = threading.Event()  # set when the scripts are used up and a watch waits

    def list_owned_versioned(self) -> tuple[list[dict[str, Any]], str]:
        self.calls.append(("list", ""))
        step = self.lists.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def watch_owned(self, resource_version: str, timeout_seconds: int, stall_seconds: float) -> Stream:
        self.calls.append(("watch", resource_version))
        assert 2 <= timeout_seconds <= 4 and stall_seconds == 5, "the server ends a watch before it looks stalled"
        if not self.watches:  # the script is played out: an open, quiet watch
            self.idle.set()
            return Stream([], self.closed)
        return Stream(self.watches.pop(0))


def run(source: Source, **kw: Any) -> tuple[Watcher, list[str], list[int]]:
    queued: list[str] = []
    resyncs: list[int] = []
    w = Watcher(source, stall_seconds=5, backoff=(0.01, 0.02), **kw)
    w.start(queued.append, lambda: resyncs.append(1))
    assert source.idle.wait(10), f"the script was not played out: {source.calls}"
    w.stop()
    return w, queued, resyncs


def test_lists_then_watches_from_the_lists_version_and_queues_each_change() -> None:
    source = Source(
        [([isvc("a", "10"), isvc("b", "11")], "12")],
        [
            [
                ("MODIFIED", isvc("a", "13")),
                bookmark("14"),
                ("ADDED", isvc("c", "15", model="Model C")),
                ("DELETED", isvc("b", "16")),
                ExpiredError("410", status=410),
            ],
        ],
    )
    source.lists.append(([isvc("a", "13"), isvc("c", "15", model="Model C")], "16"))
    w, queued, resyncs = run(source)
    assert resyncs == [1], "the first list asks for one full pass"
    assert queued == ["a", "Model C", "b"], "a bookmark queues nothing"
    assert source.calls == [("list", ""), ("watch", "12"), ("list", ""), ("watch", "16")]
    assert w.owned == 2


def test_a_relist_after_410_queues_only_what_changed_meanwhile() -> None:
    first = [isvc("same", "1"), isvc("edited", "2"), isvc("gone", "3")]
    then = [isvc("same", "1"), isvc("edited", "7"), isvc("new", "8")]
    source = Source([(first, "5"), (then, "9")], [[ExpiredError("410 Gone", status=410)]])
    _, queued, resyncs = run(source)
    assert resyncs == [1]
    assert sorted(queued) == ["edited", "gone", "new"]
    assert source.calls[-2:] == [("list", ""), ("watch", "9")]


@pytest.mark.parametrize(
    "error",
    [
        TransientError("Kubernetes watch inferenceservices: 500 boom", status=500),
        TransientError("Kubernetes watch inferenceservices: 429 slow down", status=429),
        TransientError("Kubernetes watch inferenceservices: connection lost (ProtocolError)"),
        TransientError("Kubernetes watch inferenceservices: no event or bookmark for 5s"),
    ],
)
def test_a_failed_or_stalled_watch_resumes_from_the_last_version_without_a_list(error: TransientError) -> None:
    source = Source(
        [([isvc("a", "1")], "2")],
        [[("MODIFIED", isvc("a", "3")), error], [error], [("MODIFIED", isvc("a", "4"))]],
    )
    _, queued, _ = run(source)
    assert source.calls == [("list", ""), ("watch", "2"), ("watch", "3"), ("watch", "3"), ("watch", "4")]
    assert queued == ["a", "a"]


def test_a_failing_list_is_retried_and_then_asks_for_the_full_pass() -> None:
    source = Source(
        [TransientError("500", status=500), TransientError("429", status=429), ([isvc("a", "1")], "2")],
        [],
    )
    _, queued, resyncs = run(source)
    assert [c[0] for c in source.calls] == ["list", "list", "list", "watch"]
    assert resyncs == [1] and queued == []


def test_a_forbidden_watch_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    denied = PermanentError("Kubernetes list inferenceservices: 403 forbidden", status=403)
    source = Source([denied, ([], "1")], [])
    run(source)
    assert "403 forbidden" in caplog.text


def test_only_wanted_models_are_queued() -> None:
    source = Source(
        [([], "1")],
        [[("ADDED", isvc("x", "2", model="team-a-risk")), ("ADDED", isvc("y", "3", model="team-b-risk"))]],
    )
    _, queued, _ = run(source, wanted=lambda m: m.startswith("team-a-"))
    assert queued == ["team-a-risk"]


def test_stop_ends_an_open_watch_at_once_and_start_begins_from_a_fresh_list() -> None:
    source = Source([([isvc("a", "1")], "2"), ([isvc("a", "5")], "6")], [])
    queued: list[str] = []
    resyncs: list[int] = []
    w = Watcher(source, stall_seconds=5)
    w.start(queued.append, lambda: resyncs.append(1))
    assert source.idle.wait(10)
    w.stop()
    assert source.closed.is_set(), "stop() closes the open watch"
    source.idle.clear()
    source.closed.clear()
    w.start(queued.append, lambda: resyncs.append(1))  # a new leader: lists again, one more full pass
    assert source.idle.wait(10)
    w.stop()
    assert source.calls == [("list", ""), ("watch", "2"), ("list", ""), ("watch", "6")]
    assert resyncs == [1, 1] and queued == []

"""Rollout bookkeeping on the object: fingerprint, base revision, start time (adapter/bookkeeping.py)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from adapter import bookkeeping as bk
from adapter.render import render
from adapter.settings import AdapterSettings
from adapter.types import VersionInfo

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = AdapterSettings(predictor_image="img:1")


def desired(version: str = "1", canary: int | None = None) -> dict:
    doc = render(S, VersionInfo("m", version))
    if canary is not None:
        doc["spec"]["predictor"]["canaryTrafficPercent"] = canary
    return doc


def observed(doc: dict, created: str) -> dict:
    obj = copy.deepcopy(doc)
    obj["status"] = {"components": {"predictor": {"latestCreatedRevision": created}}}
    return obj


def test_a_first_apply_starts_a_rollout_from_no_revision() -> None:
    doc = bk.stamp(desired(), None, T0)
    kept = bk.read(doc)
    assert kept == bk.Bookkeeping(bk.fingerprint(desired()), "", T0)
    assert bk.changed(desired(), None)


def test_same_spec_keeps_the_bookkeeping_and_is_unchanged() -> None:
    first = observed(bk.stamp(desired(), None, T0), "m-predictor-00001")
    again = bk.stamp(desired(), first, T0 + timedelta(hours=1))
    assert bk.read(again) == bk.read(first)
    assert not bk.changed(desired(), first)


def test_a_new_version_is_a_new_rollout_based_on_the_revision_seen_now() -> None:
    first = observed(bk.stamp(desired("1"), None, T0), "m-predictor-00001")
    assert bk.changed(desired("2"), first)
    second = bk.stamp(desired("2"), first, T0 + timedelta(minutes=5))
    assert bk.read(second) == bk.Bookkeeping(
        bk.fingerprint(desired("2")), "m-predictor-00001", T0 + timedelta(minutes=5)
    )


def test_traffic_alone_changes_no_annotation_but_is_a_change() -> None:
    canary = observed(bk.stamp(desired("2", canary=20), None, T0), "m-predictor-00002")
    promoted = desired("2")
    assert bk.fingerprint(promoted) == bk.fingerprint(desired("2", canary=20))
    assert bk.changed(promoted, canary) and bk.changed(desired("2", canary=0), canary)
    stamped = bk.stamp(promoted, canary, T0 + timedelta(hours=1))
    ann = lambda o: {k: v for k, v in o["metadata"]["annotations"].items() if k in bk.KEYS}  # noqa: E731
    assert ann(stamped) == ann(canary)  # the revision template KServe renders stays the same


def test_objects_without_bookkeeping_read_as_none() -> None:
    assert bk.read(desired()) is None and bk.read(None) is None
    broken = desired()
    broken["metadata"]["annotations"].update({bk.ANN_FINGERPRINT: "x", bk.ANN_STARTED: "yesterday"})
    assert bk.read(broken) == bk.Bookkeeping("x", "", None)

"""Lifecycle events: rate limits, records, presence, and the reference doc."""

from __future__ import annotations

import json

from agent.lifecycle import events as ev
from agent.lifecycle.emitter import Lifecycle, RateLimiter
from agent.lifecycle.presence import Presence
from agent.lifecycle.settings import LifecycleSettings
from scripts.gen_lifecycle_docs import DOC, render


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _lost(lc: Lifecycle) -> ev.UplinkLost:
    return ev.UplinkLost(
        gateway_id=lc.gateway_id, at_ms=1, reason="x", backlog_records=0, backlog_bytes=0
    )


def test_rate_limiter_allows_a_burst_then_the_sustained_rate():
    """A burst of N passes, the next is held back, and tokens come back with time."""
    clock = Clock()
    limiter = RateLimiter(burst=3, per_min=6, clock=clock)
    assert [limiter.allow("k") for _ in range(4)] == [True, True, True, False]
    clock.now += 10  # 6 per minute = one token per 10 s
    assert limiter.allow("k")
    assert not limiter.allow("k")
    assert limiter.allow("other")  # keys are independent


def test_lifecycle_suppresses_a_flapping_kind_and_counts_it():
    """A flapping uplink cannot flood the topic: excess events are counted, not queued."""
    counted: list[tuple[str, str]] = []
    lc = Lifecycle(
        LifecycleSettings(rate_limit_burst=2, rate_limit_per_min=1),
        "gw",
        on_counted=lambda kind, result: counted.append((kind, result)),
        clock=Clock(),
    )
    sent = [lc.emit(_lost(lc)) for _ in range(5)]
    assert sent == [True, True, False, False, False]
    assert lc.emitted["uplink_lost"] == 2
    assert lc.suppressed["uplink_lost"] == 3
    assert counted.count(("uplink_lost", "suppressed")) == 3
    assert lc.emit(_lost(lc), force=True)  # final reports at shutdown always go


def test_lifecycle_record_is_keyed_and_carries_the_event_headers():
    """Device events are keyed by device id, others by gateway id; headers name the event."""
    lc = Lifecycle(LifecycleSettings(topic="life"), "gw-1")
    online = ev.DeviceOnline(
        gateway_id="gw-1", at_ms=5, device_id="dev-9", first_seen=True, offline_for_ms=None
    )
    record = lc.to_record(online)
    assert record.topic == "life"
    assert record.key == b"dev-9"
    assert record.timestamp_ms == 5
    headers = dict(record.headers)
    assert headers["event-kind"] == b"device_online"
    assert headers["message-id"] == online.event_id.encode()
    assert json.loads(record.value)["device_id"] == "dev-9"
    assert lc.to_record(_lost(lc)).key == b"gw-1"


def test_presence_reports_online_offline_and_online_again_once_each():
    """First message → online; silence past the timeout → offline once; next message → online."""
    now = [0]
    lc = Lifecycle(LifecycleSettings(device_offline_after_secs=10), "gw")
    presence = Presence(
        LifecycleSettings(device_offline_after_secs=10), lc, clock_ms=lambda: now[0]
    )
    presence.seen("a", 0)
    presence.seen("a", 1_000)
    now[0] = 5_000
    assert presence.check() == 0
    now[0] = 12_000
    assert presence.check() == 1
    assert presence.check() == 0  # reported once
    presence.seen("a", 13_000)
    kinds = [e.kind for e in lc._pending]
    assert kinds == ["device_online", "device_offline", "device_online"]
    last = lc._pending[-1]
    assert isinstance(last, ev.DeviceOnline)
    assert last.offline_for_ms == 1_000


def test_presence_tracks_a_bounded_number_of_devices():
    """Beyond max_tracked_devices new devices are counted as untracked, not stored."""
    settings = LifecycleSettings(max_tracked_devices=2)
    presence = Presence(settings, Lifecycle(settings, "gw"))
    for device in ("a", "b", "c", "d"):
        presence.seen(device, 0)
    assert presence.online_count == 2
    assert presence.untracked == 2


def test_lifecycle_reference_doc_is_current():
    """docs/reference/lifecycle-events.md matches the models (run scripts/gen_lifecycle_docs.py)."""
    assert DOC.read_text() == render(), "run: .venv/bin/python scripts/gen_lifecycle_docs.py"
    for kind in ev.KINDS:
        assert f"## `{kind}`" in DOC.read_text()

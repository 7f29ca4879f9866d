"""/status: uplink, MQTT, spool depth, rates from counters, last errors; all bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from types import MappingProxyType

from agent.spool import DropReason, SpoolStats
from agent.telemetry import HttpServer, HttpSettings, LoopWatchdog, Metrics, Readiness, health
from agent.telemetry.health import RATE_WINDOW_SECS, ErrorRing, StatusBoard

NOW_MS = 1_700_000_000_000


class Clock:
    """Monotonic seconds that move only when the test moves them."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def _spool_stats(records: int, size_bytes: int, oldest_ms: int | None) -> SpoolStats:
    zero = MappingProxyType(dict.fromkeys(DropReason, 0))
    return SpoolStats(records // 10, records, size_bytes, oldest_ms, zero, zero, 0, 0)


def _board(checks: dict[str, bool] | None = None) -> tuple[StatusBoard, Metrics, Clock]:
    clock = Clock()
    metrics = Metrics(process_metrics=False, version="9.9.9", clock_ms=lambda: NOW_MS)
    values = checks if checks is not None else {"mqtt_subscribed": True, "spool_writable": True}
    readiness = Readiness(lambda: values, required={"mqtt_subscribed", "spool_writable"})
    board = StatusBoard(
        metrics,
        LoopWatchdog(10.0, clock=clock),
        readiness,
        clock=clock,
        wall_clock=lambda: NOW_MS / 1000 + clock.now,
    )
    return board, metrics, clock


def test_status_rates_are_counter_differences_over_the_window() -> None:
    """Rates are (counter now - counter at the window's first sample) / the time between them."""
    board, metrics, clock = _board()
    metrics.spooled(1000)
    board.sample()
    clock.now += 5.0
    metrics.spooled(500)
    metrics.set_topics(normalized="n", raw="r", dlq="d", lifecycle="l")
    document = board.document()
    assert document["rates"]["interval_secs"] == 5.0
    assert document["rates"]["records_spooled_per_sec"] == 100.0
    assert document["rates"]["records_forwarded_per_sec"] == 0.0
    assert document["totals"]["records_spooled"] == 1500


def test_status_rate_window_forgets_old_samples() -> None:
    """After a long quiet spell the rate covers about the last window, not the whole uptime."""
    board, metrics, clock = _board()
    for _ in range(30):
        board.sample()
        clock.now += 1.0
    metrics.spooled(200)
    document = board.document()
    assert RATE_WINDOW_SECS - 1 <= document["rates"]["interval_secs"] <= RATE_WINDOW_SECS + 1
    assert document["rates"]["records_spooled_per_sec"] == round(
        200 / document["rates"]["interval_secs"], 3
    )


def test_status_times_uplink_and_mqtt_state_changes() -> None:
    """'for_secs' counts from the sample that first saw the new state."""
    board, metrics, clock = _board()
    board.sample()
    clock.now += 30.0
    metrics.set_uplink(up=True)
    metrics.set_mqtt_connected(connected=True)
    board.sample()
    clock.now += 12.0
    document = board.document()
    assert document["uplink"]["up"] is True
    assert document["uplink"]["for_secs"] == 12.0
    assert document["mqtt"]["connected"] is True
    assert document["mqtt"]["subscribed"] is True
    assert document["uptime_secs"] == 42.0
    metrics.set_uplink(up=False)
    clock.now += 3.0
    board.sample()
    clock.now += 4.0
    document = board.document()
    assert document["uplink"] == {
        "up": False,
        "for_secs": 4.0,
        "since_ms": document["now_ms"] - 4000,
    }


def test_status_spool_depth_comes_from_the_render_hooks() -> None:
    """The spool snapshot hooks run at request time: depth and oldest age are current."""
    board, metrics, _ = _board()
    stats = {"now": _spool_stats(1204, 50_000, NOW_MS - 12_000)}
    metrics.on_render(lambda: metrics.set_spool(stats["now"]))
    assert board.document()["spool"] == {"records": 1204, "bytes": 50_000, "oldest_age_secs": 12.0}
    stats["now"] = _spool_stats(0, 0, None)
    assert board.document()["spool"] == {"records": 0, "bytes": 0, "oldest_age_secs": None}


def test_status_is_unhealthy_when_not_ready_and_says_which_check() -> None:
    """healthy = loop turning and every required check true; the checks are in the document."""
    board, _, _ = _board({"mqtt_subscribed": False, "spool_writable": True})
    document = board.document()
    assert document["healthy"] is False
    assert document["checks"]["mqtt_subscribed"] is False
    assert document["version"] == "9.9.9"
    assert document["config_generation"] == 0
    assert document["schema"] == 1


def test_error_ring_keeps_the_newest_warnings_with_their_error_field() -> None:
    """Below WARNING is ignored; only the newest N are kept; the 'error' field comes along."""
    ring = ErrorRing(capacity=3)
    logger = logging.getLogger("test.status.ring")
    logger.addHandler(ring)
    logger.propagate = False
    try:
        logger.info("Not kept.")
        for i in range(5):
            logger.warning("Problem %d.", i, extra={"error": f"cause {i}"})
    finally:
        logger.removeHandler(ring)
    entries = ring.entries()
    assert [e["message"] for e in entries] == ["Problem 2.", "Problem 3.", "Problem 4."]
    assert entries[-1]["error"] == "cause 4"
    assert entries[-1]["level"] == "WARNING"
    assert entries[-1]["logger"] == "test.status.ring"


async def test_http_status_serves_the_document_and_collects_errors_while_running() -> None:
    """GET /status is JSON; warnings logged while the server runs show in last_errors."""
    metrics = Metrics(process_metrics=False)
    readiness = Readiness(
        lambda: {"mqtt_subscribed": True, "spool_writable": True}, required={"spool_writable"}
    )
    server = HttpServer(
        HttpSettings(listen_host="127.0.0.1", port=0), metrics, LoopWatchdog(10.0), readiness
    )
    task = asyncio.create_task(server.run())
    try:
        async with asyncio.timeout(5):
            port = await server.wait_listening()
            logging.getLogger("agent.test").error("Something broke.", extra={"error": "boom"})
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /status HTTP/1.1\r\nHost: agent\r\n\r\n")
            await writer.drain()
            data = await reader.read()
            writer.close()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Type: application/json" in head
    document = json.loads(body)
    assert document["healthy"] is True
    assert document["uplink"]["up"] is False
    assert document["last_errors"][-1]["message"] == "Something broke."
    assert document["last_errors"][-1]["error"] == "boom"
    root_handlers = logging.getLogger().handlers
    assert not any(isinstance(h, ErrorRing) for h in root_handlers)  # removed when it stopped


async def test_status_sampler_survives_a_failing_sample(monkeypatch, caplog) -> None:
    """A sample that raises is logged once and the sampler keeps going (the endpoint stays up)."""
    board, _, _ = _board()
    calls = []
    enough = asyncio.Event()

    def flaky() -> dict[str, float]:
        calls.append(1)
        if len(calls) >= 4:
            enough.set()
        raise RuntimeError("broken")

    monkeypatch.setattr(health, "SAMPLE_INTERVAL_SECS", 0)
    monkeypatch.setattr(board, "sample", flaky)
    task = asyncio.create_task(board.run())
    try:
        async with asyncio.timeout(5):
            await enough.wait()
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    warnings = [r for r in caplog.records if "Sampling the status counters failed" in r.message]
    assert len(warnings) == 1

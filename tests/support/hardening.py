"""Helpers of the hardening acceptance tests (issue 9): odd payloads, outcome accounting."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt

from tests.support.agent import AgentProcess
from tests.support.kafka import Consumed
from tests.support.metrics import MetricsPage

SETTLED = "edge_agent_records_settled_total"
RESETS = "edge_agent_producer_resets_total"
CLOCK_AHEAD = "edge_agent_clock_ahead_of_kafka_seconds"
SPOOL_RECORDS = "edge_agent_spool_records"


def big_payload(size: int, label: str) -> bytes:
    """A JSON-looking payload of exactly ``size`` bytes whose bulk is random (incompressible).

    Random bytes matter: zstd would shrink a run of one letter to nothing and the broker would
    never see a large batch.
    """
    head = json.dumps({"device_id": label, "metric": "blob", "value": 1, "data": ""})[:-2]
    body_len = size - len(head) - 2
    body = base64.b64encode(os.urandom(body_len))[:body_len]
    out = head.encode() + body + b'"}'
    assert len(out) == size
    return out


def reading_without_ts(device: str, seq: int) -> bytes:
    """A valid reading with no timestamp: the agent stamps it with its own receive time."""
    body = {"device_id": device, "metric": "temperature", "value": 21.5, "tags": {"seq": str(seq)}}
    return json.dumps(body, separators=(",", ":")).encode()


async def publish_all(port: int, messages: list[tuple[str, bytes]]) -> int:
    """Publish each message with QoS 1, one at a time; returns how many the broker acked."""
    acked = 0
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=100) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)
            acked += 1
    return acked


async def scrape(agent: AgentProcess) -> MetricsPage:
    """One scrape of the agent's /metrics, off the event loop."""
    return await asyncio.to_thread(agent.metrics)


async def wait_metrics(
    agent: AgentProcess, cond: Callable[[MetricsPage], bool], timeout_s: float, what: str
) -> MetricsPage:
    """Scrape every 250 ms until ``cond`` holds; fail naming ``what`` and the agent's log tail."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert agent.running, f"the agent exited while waiting for {what}:\n{agent.log_tail(30)}"
        try:
            page = await scrape(agent)
        except OSError:  # refused: the agent is exiting (checked on the next turn) or restarting
            page = None
        if page is not None and cond(page):
            return page
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{agent.log_tail(12)}"
        await asyncio.sleep(0.25)


def counted_drops(page: MetricsPage, **labels: str) -> float:
    """Records the agent settled as dropped (Kafka would never take them), from /metrics.

    ``edge_agent_records_settled_total{outcome="dropped"}`` once it exists; before that (today's
    agent) the old ``records_dropped_total{reason="kafka_rejected"}``.
    """
    if page.has(SETTLED):
        return page.value(SETTLED, outcome="dropped", **labels)
    if labels:
        return 0.0
    return page.value("edge_agent_records_dropped_total", reason="kafka_rejected")


@dataclass(frozen=True)
class DlqCheck:
    """How one oversized message appears in the DLQ: how many copies, and what is wrong."""

    topic: str
    size: int
    found: int
    problems: tuple[str, ...]


def check_dlq_copy(records: list[Consumed], topic: str, payload: bytes, limit: int) -> DlqCheck:
    """Find the DLQ records of the message published on ``topic``; check they are bounded.

    A DLQ record must fit the producer's request size (``limit``). Either it is the whole
    payload, or a prefix of it with ``original-size`` and ``payload-sha256`` headers that
    describe the whole payload.
    """
    mine = [r for r in records if r.headers.get("source-topic", b"").decode() == topic]
    problems: list[str] = []
    digest = hashlib.sha256(payload).hexdigest().encode()
    for rec in mine:
        if len(rec.value) > limit:
            problems.append(f"{len(rec.value)} bytes > {limit}")
        if rec.value == payload:
            continue
        if not payload.startswith(rec.value):
            problems.append("value is not a prefix of the payload")
        if rec.headers.get("original-size") != str(len(payload)).encode():
            problems.append(f"original-size={rec.headers.get('original-size')!r}")
        if rec.headers.get("payload-sha256") != digest:
            problems.append("payload-sha256 missing or wrong")
    return DlqCheck(topic, len(payload), len(mine), tuple(problems))


def readings_in(records: list[Consumed]) -> set[tuple[str, int]]:
    """``(device_id, seq)`` of every record whose value is a reading (raw or normalized) JSON."""
    out: set[tuple[str, int]] = set()
    for rec in records:
        try:
            body = json.loads(rec.value)
            out.add((str(body["device_id"]), int(body["tags"]["seq"])))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def dropped_in_log(log: str, topic: str) -> int:
    """Records of ``topic`` the forwarder logged as refused by Kafka and dropped.

    The log line is the only place that names the topic of a dropped record (the metric has a
    reason label only).
    """
    sentence = "Kafka refused a record for good; it is dropped."
    return sum(1 for line in log.splitlines() if sentence in line and f"topic={topic} " in line)


def lifecycle_kinds(records: list[Consumed]) -> list[str]:
    """The kind of each lifecycle event (``kind`` field, or ``event``)."""
    out = []
    for rec in records:
        event = json.loads(rec.value)
        out.append(str(event.get("kind", event.get("event", ""))))
    return out

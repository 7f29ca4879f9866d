"""The composition root in process: real Agent and spool, fake MQTT and Kafka; seconds per test."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest
import yaml

from agent import app as app_module
from agent.app import EXIT_RESERVE_SECS, SHUTDOWN_MARGIN_SECS
from agent.cli import EX_CONFIG, main
from agent.config import InvalidConfigError, load_config
from agent.errors import PermanentError, RetryableError
from agent.lifecycle.emitter import LifecycleDropReason
from agent.spool import Spool
from tests.unit.app._fakes import FakeKafka
from tests.unit.app.conftest import GATEWAY, reading, settings_for, wait_until

NORMALIZED = "iot.telemetry.normalized"


def _events(kafka: FakeKafka, topic: str, kind: str) -> list[dict]:
    out = [json.loads(r.value) for r in kafka.records(topic)]
    return [e for e in out if e["kind"] == kind]


async def test_agent_forwards_acks_and_drains_with_fake_edges(start):
    """Every reading published reaches Kafka, is acked to MQTT, and the drain empties the spool."""
    running = await start()
    for i in range(20):
        await running.source.publish("plant/a", reading(i))
    await wait_until(lambda: len(running.kafka.records(NORMALIZED)) == 20)
    code, _ = await running.stop()
    assert code == 0
    assert running.agent.drained
    assert [m.mid for m in running.source.acked] == list(range(1, 21))
    values = [json.loads(r.value)["value"] for r in running.kafka.records(NORMALIZED)]
    assert values == list(range(20))
    (stopped,) = _events(running.kafka, "iot.lifecycle", "agent_stopped")
    assert stopped["drained"] is True


async def test_agent_reload_of_mixed_live_and_restart_change_applies_only_the_live_part(
    start, tmp_path
):
    """rate_limit_burst (live) and lifecycle.topic (restart) together: only the burst applies."""
    spool_dir = tmp_path / "spool"
    config = tmp_path / "agent.yaml"
    settings = settings_for(spool_dir)
    running = await start(settings, config_path=config)
    base = json.loads(settings.model_dump_json())
    base["lifecycle"] = {**base["lifecycle"], "rate_limit_burst": 50, "topic": "iot.lifecycle.v2"}
    config.write_text(yaml.safe_dump(base))
    running.agent.request_reload()
    await wait_until(lambda: running.agent.reloader.generation == 2)

    lifecycle_settings = running.agent.lifecycle._settings
    assert lifecycle_settings.rate_limit_burst == 50
    assert lifecycle_settings.topic == "iot.lifecycle"
    assert running.agent.settings.lifecycle.topic == "iot.lifecycle"
    assert running.agent.reloader.current.lifecycle.topic == "iot.lifecycle.v2"
    await wait_until(lambda: _events(running.kafka, "iot.lifecycle", "config_applied"))
    (applied,) = _events(running.kafka, "iot.lifecycle", "config_applied")
    assert applied["changed_fields"] == ["lifecycle.rate_limit_burst", "lifecycle.topic"]
    assert applied["restart_required_fields"] == ["lifecycle.topic"]
    assert running.kafka.records("iot.lifecycle.v2") == []
    code, _ = await running.stop()
    assert code == 0
    assert running.kafka.records("iot.lifecycle.v2") == []


async def test_agent_shutdown_with_kafka_stalled_ends_within_the_drain_budget(start, tmp_path):
    """Kafka stops acknowledging: SIGTERM still returns within drain + margin; records stay."""
    settings = settings_for(tmp_path / "spool", drain_timeout_secs=0.5)
    running = await start(settings)
    await running.source.publish("plant/a", reading(0))
    await wait_until(lambda: len(running.kafka.records(NORMALIZED)) == 1)
    running.kafka.stall()
    for i in range(1, 11):
        await running.source.publish("plant/a", reading(i))
    await wait_until(lambda: len(running.source.acked) == 11)

    code, elapsed = await running.stop()

    assert code == 0
    assert not running.agent.drained
    assert elapsed <= settings.drain_timeout_secs + SHUTDOWN_MARGIN_SECS - EXIT_RESERVE_SECS + 0.5
    async with Spool(settings.spool) as spool:  # the unsent readings are still on disk
        blocks = await spool.read(None, 100)
    left = [r for b in blocks for r in b.records if r.topic == NORMALIZED]
    assert [json.loads(r.value)["value"] for r in left] == list(range(1, 11))


async def test_agent_shutdown_with_full_blocking_spool_drops_lifecycle_events_in_budget(
    start, tmp_path
):
    """Kafka down, spool full under block: exit in budget; unstored events counted as dropped."""
    settings = settings_for(
        tmp_path / "spool",
        spool={"max_size_bytes": 4096, "overflow_policy": "block"},
        ingest={"commit_interval_ms": 0, "max_batch_messages": 1},
    )
    kafka = FakeKafka()
    kafka.mode = "down"
    running = await start(settings, kafka)
    for i in range(200):
        await running.source.publish("plant/a", reading(i))
        if running.agent.spool.stats().appends_waiting:
            break
    await wait_until(lambda: running.agent.spool.stats().appends_waiting > 0)

    code, elapsed = await running.stop()

    assert code == 0
    assert elapsed <= settings.drain_timeout_secs + SHUTDOWN_MARGIN_SECS - EXIT_RESERVE_SECS + 0.5
    lifecycle = running.agent.lifecycle
    assert lifecycle.dropped[LifecycleDropReason.SHUTDOWN_DEADLINE] >= 1
    assert lifecycle.pending == 0
    dropped = running.agent.metrics.registry.get_sample_value(
        "edge_agent_lifecycle_events_dropped_total", {"reason": "shutdown_deadline"}
    )
    assert dropped == lifecycle.dropped[LifecycleDropReason.SHUTDOWN_DEADLINE]


async def test_agent_survives_retryable_errors_from_spool_expiry(start, monkeypatch):
    """Expiry failing with RetryableError (disk full) is retried; the agent keeps forwarding."""
    monkeypatch.setattr(app_module, "EXPIRY_INTERVAL_SECS", 0.02)
    running = await start()
    calls = 0

    async def failing_expire() -> int:
        nonlocal calls
        calls += 1
        raise RetryableError("database or disk is full")

    monkeypatch.setattr(running.agent.spool, "expire", failing_expire)
    await wait_until(lambda: calls >= 3)
    await running.source.publish("plant/a", reading(1))
    await wait_until(lambda: len(running.kafka.records(NORMALIZED)) == 1)
    assert not running.task.done()
    code, _ = await running.stop()
    assert code == 0


async def test_agent_survives_retryable_errors_from_spool_remove(start, monkeypatch):
    """remove() failing for a while (a delete needs disk space too) does not end the agent."""
    running = await start()
    spool = running.agent.spool
    real_remove = spool.remove
    failures = 3

    async def flaky_remove(*ids: int) -> int:
        nonlocal failures
        if failures:
            failures -= 1
            raise RetryableError("database or disk is full")
        return await real_remove(*ids)

    monkeypatch.setattr(spool, "remove", flaky_remove)
    await running.source.publish("plant/a", reading(1))
    await wait_until(
        lambda: running.task.done() or (failures == 0 and spool.stats().blocks == 0), 5
    )
    assert not running.task.done()
    code, _ = await running.stop()
    assert code == 0


async def test_agent_start_retries_a_spool_that_cannot_open_yet(start, monkeypatch, caplog):
    """spool.open() raising RetryableError is retried with a log line, then the agent runs."""
    monkeypatch.setattr(app_module, "OPEN_RETRY_INITIAL_SECS", 0.01)
    monkeypatch.setattr(app_module, "OPEN_RETRY_MAX_SECS", 0.02)
    real_open = Spool.open
    failures = 2

    async def flaky_open(self: Spool) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise RetryableError("database or disk is full")
        await real_open(self)

    monkeypatch.setattr(Spool, "open", flaky_open)
    with caplog.at_level(logging.ERROR, logger="agent.app"):
        running = await start()
    assert failures == 0
    assert [r.getMessage() for r in caplog.records].count(
        "Cannot open the spool; retrying. Free disk space or stop the other process using "
        "the spool directory."
    ) == 2
    await running.source.publish("plant/a", reading(1))
    await wait_until(lambda: len(running.kafka.records(NORMALIZED)) == 1)
    code, _ = await running.stop()
    assert code == 0


async def test_agent_shutdown_while_the_spool_cannot_open_exits_0(start, monkeypatch):
    """SIGTERM while start-up waits for the disk ends the retries and exits 0 (nothing to drain)."""
    monkeypatch.setattr(app_module, "OPEN_RETRY_INITIAL_SECS", 0.01)
    monkeypatch.setattr(app_module, "OPEN_RETRY_MAX_SECS", 0.02)

    async def never_opens(_self: Spool) -> None:
        raise RetryableError("database or disk is full")

    monkeypatch.setattr(Spool, "open", never_opens)
    running = await start(connected=False)
    await asyncio.sleep(0.1)
    assert not running.task.done()
    code, elapsed = await running.stop()
    assert code == 0
    assert elapsed < 1


async def test_agent_start_with_a_damaged_spool_raises_permanent_error(start, monkeypatch):
    """A PermanentError at open is not retried: run raises it (the CLI exits 1 with one line)."""

    async def damaged(_self: Spool) -> None:
        raise PermanentError("The spool database is damaged; move it aside.")

    monkeypatch.setattr(Spool, "open", damaged)
    running = await start(connected=False)
    with pytest.raises(PermanentError, match="damaged"):
        await running.task


def test_cli_run_exits_1_with_one_line_when_the_spool_is_damaged(tmp_path, monkeypatch, capsys):
    """`edge-agent run` turns a PermanentError into exit 1 and one line on stderr, no traceback."""

    async def damaged(_self: Spool) -> None:
        raise PermanentError("The spool database is damaged; move it aside.")

    monkeypatch.setattr(Spool, "open", damaged)
    monkeypatch.setattr("agent.logs.configure_logging", lambda *_: None)
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "gateway_id": GATEWAY,
                "http": {"enabled": False},
                "spool": {"directory": str(tmp_path / "s")},
                "kafka": {"bootstrap_servers": "kafka.test:9092"},
            }
        )
    )
    assert main(["run", "--config", str(config)]) == 1
    assert capsys.readouterr().err == "edge-agent: The spool database is damaged; move it aside.\n"


@pytest.mark.parametrize("gateway_id", ["gw\x01x", "gw\x00", "gw\u200bx", " gw", "gw\n"])
def test_agent_config_refuses_a_gateway_id_unusable_as_key_or_client_id(
    gateway_id, tmp_path, capsys
):
    """A gateway id with a control or invisible character fails at load, naming the field."""
    with pytest.raises(InvalidConfigError) as caught:
        load_config(overrides={"gateway_id": gateway_id}, environ={})
    (problem,) = caught.value.problems
    assert problem.path == "gateway_id"
    config = tmp_path / "agent.yaml"
    config.write_text(json.dumps({"gateway_id": gateway_id}))  # JSON escapes are YAML too
    assert main(["check-config", str(config)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "gateway_id" in err
    assert "gateway id" in err


async def test_agent_component_failing_for_good_raises_its_own_error(start, tmp_path):
    """The HTTP port taken: run raises that PermanentError itself, not an exception group."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = settings_for(
            tmp_path / "spool", http={"enabled": True, "listen_host": "127.0.0.1", "port": port}
        )
        running = await start(settings, connected=False)
        with pytest.raises(PermanentError, match="Cannot listen"):
            await asyncio.wait_for(running.task, 30)


async def _get(port: int, path: str) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_agent_waiting_for_its_disk_is_alive_but_not_ready(start, tmp_path, monkeypatch):
    """While the spool cannot open, /healthz says alive and /readyz not ready: no probe kills it."""
    monkeypatch.setattr(app_module, "OPEN_RETRY_INITIAL_SECS", 0.01)
    monkeypatch.setattr(app_module, "OPEN_RETRY_MAX_SECS", 0.02)

    async def never_opens(_self: Spool) -> None:
        raise RetryableError("database or disk is full")

    monkeypatch.setattr(Spool, "open", never_opens)
    settings = settings_for(
        tmp_path / "spool", http={"enabled": True, "listen_host": "127.0.0.1", "port": 0}
    )
    running = await start(settings, connected=False)
    port = await asyncio.wait_for(running.agent.http.wait_listening(), 10)
    status, _ = await _get(port, "/healthz")
    assert status == 200
    status, report = await _get(port, "/readyz")
    assert status == 503
    assert report["checks"]["spool_writable"] is False
    code, _ = await running.stop()
    assert code == 0

"""``edge-agent status`` and ``top``: plain words from /status, exit codes, unreachable agents."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
from collections.abc import AsyncIterator

import pytest

from agent import cli
from agent.config import load_config
from agent.ops import status_cmd
from agent.ops.status_cmd import Target
from agent.telemetry import HttpServer, HttpSettings, LoopWatchdog, Metrics, Readiness

ESC = "\x1b["


def _document(**changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "schema": 1,
        "version": "0.1.0",
        "now_ms": 1_700_000_100_000,
        "uptime_secs": 600.0,
        "config_generation": 2,
        "healthy": True,
        "ready": True,
        "checks": {"mqtt_subscribed": True, "spool_writable": True, "uplink_up": True},
        "loop": {"healthy": True, "last_tick_age_secs": 0.2, "stall_secs": 10.0},
        "uplink": {"up": True, "for_secs": 180.0, "since_ms": 1_700_000_000_000},
        "mqtt": {"connected": True, "for_secs": 590.0, "since_ms": 0, "subscribed": True},
        "spool": {"records": 1204, "bytes": 90_000, "oldest_age_secs": 12.0},
        "rates": {
            "interval_secs": 10.0,
            "mqtt_received_per_sec": 500.0,
            "records_spooled_per_sec": 1000.0,
            "records_forwarded_per_sec": 990.0,
        },
        "totals": {
            "mqtt_received": 300_000,
            "records_spooled": 600_000,
            "records_forwarded": 598_796,
            "records_rejected": 12,
            "records_dropped": 0,
            "spool_quarantined_blocks": 0,
        },
        "devices_online": 20,
        "clock_ahead_of_kafka_secs": 0.0,
        "last_errors": [],
    }
    document.update(changes)
    return document


def test_status_text_says_uplink_spool_and_rates_in_plain_words() -> None:
    """The words an operator reads: connected to which Kafka for how long, depth and age, rates."""
    target = Target("http://127.0.0.1:9810", kafka="127.0.0.1:9092", mqtt="127.0.0.1:1883")
    text = status_cmd.render(_document(), target)
    assert "uplink: connected to kafka 127.0.0.1:9092 for 3 min" in text
    assert "mqtt:   connected to broker 127.0.0.1:1883 for 10 min, subscribed" in text
    assert "spool:  1,204 records, 87.9 KiB, oldest 12 s" in text
    assert "rates:  500/s messages in, 1,000/s records spooled, 990/s records to kafka" in text
    assert "last errors: none" in text
    assert ESC not in text
    assert status_cmd.exit_code(_document()) == 0


def test_status_text_and_exit_code_when_the_uplink_is_down() -> None:
    """Uplink down: said in words, with the newest errors; exit code 4 (healthy, spooling)."""
    document = _document(
        uplink={"up": False, "for_secs": 42.0, "since_ms": 0},
        last_errors=[
            {
                "at_ms": 1_700_000_095_000,
                "level": "WARNING",
                "message": "Uplink lost.",
                "error": "x",
            }
        ],
    )
    text = status_cmd.render(document, Target("http://h:1"))
    assert "uplink: DOWN (kafka) for 42 s; spooling" in text
    assert "5 s ago WARNING: Uplink lost. (x)" in text
    assert status_cmd.exit_code(document) == status_cmd.EXIT_UPLINK_DOWN == 4


def test_status_exit_code_is_3_when_the_agent_is_not_ready() -> None:
    """Not ready (or a stalled loop) is unhealthy: exit 3, and the failing check is named."""
    document = _document(healthy=False, ready=False, checks={"mqtt_subscribed": False})
    assert status_cmd.exit_code(document) == status_cmd.EXIT_UNHEALTHY == 3
    assert "why: mqtt_subscribed" in status_cmd.render(document, Target("http://h:1"))


def test_status_of_an_unreachable_agent_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing listening: exit 1 with one line on stderr, nothing on stdout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = cli.main(["status", "--url", f"http://127.0.0.1:{port}"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"edge-agent: Cannot reach the agent at http://127.0.0.1:{port}")


@contextlib.asynccontextmanager
async def _agent_endpoint(metrics: Metrics) -> AsyncIterator[str]:
    readiness = Readiness(
        lambda: {"mqtt_subscribed": True, "spool_writable": True},
        required={"mqtt_subscribed", "spool_writable"},
    )
    server = HttpServer(
        HttpSettings(listen_host="127.0.0.1", port=0), metrics, LoopWatchdog(10.0), readiness
    )
    task = asyncio.create_task(server.run())
    try:
        async with asyncio.timeout(5):
            port = await server.wait_listening()
        yield f"http://127.0.0.1:{port}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_status_asks_a_running_endpoint_and_maps_its_state_to_the_exit_code() -> None:
    """Against a real /status: uplink down gives 4, up gives 0; --format json is the document."""
    metrics = Metrics(process_metrics=False)
    async with _agent_endpoint(metrics) as url:
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(
            status_cmd.run_status, Target(url), output_format="text", out=out, err=err
        )
        assert code == 4
        assert "uplink: DOWN" in out.getvalue()
        metrics.set_uplink(up=True)
        out = io.StringIO()
        code = await asyncio.to_thread(
            status_cmd.run_status, Target(url), output_format="json", out=out, err=err
        )
        assert code == 0
        assert json.loads(out.getvalue())["uplink"]["up"] is True
        assert err.getvalue() == ""


async def test_top_prints_plain_refreshes_when_not_a_terminal() -> None:
    """Piped, top prints each refresh plainly (no escape codes) and stops after --iterations."""
    metrics = Metrics(process_metrics=False)
    sleeps: list[float] = []
    async with _agent_endpoint(metrics) as url:
        out = io.StringIO()
        code = await asyncio.to_thread(
            status_cmd.run_top,
            Target(url),
            interval_secs=2.0,
            iterations=2,
            out=out,
            sleep=sleeps.append,
        )
    assert code == 0
    assert sleeps == [2.0]
    assert out.getvalue().count("uplink: DOWN") == 2
    assert ESC not in out.getvalue()


def test_top_ends_with_exit_0_on_ctrl_c() -> None:
    """Ctrl-C (KeyboardInterrupt while waiting) ends top with exit code 0."""

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    out = io.StringIO()
    code = status_cmd.run_top(
        Target("http://127.0.0.1:1"), interval_secs=1.0, iterations=0, out=out, sleep=interrupt
    )
    assert code == 0
    assert "Cannot reach the agent" in out.getvalue()


def test_status_target_comes_from_the_config() -> None:
    """--config gives the URL (a wildcard listen address is asked on loopback) and the names."""
    settings = load_config(
        None,
        {"kafka.bootstrap_servers": "k1:9092", "http.port": 9999, "mqtt.host": "broker"},
    ).settings
    target = status_cmd.target_for(None, settings)
    assert target.url == "http://127.0.0.1:9999"
    assert target.kafka == "k1:9092"
    assert target.mqtt == "broker:1883"
    assert status_cmd.target_for("http://x:1", settings).url == "http://x:1"
    assert status_cmd.target_for(None, None).url == status_cmd.DEFAULT_URL

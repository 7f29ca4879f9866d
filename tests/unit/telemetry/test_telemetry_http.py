"""The HTTP endpoint answers /metrics, /healthz and /readyz; bad or slow clients cannot hang it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import dataclass, field

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.errors import PermanentError
from agent.telemetry import HttpServer, HttpSettings, LoopWatchdog, Metrics, Readiness
from agent.telemetry.health import UPLINK_NOTE
from agent.telemetry.http import parse_request

DEADLINE_SECS = 5.0


class FakeClock:
    """Monotonic seconds that move only when the test moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Endpoint:
    """A running server and the state behind it."""

    server: HttpServer
    port: int
    metrics: Metrics
    clock: FakeClock
    checks: dict[str, bool] = field(default_factory=dict)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@contextlib.asynccontextmanager
async def serving(**options):
    """Run an HttpServer on a free loopback port until the block ends."""
    clock = FakeClock()
    checks = {"mqtt_subscribed": True, "spool_writable": True, "uplink_up": True}
    metrics = Metrics(process_metrics=False)
    server = HttpServer(
        HttpSettings(listen_host="127.0.0.1", port=0),
        metrics,
        LoopWatchdog(10.0, clock=clock),
        Readiness(lambda: checks, required={"mqtt_subscribed", "spool_writable"}),
        **options,
    )
    task = asyncio.create_task(server.run())
    try:
        async with asyncio.timeout(DEADLINE_SECS):
            port = await server.wait_listening()
        yield Endpoint(server, port, metrics, clock, checks)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def exchange(port: int, raw: bytes) -> Answer:
    """Send ``raw``, read until the server closes, parse the answer."""
    async with asyncio.timeout(DEADLINE_SECS):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(raw)
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
    return parse_answer(data)


def parse_answer(data: bytes) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split(" ")[1]), headers, body)


async def get(port: int, path: str, method: str = "GET") -> Answer:
    return await exchange(port, f"{method} {path} HTTP/1.1\r\nHost: agent\r\n\r\n".encode())


async def test_http_metrics_serves_the_exposition():
    """GET /metrics answers 200 with the text format that Prometheus parses."""
    async with serving() as endpoint:
        endpoint.metrics.valid(7)
        answer = await get(endpoint.port, "/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert answer.headers["connection"] == "close"
    assert int(answer.headers["content-length"]) == len(answer.body)
    families = {f.name: f for f in text_string_to_metric_families(answer.body.decode())}
    assert families["edge_agent_records_valid"].samples[0].value == 7


async def test_http_query_string_is_ignored():
    """``/metrics?x=1`` is ``/metrics``."""
    async with serving() as endpoint:
        answer = await get(endpoint.port, "/metrics?format=text")
    assert answer.status == 200


async def test_http_healthz_follows_the_loop_watchdog():
    """/healthz is 200 while the watchdog ticks and 503 with the reason once it is stale."""
    async with serving() as endpoint:
        healthy = await get(endpoint.port, "/healthz")
        endpoint.clock.now += 11.0
        stalled = await get(endpoint.port, "/healthz")
    assert healthy.status == 200
    assert json.loads(healthy.body)["healthy"] is True
    assert stalled.status == 503
    assert stalled.headers["content-type"] == "application/json"
    assert json.loads(stalled.body) == {
        "healthy": False,
        "loop_last_tick_age_secs": 11.0,
        "loop_stall_secs": 10.0,
    }


async def test_http_readyz_ready_while_uplink_is_down():
    """An uplink that is down alone keeps /readyz at 200 and explains why."""
    async with serving() as endpoint:
        endpoint.checks["uplink_up"] = False
        answer = await get(endpoint.port, "/readyz")
    assert answer.status == 200
    assert json.loads(answer.body) == {
        "ready": True,
        "checks": {"mqtt_subscribed": True, "spool_writable": True, "uplink_up": False},
        "required": ["mqtt_subscribed", "spool_writable"],
        "note": UPLINK_NOTE,
    }


async def test_http_readyz_unready_explains_each_check():
    """A failing required check makes /readyz 503 with every check in the JSON body."""
    async with serving() as endpoint:
        endpoint.checks.update(mqtt_subscribed=False, uplink_up=False)
        answer = await get(endpoint.port, "/readyz")
    assert answer.status == 503
    assert json.loads(answer.body) == {
        "ready": False,
        "checks": {"mqtt_subscribed": False, "spool_writable": True, "uplink_up": False},
        "required": ["mqtt_subscribed", "spool_writable"],
        "note": UPLINK_NOTE,
    }


async def test_http_unknown_path_is_404():
    """Paths other than the three endpoints answer 404."""
    async with serving() as endpoint:
        answer = await get(endpoint.port, "/admin")
    assert answer.status == 404


async def test_http_other_methods_are_405_with_allow():
    """POST on a known path answers 405 and says which methods are allowed."""
    async with serving() as endpoint:
        request = b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        answer = await exchange(endpoint.port, request)
    assert answer.status == 405
    assert answer.headers["allow"] == "GET, HEAD"


async def test_http_head_sends_headers_without_body():
    """HEAD answers the same status and Content-Length as GET, with no body."""
    async with serving() as endpoint:
        full = await get(endpoint.port, "/readyz")
        head = await get(endpoint.port, "/readyz", method="HEAD")
    assert head.status == full.status == 200
    assert head.headers["content-length"] == str(len(full.body))
    assert head.body == b""


async def test_http_garbage_is_400():
    """Something that is not an HTTP/1.x request line answers 400."""
    async with serving() as endpoint:
        answer = await exchange(endpoint.port, b"\x16\x03\x01 hello there\r\n\r\n")
    assert answer.status == 400


async def test_http_slow_request_times_out_without_blocking_others():
    """A client that never finishes its request gets 408; others are served meanwhile."""
    async with serving(request_timeout_secs=1.0) as endpoint:
        slow = asyncio.create_task(exchange(endpoint.port, b"GET /metrics HTTP/1.1\r\nHost:"))
        fast = await get(endpoint.port, "/healthz")
        assert not slow.done()
        slow_answer = await slow
    assert fast.status == 200
    assert slow_answer.status == 408


async def test_http_oversized_request_head_is_431():
    """A request head beyond max_request_bytes answers 431 instead of buffering it."""
    async with serving(max_request_bytes=1024) as endpoint:
        request = b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"a" * 8192 + b"\r\n\r\n"
        answer = await exchange(endpoint.port, request)
    assert answer.status == 431


async def test_http_connection_limit_answers_busy():
    """Beyond max_connections a new connection is answered 503 at once."""
    async with serving(max_connections=1, request_timeout_secs=DEADLINE_SECS) as endpoint:
        _, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        try:
            writer.write(b"GET /metrics")  # holds the only slot
            await writer.drain()
            async with asyncio.timeout(DEADLINE_SECS):
                while not endpoint.server._connections:
                    await asyncio.sleep(0.005)
            answer = await get(endpoint.port, "/healthz")
        finally:
            writer.close()
    assert answer.status == 503


async def test_http_cancel_closes_listener_and_open_connections(caplog):
    """Cancelling run() closes idle connections at once, quietly, and stops listening."""
    async with serving(request_timeout_secs=60.0) as endpoint:
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        writer.write(b"GET /metr")
        await writer.drain()
        async with asyncio.timeout(DEADLINE_SECS):
            while not endpoint.server._connections:
                await asyncio.sleep(0.005)
        port = endpoint.port
    async with asyncio.timeout(DEADLINE_SECS):
        # Closed: EOF, or a reset when the request was still unread in the kernel.
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read() == b""
    writer.close()
    assert not endpoint.server._connections
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    assert not [r for r in caplog.records if r.levelname in {"WARNING", "ERROR"}]


async def test_http_disabled_does_not_listen():
    """With ``enabled: false`` run() returns at once and nothing is bound."""
    server = HttpServer(
        HttpSettings(enabled=False, port=0),
        Metrics(process_metrics=False),
        LoopWatchdog(10.0),
        Readiness(dict, required=()),
    )
    async with asyncio.timeout(DEADLINE_SECS):
        await server.run()
    assert server.bound_port is None


async def test_http_port_in_use_is_a_permanent_error():
    """A port that is taken fails run() with one sentence naming the address and the fix."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(
            HttpSettings(listen_host="127.0.0.1", port=port),
            Metrics(process_metrics=False),
            LoopWatchdog(10.0),
            Readiness(dict, required=()),
        )
        with pytest.raises(PermanentError, match=rf"127\.0\.0\.1:{port}.*http\.port"):
            await server.run()


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /metrics HTTP/1.1\r\n\r\n", ("GET", "/metrics")),
        (b"HEAD /readyz?verbose HTTP/1.0\r\n\r\n", ("HEAD", "/readyz")),
        (b"GET http://agent/metrics HTTP/1.1\r\n\r\n", None),
        (b"GET /metrics\r\n\r\n", None),
        (b"GET /metrics SPDY/3\r\n\r\n", None),
        (b"GET /m\xe9trics HTTP/1.1\r\n\r\n", None),
    ],
)
def test_http_parse_request_accepts_origin_form_only(head, expected):
    """Only ``METHOD /path HTTP/1.x`` request lines parse; the query string is dropped."""
    request = parse_request(head)
    assert (None if request is None else (request.method, request.path)) == expected


async def test_http_failing_endpoint_answers_500_and_others_still_work():
    """A bug behind one endpoint answers 500; the server keeps answering the others."""
    async with serving() as endpoint:

        def broken() -> None:
            raise ZeroDivisionError

        endpoint.metrics.render = broken  # type: ignore[method-assign]
        failed = await get(endpoint.port, "/metrics")
        healthy = await get(endpoint.port, "/healthz")
    assert failed.status == 500
    assert healthy.status == 200

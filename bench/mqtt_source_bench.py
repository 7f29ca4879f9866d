"""Throughput and CPU cost of the MQTT source alone, against a harness Mosquitto.

Usage: ``.venv/bin/python bench/mqtt_source_bench.py [messages] [--asyncio]``.

For MQTT 3.1.1 and 5 (with uvloop; ``--asyncio`` adds the default loop) it measures two cases:

- ``backlog``: ``mosquitto_pub -l -q 1`` (a separate process) publishes the messages while the
  source is offline, into its persistent session; then the source starts and drains the
  backlog. This is the source's own ceiling: the broker has everything ready.
- ``live``: the source is connected and ``mosquitto_pub`` publishes at its own pace; the
  numbers are then bounded by the publisher and the broker as well.

The consumer takes messages from the source's bounded queue and acknowledges them in groups
of 100, or every 5 ms, whichever comes first (a stand-in for the spool's group commit). CPU is
this process's CPU time (source, aiomqtt, paho, consumer) per message; Mosquitto and the
publisher run in their own processes and are not counted. Compare numbers between commits on
the same machine only. ``backlog`` is the source's receive-and-ack cost per message on its own.

Keep ``messages`` at or below ~30,000: with 100,000 the ``backlog`` case stalls after ~35,000
messages (the broker stops delivering the offline backlog; seen on b246fa7 as well), and the
bench waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness lives in tests/

from agent.source import MqttProtocol, MqttSettings, MqttSource
from tests.infra import Mosquitto

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.model import ReceivedMessage

ACK_GROUP = 100
ACK_INTERVAL_SECS = 0.005
QUEUE_SIZE = 1000
PAYLOAD_BYTES = 160


@dataclass(frozen=True)
class Result:
    case: str
    protocol: MqttProtocol
    loop: str
    messages: int
    wall_secs: float
    cpu_secs: float

    def line(self) -> str:
        rate = self.messages / self.wall_secs
        cpu_us = self.cpu_secs / self.messages * 1e6
        return (
            f"{self.case:<8} MQTT {self.protocol:<6} {self.loop:<8} {self.messages:>7} msgs "
            f"{rate:>9,.0f} msg/s {cpu_us:>7.1f} CPU us/msg "
            f"(CPU {self.cpu_secs / self.wall_secs:4.0%} of one core)"
        )


def _payload_file(directory: Path, count: int) -> Path:
    path = directory / f"payloads-{count}.txt"
    if not path.exists():
        with path.open("w") as out:
            for i in range(count):
                line = f'{{"seq":{i},"device":"press-{i % 50:02d}","value":{i * 0.5:.1f},"pad":"'
                out.write(line + "x" * (PAYLOAD_BYTES - len(line) - 2) + '"}\n')
    return path


def _publisher(broker: Mosquitto, topic: str, protocol: MqttProtocol) -> list[str]:
    version = "mqttv5" if protocol == "5" else "mqttv311"
    return ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", topic,
            "-q", "1", "-l", "-M", "1000", "-V", version, "--quiet"]  # fmt: skip


async def _consume(
    source: MqttSource,
    queue: asyncio.Queue[ReceivedMessage],
    total: int,
    on_first: Callable[[], None],
) -> None:
    """Take ``total`` messages, acking in groups of ACK_GROUP or every ACK_INTERVAL_SECS."""
    pending: list[ReceivedMessage] = []

    async def ticker() -> None:
        while True:
            await asyncio.sleep(ACK_INTERVAL_SECS)
            if pending:
                source.ack(pending)
                pending.clear()

    async with asyncio.TaskGroup() as tg:
        ticking = tg.create_task(ticker(), name="bench-ack-ticker")
        received = 0
        while received < total:
            pending.append(await queue.get())
            if received == 0:
                on_first()
            received += 1
            if len(pending) >= ACK_GROUP:
                source.ack(pending)
                pending.clear()
        source.ack(pending)
        pending.clear()
        ticking.cancel()


async def _run_case(
    broker: Mosquitto, protocol: MqttProtocol, loop_name: str, count: int, case: str
) -> Result:
    name = f"bench-{case}-{protocol}-{loop_name}-{secrets.token_hex(3)}"
    topic = f"bench/{name}"
    settings = MqttSettings(
        port=broker.port,
        protocol=protocol,
        client_id=name,
        subscriptions=(topic,),
        drain_timeout_secs=5.0,
    )
    lines = _payload_file(Path(tempfile.gettempdir()), count)
    stop = asyncio.Event()
    queue: asyncio.Queue[ReceivedMessage] = asyncio.Queue(maxsize=QUEUE_SIZE)
    connected = asyncio.Event()
    source = MqttSource(settings, on_event=lambda _: connected.set())
    if case == "backlog":
        # Create the session, leave, and let the publisher fill it while the source is away.
        async with asyncio.TaskGroup() as tg:
            tg.create_task(source.run(queue, stop))
            await connected.wait()
            stop.set()
        with lines.open("rb") as stdin:
            subprocess.run(_publisher(broker, topic, protocol), stdin=stdin, check=True)
        source = MqttSource(settings)
        stop = asyncio.Event()
    started = {"wall": 0.0, "cpu": 0.0}

    def mark() -> None:
        if case == "live":
            started["wall"], started["cpu"] = time.perf_counter(), time.process_time()

    started["wall"], started["cpu"] = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(source.run(queue, stop), name="bench-source")
        consuming = tg.create_task(_consume(source, queue, count, mark), name="bench-consumer")
        if case == "live":
            await connected.wait()
            with lines.open("rb") as stdin:
                publisher = await asyncio.create_subprocess_exec(
                    *_publisher(broker, topic, protocol), stdin=stdin
                )
                await publisher.wait()
        await consuming
        wall = time.perf_counter() - started["wall"]
        cpu = time.process_time() - started["cpu"]
        stop.set()
    stats = source.stats()
    if stats.delivered != count or stats.acked != count:
        raise RuntimeError(f"expected {count} messages delivered and acked once: {stats}")
    return Result(case, protocol, loop_name, count, wall, cpu)


def _run(
    broker: Mosquitto, protocol: MqttProtocol, loop_name: str, count: int, case: str
) -> Result:
    """One case in a fresh event loop of the given kind."""
    factory = uvloop.new_event_loop if loop_name == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_run_case(broker, protocol, loop_name, count, case))


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    count = int(args[0]) if args else 30_000
    loops = ["uvloop", "asyncio"] if "--asyncio" in sys.argv else ["uvloop"]
    broker = Mosquitto()
    broker.start()
    print(
        f"Mosquitto 2.0.11 on 127.0.0.1:{broker.port} (max_inflight_messages "
        f"{broker.max_inflight_messages}); {PAYLOAD_BYTES}-byte payloads, QoS 1, queue "
        f"{QUEUE_SIZE}, acks every {ACK_GROUP} msgs or {ACK_INTERVAL_SECS * 1000:.0f} ms, "
        f"MQTT 5 receive_maximum {MqttSettings().receive_maximum}"
    )
    try:
        _run(broker, "5", "uvloop", 2_000, "backlog")  # warm-up: imports, payload file
        protocols: tuple[MqttProtocol, ...] = ("3.1.1", "5")
        for case in ("backlog", "live"):
            for protocol in protocols:
                for loop_name in loops:
                    print(_run(broker, protocol, loop_name, count, case).line(), flush=True)
    finally:
        with contextlib.suppress(Exception):
            broker.close()


if __name__ == "__main__":
    main()

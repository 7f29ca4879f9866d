"""A device simulator: N devices publishing readings with per-device sequence numbers.

Used by the tests, the benchmarks and the demo. Each device publishes to
``<prefix>/<device_id>/<metric>`` with QoS 1, one message at a time (each PUBLISH waits for
its PUBACK before the next), so the broker receives every device's readings in order. The
payload is a canonical reading whose ``tags.seq`` counts from 0 per device, so a consumer
can check that nothing is missing and the order is kept::

    {"device_id": "dev-0001", "metric": "temperature", "value": 21.5, "ts": 1700000000000,
     "quality": 192, "unit": "degC", "tags": {"seq": "17", "pad": "..."}}

``bad_every`` makes every n-th message of a device malformed (not JSON) to exercise the
dead-letter path; those still consume a sequence number.

With ``sparkplug`` on, :class:`SparkplugSimulator` speaks Sparkplug B instead: the devices are
spread over ``edge_nodes`` edge nodes (one MQTT connection each, ``node-000``...), each of which
publishes an NBIRTH (with ``bdSeq``, its NDEATH as the connection's will), a DBIRTH per device
defining aliases, then DDATA rounds that carry only aliases and the node's ``seq``. Options:
``rebirth_every`` ends the session after that many rounds (an NDEATH, a new connection, a new
``bdSeq``, births again); ``seq_gap_every`` skips a sequence number every that many DATA
messages (what a lost message looks like to the agent). A stopped simulator sends a clean NDEATH.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import aiomqtt

from agent._backoff import Backoff


@dataclass(frozen=True, slots=True)
class SimulationSettings:
    """What to simulate.

    Attributes:
        host: MQTT broker host.
        port: MQTT broker port.
        devices: Number of devices.
        messages_per_device: Messages each device publishes (0 = until cancelled).
        rate_per_device_hz: Messages per second per device (0 = as fast as possible).
        topic_prefix: Topics are ``<topic_prefix>/<device_id>/<metric>``.
        payload_bytes: Pad payloads to about this size.
        incompressible_padding: Pad with random base64 instead of ``x``: the payloads then cost
            about their size on disk although the spool compresses (tests that fill a disk).
        bad_every: Every n-th message of a device is malformed (0 = never).
        device_offset: First device number (to run several simulators side by side).
        connections: MQTT connections the devices are spread over.
        sparkplug: Publish Sparkplug B (``SparkplugSimulator``) instead of JSON readings.
        group_id: Sparkplug group id.
        edge_nodes: Sparkplug edge nodes the devices are spread over (one connection each).
        rebirth_every: Sparkplug: end each node's session after this many rounds (0 = never).
        seq_gap_every: Sparkplug: skip one ``seq`` value every this many DATA messages of a
            node (0 = never).
    """

    host: str = "127.0.0.1"
    port: int = 1883
    devices: int = 10
    messages_per_device: int = 100
    rate_per_device_hz: float = 1.0
    topic_prefix: str = "plant/sim"
    payload_bytes: int = 256
    incompressible_padding: bool = False
    bad_every: int = 0
    device_offset: int = 0
    connections: int = 4
    sparkplug: bool = False
    group_id: str = "sim"
    edge_nodes: int = 1
    rebirth_every: int = 0
    seq_gap_every: int = 0


def device_name(index: int) -> str:
    """The id of simulated device number ``index``."""
    return f"dev-{index:05d}"


def reading(device: str, seq: int, payload_bytes: int, *, incompressible: bool = False) -> bytes:
    """A valid reading for ``device`` with sequence number ``seq``, padded to ``payload_bytes``.

    The padding is ``x`` repeated, or with ``incompressible`` base64 of random bytes (the same
    for the same device and ``seq``, so a republished reading is byte-identical).
    """
    body = {
        "device_id": device,
        "metric": "temperature",
        "value": round(20.0 + (seq % 100) / 10, 2),
        "ts": time.time_ns() // 1_000_000,
        "quality": 192,
        "unit": "degC",
        "tags": {"seq": str(seq), "pad": ""},
    }
    raw = json.dumps(body, separators=(",", ":"))
    pad = max(0, payload_bytes - len(raw))
    if incompressible:
        noise = random.Random(f"{device}/{seq}").randbytes(pad)  # noqa: S311  # not for security
        body["tags"] = {"seq": str(seq), "pad": base64.b64encode(noise).decode()[:pad]}
    else:
        body["tags"] = {"seq": str(seq), "pad": "x" * pad}
    return json.dumps(body, separators=(",", ":")).encode()


class Simulator:
    """Publishes the simulated readings; counters are readable while it runs.

    A connection that drops (broker restart) is re-established with back-off and each device
    resumes with the message that was not acknowledged, republishing the identical payload, so
    the broker ends up with every message exactly as first built.
    """

    def __init__(self, settings: SimulationSettings) -> None:
        """Create a simulator; :meth:`run` publishes."""
        self.settings = settings
        self.published = 0
        self.published_bad = 0
        self.reconnects = 0
        self._next_seq: dict[int, int] = {}
        self._pending: dict[int, tuple[int, bytes]] = {}
        self._stopped = False

    def stop(self) -> None:
        """Finish the publishes under way and return from :meth:`run` (no cancellation needed).

        Stopping this way never leaves a publish half done, so :attr:`accepted_per_device`
        counts exactly what the broker acknowledged.
        """
        self._stopped = True

    @property
    def accepted_per_device(self) -> dict[str, int]:
        """How many messages of each device the broker acknowledged (seq 0 .. n-1)."""
        return {device_name(i): n for i, n in self._next_seq.items()}

    async def run(self) -> None:
        """Publish everything (or until cancelled)."""
        s = self.settings
        indexes = list(range(s.device_offset, s.device_offset + s.devices))
        for index in indexes:
            self._next_seq[index] = 0
        groups = [indexes[i :: s.connections] for i in range(max(1, s.connections))]
        async with asyncio.TaskGroup() as tg:
            for n, group in enumerate(g for g in groups if g):
                tg.create_task(self._connection(group), name=f"sim-connection-{n}")

    def _done(self, index: int) -> bool:
        total = self.settings.messages_per_device
        return self._stopped or (total != 0 and self._next_seq[index] >= total)

    async def _connection(self, indexes: list[int]) -> None:
        s = self.settings
        start = time.monotonic()
        backoff = Backoff(0.2, 2.0)
        while not all(self._done(i) for i in indexes):
            try:
                async with (
                    aiomqtt.Client(s.host, s.port, max_inflight_messages=1000) as client,
                    asyncio.TaskGroup() as tg,
                ):
                    backoff.reset()
                    for index in indexes:
                        tg.create_task(self._device(client, index, start), name=f"sim-{index}")
            except* aiomqtt.MqttError:
                self.reconnects += 1
                await asyncio.sleep(backoff.next_delay())

    async def _device(self, client: aiomqtt.Client, index: int, start: float) -> None:
        s = self.settings
        device = device_name(index)
        topic = f"{s.topic_prefix}/{device}/temperature"
        period = 1.0 / s.rate_per_device_hz if s.rate_per_device_hz > 0 else 0.0
        while not self._done(index):
            seq = self._next_seq[index]
            if period:
                delay = start + seq * period - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            bad = bool(s.bad_every) and seq % s.bad_every == s.bad_every - 1
            # A retry after a dropped connection republishes the byte-identical payload.
            pending = self._pending.get(index)
            if pending is None or pending[0] != seq:
                pending = (seq, self._payload(device, seq, bad=bad))
                self._pending[index] = pending
            await client.publish(topic, pending[1], qos=1)
            self._next_seq[index] = seq + 1
            self.published += 1
            self.published_bad += bad

    def _payload(self, device: str, seq: int, *, bad: bool) -> bytes:
        if bad:
            return f"not json {device} {seq}".encode()
        settings = self.settings
        return reading(
            device, seq, settings.payload_bytes, incompressible=settings.incompressible_padding
        )


class SparkplugSimulator:
    """Sparkplug B edge nodes and their devices; see the module docstring.

    Counters readable while it runs: :attr:`readings` (per device id as the agent's default
    templates name it: ``node-000`` for node metrics, ``node-000/dev-00000`` for a device's),
    :attr:`births`, :attr:`deaths`, :attr:`seq_gaps`. A message is counted once the broker
    acknowledged it.
    """

    NODE_METRICS = (("Node Control/Rebirth", 1), ("uptime_s", 2))
    DEVICE_METRICS = ("temperature", "pressure", "running", "mode", "count")

    def __init__(self, settings: SimulationSettings) -> None:
        """Create a simulator; :meth:`run` publishes."""
        self.settings = settings
        self.published = 0
        self.published_bad = 0
        self.readings: collections.Counter[str] = collections.Counter()
        self.births = 0
        self.deaths = 0
        self.seq_gaps = 0
        self.reconnects = 0
        self._stopped = False

    def stop(self) -> None:
        """Finish the publish under way, send each node's NDEATH and return from :meth:`run`."""
        self._stopped = True

    def node_name(self, node: int) -> str:
        """The edge node id of node number ``node``."""
        return f"node-{node:03d}"

    async def run(self) -> None:
        """Publish every node's session(s) (or until stopped or cancelled)."""
        s = self.settings
        indexes = list(range(s.device_offset, s.device_offset + s.devices))
        nodes = max(1, s.edge_nodes)
        async with asyncio.TaskGroup() as tg:
            for node in range(nodes):
                devices = indexes[node::nodes]
                tg.create_task(self._node(node, devices), name=f"sim-sparkplug-{node}")

    def _topic(self, kind: str, node: str, device: str | None = None) -> str:
        base = f"spBv1.0/{self.settings.group_id}/{kind}/{node}"
        return base if device is None else f"{base}/{device}"

    async def _node(self, node_index: int, devices: list[int]) -> None:
        from agent.sparkplug.encode import MetricSpec, encode  # noqa: PLC0415 - protobuf
        from agent.sparkplug.sparkplug_b_pb2 import DataType  # noqa: PLC0415

        s = self.settings
        node = self.node_name(node_index)
        bd_seq = 0
        rounds_done = 0
        backoff = Backoff(0.2, 2.0)
        while not self._finished(rounds_done):
            death = encode([MetricSpec("bdSeq", bd_seq, DataType.Int64)], seq=None, timestamp=None)
            will = aiomqtt.Will(self._topic("NDEATH", node), death, qos=1)
            try:
                async with aiomqtt.Client(
                    s.host, s.port, will=will, identifier=f"sim-{s.group_id}-{node}"
                ) as client:
                    backoff.reset()
                    rounds_done = await self._session(client, node, devices, bd_seq, rounds_done)
                    await client.publish(self._topic("NDEATH", node), death, qos=1)
                    self.deaths += 1
            except aiomqtt.MqttError:
                self.reconnects += 1
                await asyncio.sleep(backoff.next_delay())
            bd_seq = (bd_seq + 1) % 256

    def _finished(self, rounds_done: int) -> bool:
        total = self.settings.messages_per_device
        return self._stopped or (total != 0 and rounds_done >= total)

    async def _session(
        self, client: aiomqtt.Client, node: str, devices: list[int], bd_seq: int, rounds_done: int
    ) -> int:
        """Births then DATA rounds until the session ends; returns the rounds done so far."""
        from agent.sparkplug.encode import MetricSpec, encode  # noqa: PLC0415 - protobuf
        from agent.sparkplug.sparkplug_b_pb2 import DataType  # noqa: PLC0415

        s = self.settings
        seq = 0
        now = time.time_ns() // 1_000_000
        nbirth = [
            MetricSpec("bdSeq", bd_seq, DataType.Int64),
            MetricSpec("Node Control/Rebirth", value=False, datatype=DataType.Boolean, alias=1),
            MetricSpec("uptime_s", rounds_done, DataType.UInt32, alias=2),
        ]
        await self._publish(
            client, self._topic("NBIRTH", node), encode(nbirth, seq=seq, timestamp=now)
        )
        self.readings[node] += 2
        self.births += 1
        for index in devices:
            seq = (seq + 1) % 256
            name = device_name(index)
            payload = encode(
                self._device_metrics(index, rounds_done, birth=True), seq=seq, timestamp=now
            )
            await self._publish(client, self._topic("DBIRTH", node, name), payload)
            self.readings[f"{node}/{name}"] += len(self.DEVICE_METRICS)
            self.births += 1
        period = 1.0 / s.rate_per_device_hz if s.rate_per_device_hz > 0 else 0.0
        start = time.monotonic()
        data_messages = 0
        session_rounds = 0
        while not self._finished(rounds_done):
            if s.rebirth_every and session_rounds >= s.rebirth_every:
                break
            if period:
                delay = start + session_rounds * period - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            now = time.time_ns() // 1_000_000
            for index in devices:
                seq = (seq + 1) % 256
                data_messages += 1
                if s.seq_gap_every and data_messages % s.seq_gap_every == 0:
                    seq = (seq + 1) % 256  # one sequence number never sent
                    self.seq_gaps += 1
                name = device_name(index)
                metrics = self._device_metrics(index, rounds_done + 1, birth=False)
                payload = encode(metrics, seq=seq, timestamp=now)
                await self._publish(client, self._topic("DDATA", node, name), payload)
                self.readings[f"{node}/{name}"] += len(metrics)
            rounds_done += 1
            session_rounds += 1
        return rounds_done

    def _device_metrics(self, index: int, step: int, *, birth: bool) -> list[Any]:
        """A device's metrics: all five with names in a birth, two by alias in a DATA."""
        from agent.sparkplug.encode import MetricSpec  # noqa: PLC0415 - protobuf
        from agent.sparkplug.sparkplug_b_pb2 import DataType  # noqa: PLC0415

        base = 1000 + 10 * index  # aliases: unique per edge node across its devices
        temperature = round(20.0 + (step % 100) / 10, 1)
        if not birth:
            return [
                MetricSpec(None, temperature, DataType.Float, alias=base),
                MetricSpec(None, step, DataType.Int32, alias=base + 4),
            ]
        return [
            MetricSpec("temperature", temperature, DataType.Float, alias=base),
            MetricSpec("pressure", 1.013, DataType.Double, alias=base + 1),
            MetricSpec("running", value=True, datatype=DataType.Boolean, alias=base + 2),
            MetricSpec("mode", "AUTO", DataType.String, alias=base + 3),
            MetricSpec("count", step, DataType.Int32, alias=base + 4),
        ]

    async def _publish(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        await client.publish(topic, payload, qos=1)
        self.published += 1

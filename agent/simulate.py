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
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from dataclasses import dataclass

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

"""A plain MQTT → Kafka bridge: the script a user writes in an afternoon (a bench peer).

aiomqtt with its defaults (MQTT 3.1.1, QoS 1 subscription, so paho acknowledges each message as
soon as it is received) → aiokafka (acks=all, idempotent, zstd, key = device id from the topic),
on uvloop. No validation, no spool: a crash or a Kafka outage loses what is in its queues. It
prints ``subscribed`` on stdout once the broker confirmed the subscription.

    python bench/peers/bridge.py --mqtt-port 1883 --filter 'plant/+/+/+' --device-level 2 \
        --bootstrap 127.0.0.1:9092 --topic readings
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import aiomqtt
import uvloop
from aiokafka import AIOKafkaProducer


async def bridge(args: argparse.Namespace) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type="zstd",
        linger_ms=5,
    )
    await producer.start()
    try:
        async with aiomqtt.Client("127.0.0.1", args.mqtt_port, identifier=args.client_id) as mqtt:
            await mqtt.subscribe(args.filter, qos=1)
            print("subscribed", flush=True)
            async for message in mqtt.messages:
                key = message.topic.value.split("/")[args.device_level].encode()
                payload = message.payload
                assert isinstance(payload, bytes)  # noqa: S101 - MQTT payloads arrive as bytes
                await producer.send(args.topic, payload, key=key)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 5)


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    running = asyncio.create_task(bridge(args))
    waiting = asyncio.create_task(stop.wait())
    await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
    for task in (running, waiting):
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mqtt-port", type=int, required=True)
    parser.add_argument("--filter", required=True, help="MQTT topic filter to subscribe to")
    parser.add_argument("--device-level", type=int, default=2, help="topic level of the device id")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True, help="Kafka topic")
    parser.add_argument("--client-id", default="bench-bridge")
    uvloop.run(main(parser.parse_args()))

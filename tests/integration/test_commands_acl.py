"""Commands under least privilege: Kafka with an authorizer, Mosquitto with an ACL file.

The agent gets exactly the rights docs/how-to/commands.md lists and nothing more: on Kafka
(StandardAuthorizer, SASL user ``edge``) the producer's ACLs on its four topics plus READ on
the commands topic and READ on the command group; on Mosquitto (``acl_file`` on the
password listener) the telemetry user reads ``t/#``, the command user ``edge-cmd`` writes
``c/acl/ok/#`` and reads its response topic, the device user reads ``c/acl/#`` and writes
answers. A command the allow-list permits but the broker's ACL refuses is not ``delivered``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.infra import KafkaCluster, Mosquitto, producer_acls
from tests.infra._kafka import SASL_PASSWORD, SASL_PRINCIPAL, SASL_USER, Acl
from tests.support.agent import AgentProcess
from tests.support.kafka import create_topic
from tests.support.wait import wait_for

CMD_USER, CMD_PASSWORD = "edge-cmd", "cmd-secret"
DEVICE_USER, DEVICE_PASSWORD = "device", "device-secret"
GATEWAY = "gw-test"
ACL_FILE = f"""\
user edge
topic read t/#

user {CMD_USER}
topic write c/acl/ok/#
topic read cmd-response/acl/{GATEWAY}

user {DEVICE_USER}
topic read c/acl/#
topic write cmd-response/acl/#
"""


class AclMosquitto(Mosquitto):
    """The harness broker with more users and an ACL file on its password listener."""

    def _write_config(self) -> Path:
        conf = super()._write_config()
        passwd = self.base_dir / "passwd"
        for user, password in ((CMD_USER, CMD_PASSWORD), (DEVICE_USER, DEVICE_PASSWORD)):
            subprocess.run(
                ["mosquitto_passwd", "-b", str(passwd), user, password],
                check=True,
                capture_output=True,
            )
        acl = self.base_dir / "acl"
        acl.write_text(ACL_FILE)
        line = f"password_file {passwd}\n"
        conf.write_text(conf.read_text().replace(line, f"{line}acl_file {acl}\n", 1))
        return conf


@pytest.fixture(scope="module")
def kafka_acl() -> Iterator[KafkaCluster]:
    """A single-node Kafka with the StandardAuthorizer (PLAINTEXT = super user)."""
    cluster = KafkaCluster.single(authorizer=True)
    cluster.start()
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def mosquitto_acl() -> Iterator[Mosquitto]:
    broker = AclMosquitto()
    broker.start()
    yield broker
    broker.close()


def _command(command_id: str, name: str) -> bytes:
    now = datetime.now(UTC)
    return json.dumps(
        {
            "command_id": command_id,
            "device_id": "dev-1",
            "name": name,
            "payload": None,
            "created_at": now.isoformat(),
            "expires_at": (now + timedelta(minutes=10)).isoformat(),
        }
    ).encode()


@contextlib.asynccontextmanager
async def _device(broker: Mosquitto) -> AsyncIterator[list[aiomqtt.Message]]:
    received: list[aiomqtt.Message] = []
    client = aiomqtt.Client(
        "127.0.0.1",
        broker.auth_port,
        username=DEVICE_USER,
        password=DEVICE_PASSWORD,
        identifier="acl-device",
        protocol=aiomqtt.ProtocolVersion.V5,
    )
    async with client:
        await client.subscribe("c/acl/#", qos=1)

        async def collect() -> None:
            async for message in client.messages:
                received.append(message)  # noqa: PERF401 - a stream, read until cancelled

        task = asyncio.create_task(collect(), name="acl-device")
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _statuses(kafka: KafkaCluster, topic: str, want: int) -> list[dict]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    found: list[dict] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(3)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + 60
        while len(found) < want:
            assert time.monotonic() < deadline, f"only {found} of {want} statuses"
            batch = await consumer.getmany(timeout_ms=200)
            found += [
                e
                for records in batch.values()
                for e in (json.loads(r.value) for r in records)
                if e["kind"] == "command_status"
            ]
    finally:
        await consumer.stop()
    return found


async def test_commands_acl_agent_works_with_exactly_the_documented_rights(
    kafka_acl: KafkaCluster, mosquitto_acl: Mosquitto, tmp_path: Path, unique_name: str
):
    """Documented ACLs only: a command is delivered; one the broker's ACL refuses is not."""
    kafka_password = tmp_path / "kafka-password"
    kafka_password.write_text(SASL_PASSWORD + "\n")
    mqtt_password = tmp_path / "cmd-password"
    mqtt_password.write_text(CMD_PASSWORD + "\n")
    commands_topic, group = f"cmd-{unique_name}", f"edge-agent-cmd-{GATEWAY}-{unique_name}"
    agent = AgentProcess(
        workdir=tmp_path / "agent",
        mosquitto=mosquitto_acl,
        kafka=kafka_acl,
        name=unique_name,
        overrides={
            "mqtt": {
                "port": mosquitto_acl.auth_port,
                "username": mosquitto_acl.username,
                "password": mosquitto_acl.password,
            },
            "kafka": {
                "bootstrap_servers": kafka_acl.sasl_bootstrap_servers,
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": SASL_USER,
                "sasl_password_file": str(kafka_password),
            },
            "commands": {
                "enabled": True,
                "topic": commands_topic,
                "group_id": group,
                "devices": ["dev-*"],
                "allowed": {
                    "reset": "c/acl/ok/{device_id}/{name}",
                    "wipe": "c/acl/no/{device_id}/{name}",  # allowed here, refused by the ACL
                },
                "response_topic": "cmd-response/acl/{gateway_id}",
                "mqtt_username": CMD_USER,
                "mqtt_password_file": str(mqtt_password),
                "fetch_max_wait_ms": 200,
            },
        },
    )
    t = agent.topics
    try:
        for topic in (t.normalized, t.raw, t.dlq, t.lifecycle, commands_topic):
            await create_topic(kafka_acl.bootstrap_servers, topic, partitions=3)
        acls = [
            *producer_acls(SASL_PRINCIPAL, [t.normalized, t.raw, t.dlq, t.lifecycle]),
            Acl(SASL_PRINCIPAL, "READ", "TOPIC", commands_topic),
            Acl(SASL_PRINCIPAL, "READ", "GROUP", group),
        ]
        await asyncio.to_thread(kafka_acl.create_acls, acls)
        async with _device(mosquitto_acl) as received:
            await asyncio.to_thread(agent.start)
            producer = AIOKafkaProducer(bootstrap_servers=kafka_acl.bootstrap_servers)
            await producer.start()
            try:
                for command_id, name in (("w-1", "wipe"), ("r-1", "reset")):
                    await producer.send_and_wait(
                        commands_topic, _command(command_id, name), key=b"dev-1"
                    )
            finally:
                await producer.stop()
            await wait_for(lambda: len(received) >= 1, 60, "the allowed command")
            statuses = await _statuses(kafka_acl, t.lifecycle, want=2)
        assert [str(m.topic) for m in received] == ["c/acl/ok/dev-1/reset"]
        by_id = {s["command_id"]: s for s in statuses}
        assert by_id["r-1"]["status"] == "delivered"
        assert (by_id["w-1"]["status"], by_id["w-1"]["reason"]) == ("rejected", "broker_refused")
        assert "Not authorized" in by_id["w-1"]["detail"]
        assert agent.running
    finally:
        agent.close()

"""End to end over secured links: MQTT over TLS with a password, Kafka over SASL (SCRAM)."""

from __future__ import annotations

import asyncio

import pytest

from agent.simulate import SimulationSettings, Simulator, device_name
from tests.infra import KafkaCluster, Mosquitto
from tests.infra._kafka import SASL_PASSWORD, SASL_USER
from tests.support.delivery import check_delivery
from tests.support.kafka import consume_all, create_topic


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_delivery_over_mqtt_tls_and_kafka_sasl_loses_nothing(
    agent_factory, mosquitto: Mosquitto, kafka: KafkaCluster, tmp_path, mechanism: str
):
    """Secrets read from files; TLS verified against the CA; every reading arrives in order."""
    assert mosquitto.tls is not None
    mqtt_password = tmp_path / "mqtt-password"
    mqtt_password.write_text(mosquitto.password + "\n")
    kafka_password = tmp_path / "kafka-password"
    kafka_password.write_text(SASL_PASSWORD + "\n")
    agent = agent_factory(
        mqtt={
            "port": mosquitto.tls_port,
            "tls": True,
            "ca_file": str(mosquitto.tls.ca),
            "username": mosquitto.username,
            "password_file": str(mqtt_password),
        },
        kafka={
            "bootstrap_servers": kafka.sasl_bootstrap_servers,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": mechanism,
            "sasl_username": SASL_USER,
            "sasl_password_file": str(kafka_password),
        },
    )
    for topic in (agent.topics.normalized, agent.topics.raw, agent.topics.dlq):
        await create_topic(kafka.bootstrap_servers, topic, partitions=3)
    await asyncio.to_thread(agent.start)
    sim = Simulator(
        SimulationSettings(
            port=mosquitto.port,
            topic_prefix=agent.topic_prefix,
            devices=20,
            messages_per_device=50,
            rate_per_device_hz=0,
        )
    )
    await sim.run()
    got = await consume_all(kafka.bootstrap_servers, agent.topics.normalized, expected=1000)
    report = check_delivery(got, {device_name(i): 50 for i in range(20)})
    assert report.lost == 0, report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.out_of_order_devices == [], report.summary()
    assert mosquitto.password not in agent.log_text()
    assert SASL_PASSWORD not in agent.log_text()
    assert await asyncio.to_thread(agent.terminate) == 0

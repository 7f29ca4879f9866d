"""The harness's Mosquitto is real and configured as the agent's tests need it."""

from __future__ import annotations

import asyncio
import ssl

import aiomqtt
import pytest

from tests.infra import Mosquitto


async def test_mosquitto_qos1_publish_is_received_back(mosquitto: Mosquitto, unique_name: str):
    """A QoS1 message published to the harness broker is delivered back to a subscriber."""
    topic = f"test/{unique_name}"
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"sub-{unique_name}") as sub:
        await sub.subscribe(topic, qos=1)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as pub:
            for i in range(50):
                await pub.publish(topic, f"m{i}".encode(), qos=1)
        got = []
        async with asyncio.timeout(30):  # a lost message fails the test instead of hanging it
            async for message in sub.messages:
                got.append(message.payload)
                if len(got) == 50:
                    break
    assert got == [f"m{i}".encode() for i in range(50)]


async def test_mosquitto_password_listener_rejects_wrong_password(mosquitto: Mosquitto):
    """The authenticated listener accepts the test user and refuses a wrong password."""
    async with aiomqtt.Client(
        "127.0.0.1", mosquitto.auth_port, username=mosquitto.username, password=mosquitto.password
    ):
        pass
    with pytest.raises(aiomqtt.MqttError, match=r"(?i)authori|password"):
        async with aiomqtt.Client(
            "127.0.0.1",
            mosquitto.auth_port,
            username=mosquitto.username,
            password="wrong",  # noqa: S106
        ):
            pass


async def test_mosquitto_tls_and_mtls_listeners_verify_the_test_ca(mosquitto: Mosquitto):
    """TLS (server auth + password) and mTLS (client cert) listeners work with the test CA."""
    assert mosquitto.tls is not None
    ctx = ssl.create_default_context(cafile=str(mosquitto.tls.ca))
    async with aiomqtt.Client(
        "127.0.0.1",
        mosquitto.tls_port,
        username=mosquitto.username,
        password=mosquitto.password,
        tls_context=ctx,
    ):
        pass
    mctx = ssl.create_default_context(cafile=str(mosquitto.tls.ca))
    mctx.load_cert_chain(str(mosquitto.tls.client_cert), str(mosquitto.tls.client_key))
    async with aiomqtt.Client("127.0.0.1", mosquitto.mtls_port, tls_context=mctx):
        pass

"""The MQTT source against the real Mosquitto: shared subscriptions, passwords, TLS and mTLS."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from agent.errors import PermanentError
from agent.model import ReceivedMessage
from agent.source import MqttConnectFailed
from tests.infra import Mosquitto
from tests.integration._source_mqtt_support import (
    DEADLINE_SECS,
    Running,
    payloads,
    publish,
    running,
    source_settings,
    take,
    wait_until,
)

PROTOCOLS = pytest.mark.parametrize("protocol", ["3.1.1", "5"])


async def _consume(run: Running, into: list[ReceivedMessage]) -> None:
    while True:
        message = await run.queue.get()
        into.append(message)
        run.source.ack([message])


async def _receives_one(run: Running, mosquitto: Mosquitto, topic: str) -> None:
    await publish(mosquitto, topic, [b"hello"])
    [message] = await take(run.queue, 1)
    assert message.payload == b"hello"
    assert run.source.ack([message]) == 1


@PROTOCOLS
async def test_source_mqtt_shared_subscription_splits_messages(
    mosquitto: Mosquitto, unique_name, protocol
):
    """Two sources in one $share group split the messages and together receive all of them."""
    topic = f"test/{unique_name}/t"
    shared = (f"$share/g-{unique_name}/test/{unique_name}/#",)
    sent = payloads("m", 400)
    got_a: list[ReceivedMessage] = []
    got_b: list[ReceivedMessage] = []
    settings_a = source_settings(mosquitto, f"a-{unique_name}", protocol, subscriptions=shared)
    settings_b = source_settings(mosquitto, f"b-{unique_name}", protocol, subscriptions=shared)
    async with running(settings_a) as a, running(settings_b) as b, asyncio.TaskGroup() as tg:
        consumers = [
            tg.create_task(_consume(a, got_a)),
            tg.create_task(_consume(b, got_b)),
        ]
        await publish(mosquitto, topic, sent)
        await wait_until(lambda: len(got_a) + len(got_b) >= len(sent), "all messages")
        for consumer in consumers:
            consumer.cancel()
    payloads_a = [m.payload for m in got_a]
    payloads_b = [m.payload for m in got_b]
    assert payloads_a
    assert payloads_b
    assert not set(payloads_a) & set(payloads_b)
    assert sorted(payloads_a + payloads_b) == sent
    assert payloads_a == sorted(payloads_a)  # each member still sees publish order
    assert payloads_b == sorted(payloads_b)


@PROTOCOLS
async def test_source_mqtt_password_listener_accepts_credentials(
    mosquitto: Mosquitto, unique_name, protocol, tmp_path
):
    """The password listener accepts the user with password, and with password_file."""
    topic = f"test/{unique_name}/t"
    inline = source_settings(
        mosquitto,
        unique_name,
        protocol,
        port=mosquitto.auth_port,
        username=mosquitto.username,
        password=SecretStr(mosquitto.password),
    )
    async with running(inline) as run:
        await _receives_one(run, mosquitto, topic)
    password_file = tmp_path / "password"
    password_file.write_text(f"{mosquitto.password}\n")
    from_file = inline.model_copy(update={"password": None, "password_file": password_file})
    async with running(from_file) as run:
        await _receives_one(run, mosquitto, topic)


@PROTOCOLS
async def test_source_mqtt_wrong_password_is_a_permanent_error(
    mosquitto: Mosquitto, unique_name, protocol
):
    """A wrong password gives a permanent, clearly worded error; the source keeps retrying."""
    settings = source_settings(
        mosquitto,
        unique_name,
        protocol,
        port=mosquitto.auth_port,
        username=mosquitto.username,
        password=SecretStr("wrong"),
    )
    async with running(settings, start=False) as run:
        await wait_until(lambda: len(run.failed_events()) >= 2, "two failed attempts")
        assert not run.source.connected
        failed = run.failed_events()[0]
        assert isinstance(failed, MqttConnectFailed)
        assert failed.permanent
        assert failed.reason_code in {0x86, 0x87}  # bad user name or password / not authorized
        assert "check username, password" in failed.reason
        assert failed.retry_in_secs is not None
        assert isinstance(run.source.last_error, PermanentError)
        assert run.source.stats().connect_failures >= 2
    assert run.task.done()
    assert not run.connected_events()


@PROTOCOLS
async def test_source_mqtt_tls_listener_verifies_broker(
    mosquitto: Mosquitto, unique_name, protocol
):
    """TLS with the test CA and a password connects and receives messages."""
    assert mosquitto.tls is not None
    settings = source_settings(
        mosquitto,
        unique_name,
        protocol,
        port=mosquitto.tls_port,
        username=mosquitto.username,
        password=SecretStr(mosquitto.password),
        tls=True,
        ca_file=mosquitto.tls.ca,
    )
    async with running(settings) as run:
        await _receives_one(run, mosquitto, f"test/{unique_name}/t")


@PROTOCOLS
async def test_source_mqtt_mtls_listener_accepts_client_cert(
    mosquitto: Mosquitto, unique_name, protocol
):
    """mTLS with the test client certificate connects and receives messages."""
    assert mosquitto.tls is not None
    settings = source_settings(
        mosquitto,
        unique_name,
        protocol,
        port=mosquitto.mtls_port,
        tls=True,
        ca_file=mosquitto.tls.ca,
        cert_file=mosquitto.tls.client_cert,
        key_file=mosquitto.tls.client_key,
    )
    async with running(settings) as run:
        await _receives_one(run, mosquitto, f"test/{unique_name}/t")


async def test_source_mqtt_tls_untrusted_broker_is_a_permanent_error(
    mosquitto: Mosquitto, unique_name
):
    """A broker certificate not signed by ca_file fails verification as a permanent error."""
    assert mosquitto.tls is not None
    settings = source_settings(
        mosquitto,
        unique_name,
        "5",
        port=mosquitto.tls_port,
        username=mosquitto.username,
        password=SecretStr(mosquitto.password),
        tls=True,
        ca_file=mosquitto.tls.client_cert,  # a certificate, but not the CA that signed the broker
    )
    async with running(settings, start=False) as run:
        await wait_until(lambda: bool(run.failed_events()), "a failed attempt", DEADLINE_SECS)
        failed = run.failed_events()[0]
        assert failed.permanent
        assert "certificate verify failed" in failed.reason
        assert "check ca_file" in failed.reason


async def test_source_mqtt_tls_insecure_skip_verify_connects_and_warns(
    mosquitto: Mosquitto, unique_name, caplog
):
    """tls_insecure_skip_verify connects to an unverifiable broker, with a warning."""
    settings = source_settings(
        mosquitto,
        unique_name,
        "5",
        port=mosquitto.tls_port,
        username=mosquitto.username,
        password=SecretStr(mosquitto.password),
        tls=True,
        tls_insecure_skip_verify=True,
    )
    async with running(settings) as run:
        await _receives_one(run, mosquitto, f"test/{unique_name}/t")
    assert any(
        r.levelname == "WARNING" and "TLS verification" in r.getMessage() for r in caplog.records
    )

"""Session-wide fixtures: the real services and unique names.

Services start once per test session, on first use, and are stopped and wiped at the end. A
test that takes a service down (fault tests) does not have to bring it back: the function-scoped
fixtures restart anything found stopped before the next test uses it. An integration test never
skips because a service is missing; it fails with the service's own error.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.infra import KafkaCluster, KubeApiServer, Mosquitto
from tests.infra._process import reap_stale

TESTS_DIR = Path(__file__).parent

# In CI (CI=true) property tests draw the same examples every run, so a red build is always
# reproducible; locally they explore new random examples each run.
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by folder: tests/unit -> unit, tests/integration -> integration."""
    for item in items:
        path = Path(str(item.path))
        if TESTS_DIR / "integration" in path.parents:
            item.add_marker(pytest.mark.integration)
        elif TESTS_DIR / "unit" in path.parents:
            item.add_marker(pytest.mark.unit)


def _announce(config: pytest.Config, message: str) -> None:
    """Show harness progress in the test output even while pytest captures output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[infra] {message}")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Kill services a killed earlier run left behind, so ports and memory are free."""
    for name in reap_stale():
        _announce(session.config, f"killed leftover {name}")


# ---------------------------------------------------------------- Mosquitto
@pytest.fixture(scope="session")
def mosquitto_service(pytestconfig: pytest.Config) -> Iterator[Mosquitto]:
    broker = Mosquitto()
    started = time.monotonic()
    broker.start()
    _announce(pytestconfig, f"Mosquitto up at {broker.url} in {time.monotonic() - started:.1f} s")
    yield broker
    broker.close()


@pytest.fixture
def mosquitto(mosquitto_service: Mosquitto) -> Mosquitto:
    """The session's Mosquitto, started again if an earlier test stopped it."""
    if not mosquitto_service.running:
        mosquitto_service.start()
    return mosquitto_service


# ---------------------------------------------------------------- Kafka
def _rss(cluster: KafkaCluster) -> str:
    rss = cluster.memory_rss_bytes()
    return f"RSS {sum(rss.values()) / 2**20:.0f} MiB over {len(rss)} JVM(s)"


def _heal(cluster: KafkaCluster) -> KafkaCluster:
    stopped = [n for n in cluster.nodes if not n.running]
    for node in stopped:
        node.start()
    if stopped:
        cluster.wait_ready([n.node_id for n in cluster.brokers])
    return cluster


@pytest.fixture(scope="session")
def kafka_single_service(pytestconfig: pytest.Config) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster.single()
    cluster.start()
    _announce(
        pytestconfig, f"Kafka single node up in {cluster.started_in_s:.1f} s, {_rss(cluster)}"
    )
    yield cluster
    cluster.close()


@pytest.fixture
def kafka(kafka_single_service: KafkaCluster) -> KafkaCluster:
    """The single-node Kafka, with every node running when the test starts."""
    return _heal(kafka_single_service)


@pytest.fixture(scope="session")
def kafka_cluster_service(pytestconfig: pytest.Config) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster.three_brokers()
    cluster.start()
    _announce(
        pytestconfig,
        f"Kafka controller + 3 brokers up in {cluster.started_in_s:.1f} s, {_rss(cluster)}",
    )
    yield cluster
    cluster.close()


@pytest.fixture
def kafka_cluster(kafka_cluster_service: KafkaCluster) -> KafkaCluster:
    """The three-broker cluster (controller + brokers 1-3), every node running at test start."""
    return _heal(kafka_cluster_service)


# ---------------------------------------------------------------- Kubernetes API
def _kube_rss(server: KubeApiServer) -> str:
    rss = server.memory_rss_bytes()
    return ", ".join(f"{name} {size / 2**20:.0f} MiB" for name, size in rss.items())


@pytest.fixture(scope="session")
def kube_apiserver(pytestconfig: pytest.Config) -> Iterator[KubeApiServer]:
    """kube-apiserver on etcd, started on first use and wiped at the end of the session."""
    server = KubeApiServer()
    server.start()
    _announce(
        pytestconfig,
        f"kube-apiserver {server.version} on etcd {server.etcd_version} up at {server.url} "
        f"in {server.started_in_s:.1f} s, RSS {_kube_rss(server)}",
    )
    yield server
    server.close()


@pytest.fixture
def kube(kube_apiserver: KubeApiServer) -> KubeApiServer:
    """The session's kube-apiserver and etcd, started again if an earlier test stopped them."""
    return kube_apiserver.heal()


# ---------------------------------------------------------------- names
@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name unique to this test run and test: safe for MQTT topics and Kafka topics."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]
    return f"{base}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------- the agent as a process
@pytest.fixture
def agent_factory(tmp_path: Path, mosquitto: Mosquitto, kafka: KafkaCluster, unique_name: str):
    """Make agent processes for this test (killed at teardown); see tests/support/agent.py."""
    from tests.support.agent import AgentProcess  # noqa: PLC0415

    made: list[AgentProcess] = []

    def make(**overrides: object) -> AgentProcess:
        suffix = f"-{len(made)}" if made else ""
        agent = AgentProcess(
            workdir=tmp_path / f"agent{suffix}",
            mosquitto=mosquitto,
            kafka=kafka,
            name=f"{unique_name}{suffix}",
            overrides=dict(overrides),
        )
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.close()

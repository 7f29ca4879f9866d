"""Apache Kafka in KRaft mode, from the jars Maven resolved into ``tests/infra/kafka/lib``.

Two topologies:

- :meth:`KafkaCluster.single` — one combined broker+controller node, with a PLAINTEXT listener
  and a SASL_PLAINTEXT listener (PLAIN and SCRAM-SHA-512 users ``edge``/``edge-secret``);
  ``single(authorizer=True)`` adds KRaft's ``StandardAuthorizer``: the PLAINTEXT listeners'
  principal ``User:ANONYMOUS`` (the broker itself, and the tests' own admin, producers and
  consumers) is a super user, everyone else (the agent on the SASL listener, ``User:edge``) may
  do only what :meth:`KafkaCluster.create_acls` allows;
- :meth:`KafkaCluster.three_brokers` — one controller process plus three brokers, with
  ``default.replication.factor=3`` and ``min.insync.replicas=2``. The controller is separate so
  that losing two brokers leaves a working quorum and writes are refused by the ISR rule
  (NOT_ENOUGH_REPLICAS), not by a dead controller.

Each node's data and log live in a fresh directory wiped on :meth:`KafkaCluster.close`;
:meth:`KafkaCluster.stop_node`, :meth:`KafkaCluster.kill_node` and
:meth:`KafkaCluster.start_node` let fault tests take one node down and bring it back with its
data.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.infra._process import (
    HARNESS_MARKER,
    REPO_ROOT,
    ManagedProcess,
    ServiceError,
    free_port,
    log_tail,
    port_open,
)

KAFKA_DIR = REPO_ROOT / "tests" / "infra" / "kafka"
LIB_DIR = KAFKA_DIR / "lib"
SASL_USER = "edge"
SASL_PASSWORD = "edge-secret"  # noqa: S105 - a test credential for a loopback broker
SASL_PRINCIPAL = f"User:{SASL_USER}"
SUPER_USER = "User:ANONYMOUS"  # the PLAINTEXT listeners' principal under the authorizer
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
START_TIMEOUT_S = float(os.environ.get("EDGE_AGENT_TEST_KAFKA_START_TIMEOUT_S", "120"))
# Sized for a 2-core / 24 GiB machine running four JVMs at once next to the agent.
JVM_OPTS = [
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
    f"-D{HARNESS_MARKER}=1",
]


class NodeRole(enum.Enum):
    """What a KRaft node does (``process.roles``)."""

    COMBINED = "broker,controller"
    BROKER = "broker"
    CONTROLLER = "controller"


def ensure_kafka_jars() -> None:
    """Resolve Kafka from Maven Central into ``lib/`` unless it is already there."""
    if any(LIB_DIR.glob("kafka_2.13-*.jar")):
        return
    if shutil.which("mvn") is None:
        raise ServiceError("Maven (mvn) is not installed; it resolves Kafka from Maven Central.")
    started = time.monotonic()
    result = subprocess.run(
        ["mvn", "-B", "-q", "-f", str(KAFKA_DIR / "pom.xml"), "dependency:copy-dependencies"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ServiceError(f"mvn could not resolve Kafka:\n{result.stdout[-3000:]}{result.stderr}")
    print(f"[infra] resolved Kafka from Maven in {time.monotonic() - started:.1f} s")


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise ServiceError("java is not installed; Kafka 4.x needs Java 17 or newer.")
    return java


def _classpath() -> str:
    return f"{LIB_DIR}/*"


@dataclass(frozen=True)
class Acl:
    """One ACL entry, in Kafka's own names (``AclOperation``, ``ResourceType``, ...).

    Example: ``Acl("User:edge", "WRITE", "TOPIC", "norm-x")`` lets the agent produce to
    ``norm-x``; ``pattern="PREFIXED"`` matches every topic starting with the name.
    """

    principal: str
    operation: str
    resource_type: str
    resource_name: str
    pattern: str = "LITERAL"
    permission: str = "ALLOW"
    host: str = "*"

    def argument(self) -> str:
        """The entry as one argument of ``Acls.java``."""
        fields = (self.principal, self.resource_type, self.resource_name, self.pattern,
                  self.operation, self.permission, self.host)  # fmt: skip
        if any("|" in f for f in fields):
            raise ValueError(f"an ACL field may not contain '|': {fields}")
        return "|".join(fields)


def producer_acls(principal: str, topics: list[str]) -> list[Acl]:
    """What a principal needs to produce (idempotently) to exactly these topics, and no more."""
    acls = [Acl(principal, "IDEMPOTENT_WRITE", "CLUSTER", "kafka-cluster")]
    for topic in topics:
        acls += [
            Acl(principal, "DESCRIBE", "TOPIC", topic),
            Acl(principal, "WRITE", "TOPIC", topic),
        ]
    return acls


class KafkaNode:
    """One Kafka JVM: its ports, properties, data directory and process."""

    def __init__(self, node_id: int, role: NodeRole, base_dir: Path) -> None:
        self.node_id = node_id
        self.role = role
        self.dir = base_dir / f"node-{node_id}"
        self.data_dir = self.dir / "data"
        self.log = self.dir / "node.log"
        self.port = free_port() if role is not NodeRole.CONTROLLER else 0
        self.sasl_port = 0
        self.controller_port = free_port() if role is not NodeRole.BROKER else 0
        self.properties_file = self.dir / "node.properties"
        self._proc: ManagedProcess | None = None

    @property
    def is_broker(self) -> bool:
        return self.role is not NodeRole.CONTROLLER

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def write_properties(self, voters: str, extra: dict[str, str]) -> None:
        listeners: list[str] = []
        protocol_map = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
        advertised: list[str] = []
        if self.is_broker:
            listeners.append(f"PLAINTEXT://127.0.0.1:{self.port}")
            advertised.append(f"PLAINTEXT://127.0.0.1:{self.port}")
        if self.sasl_port:
            listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}")
            advertised.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}")
            protocol_map.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
        if self.role is not NodeRole.BROKER:
            listeners.append(f"CONTROLLER://127.0.0.1:{self.controller_port}")
        props = {
            "process.roles": self.role.value,
            "node.id": str(self.node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "listeners": ",".join(listeners),
            "listener.security.protocol.map": ",".join(protocol_map),
            "log.dirs": str(self.data_dir),
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.dedupe.buffer.size": "2097152",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "offsets.topic.num.partitions": "4",
            "auto.create.topics.enable": "true",
        }
        if self.is_broker:
            props["advertised.listeners"] = ",".join(advertised)
            props["inter.broker.listener.name"] = "PLAINTEXT"
        if self.sasl_port:
            plain = (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{SASL_USER}" password="{SASL_PASSWORD}" '
                f'user_{SASL_USER}="{SASL_PASSWORD}";'
            )
            props["sasl.enabled.mechanisms"] = "PLAIN,SCRAM-SHA-512"
            props["listener.name.sasl_plaintext.plain.sasl.jaas.config"] = plain
            props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        props.update(extra)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def format(self, cluster_id: str) -> None:
        argv = [_java(), *JVM_OPTS, "-cp", _classpath(), "kafka.tools.StorageTool", "format",
                "--cluster-id", cluster_id, "--config", str(self.properties_file),
                "--ignore-formatted"]  # fmt: skip
        if self.sasl_port:
            argv += ["--add-scram", f"SCRAM-SHA-512=[name={SASL_USER},password={SASL_PASSWORD}]"]
        result = subprocess.run(argv, capture_output=True, text=True, check=False, env=self._env())
        if result.returncode != 0:
            raise ServiceError(f"formatting Kafka node {self.node_id} failed:\n{result.stdout}")

    def _env(self) -> dict[str, str]:
        tmp = self.dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["KAFKA_LOG4J_OPTS"] = ""
        env["JAVA_TOOL_OPTIONS"] = f"-Djava.io.tmpdir={tmp}"
        return env

    def start(self) -> None:
        if self._proc is None:
            argv = [_java(), *JVM_OPTS,
                    f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.xml'}",
                    f"-Dkafka.logs.dir={self.dir}",
                    "-cp", _classpath(), "kafka.Kafka", str(self.properties_file)]  # fmt: skip
            self._proc = ManagedProcess(f"kafka-{self.node_id}", argv, self.log, env=self._env())
        self._proc.start()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop(timeout_s=30.0)

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()

    def assert_alive(self) -> None:
        if not self.running:
            raise ServiceError(f"Kafka node {self.node_id} exited.{log_tail(self.log)}")


class KafkaCluster:
    """A set of KRaft nodes started together; see the module docstring."""

    def __init__(self, nodes: list[KafkaNode], base_dir: Path, name: str) -> None:
        self.nodes = nodes
        self.base_dir = base_dir
        self.name = name
        self.cluster_id = ""
        self.started_in_s = 0.0

    # ------------------------------------------------------------------ topologies
    @classmethod
    def single(cls, *, authorizer: bool = False) -> KafkaCluster:
        """One combined node with PLAINTEXT and SASL_PLAINTEXT listeners.

        Args:
            authorizer: Enable ACLs (``StandardAuthorizer``); see the module docstring.
        """
        base = Path(tempfile.mkdtemp(prefix=f"{HARNESS_MARKER}-kafka-"))
        node = KafkaNode(1, NodeRole.COMBINED, base)
        node.sasl_port = free_port()
        cluster = cls([node], base, "single-acl" if authorizer else "single")
        extra = {
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "num.partitions": "3",
        }
        if authorizer:
            extra["authorizer.class.name"] = STANDARD_AUTHORIZER
            extra["super.users"] = SUPER_USER
            extra["allow.everyone.if.no.acl.found"] = "false"
        node.write_properties(f"1@127.0.0.1:{node.controller_port}", extra)
        return cluster

    @classmethod
    def three_brokers(cls) -> KafkaCluster:
        """A controller (id 100) and brokers 1, 2, 3; RF=3 and min.insync.replicas=2 by default."""
        base = Path(tempfile.mkdtemp(prefix=f"{HARNESS_MARKER}-kafka3-"))
        controller = KafkaNode(100, NodeRole.CONTROLLER, base)
        brokers = [KafkaNode(i, NodeRole.BROKER, base) for i in (1, 2, 3)]
        voters = f"100@127.0.0.1:{controller.controller_port}"
        extra = {
            "default.replication.factor": "3",
            "min.insync.replicas": "2",
            "offsets.topic.replication.factor": "3",
            "transaction.state.log.replication.factor": "3",
            "transaction.state.log.min.isr": "2",
            "share.coordinator.state.topic.replication.factor": "3",
            "share.coordinator.state.topic.min.isr": "2",
            "num.partitions": "3",
            # Fail over quickly when a test kills a broker.
            "broker.session.timeout.ms": "6000",
            "broker.heartbeat.interval.ms": "1000",
            "replica.lag.time.max.ms": "5000",
            "unclean.leader.election.enable": "false",
        }
        for node in [controller, *brokers]:
            node.write_properties(voters, extra)
        return cls([controller, *brokers], base, "three-brokers")

    # ------------------------------------------------------------------ addresses
    @property
    def brokers(self) -> list[KafkaNode]:
        return [n for n in self.nodes if n.is_broker]

    @property
    def bootstrap_servers(self) -> str:
        """``host:port,...`` of every broker's PLAINTEXT listener."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.brokers)

    @property
    def sasl_bootstrap_servers(self) -> str:
        """``host:port`` of the SASL_PLAINTEXT listener (single topology only)."""
        return ",".join(f"127.0.0.1:{n.sasl_port}" for n in self.brokers if n.sasl_port)

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Format every node, start them all, and wait until all brokers are registered."""
        ensure_kafka_jars()
        started = time.monotonic()
        if not self.cluster_id:
            self.cluster_id = _random_cluster_id()
            for node in self.nodes:
                node.format(self.cluster_id)
        for node in self.nodes:
            node.start()
        self.wait_ready([n.node_id for n in self.brokers])
        self.started_in_s = time.monotonic() - started

    def wait_ready(self, broker_ids: list[int], timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until metadata lists exactly the given live brokers, or fail with the log tails."""
        deadline = time.monotonic() + timeout_s
        last_error = "no broker port open yet"
        wanted = set(broker_ids)
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.node_id in wanted or node.role is NodeRole.CONTROLLER:
                    node.assert_alive()
            ports = [self.node(i).port for i in wanted]
            if all(port_open(p) for p in ports):
                bootstrap = ",".join(f"127.0.0.1:{p}" for p in ports)
                try:
                    seen = _run_coroutine(_live_broker_ids, bootstrap)
                except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                    last_error = f"{type(exc).__name__}: {exc}"
                else:
                    if wanted <= seen:
                        return
                    last_error = f"metadata lists brokers {sorted(seen)}, want {sorted(wanted)}"
            time.sleep(0.3)
        tails = "".join(log_tail(n.log, 25) for n in self.nodes)
        raise ServiceError(
            f"Kafka ({self.name}) not ready in {timeout_s:.0f} s: {last_error}{tails}"
        )

    def stop_node(self, node_id: int) -> None:
        """Graceful stop of one node (controlled shutdown)."""
        self.node(node_id).stop()

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node."""
        self.node(node_id).kill()

    def start_node(self, node_id: int, *, wait: bool = True) -> None:
        """Start one node again with its data; optionally wait until it is registered."""
        node = self.node(node_id)
        node.start()
        if wait and node.is_broker:
            self.wait_ready([node_id])

    def stop(self) -> None:
        """Stop brokers first, then controllers."""
        for node in sorted(self.nodes, key=lambda n: n.role is NodeRole.CONTROLLER):
            node.stop()

    def close(self) -> None:
        """Stop every node and wipe the data directories."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def create_acls(self, acls: list[Acl]) -> str:
        """Create ACLs with Kafka's own Admin client; returns every ACL the broker then lists.

        Needs a cluster started with ``single(authorizer=True)``. aiokafka 0.14 cannot create
        ACLs, so this runs ``tests/infra/kafka/Acls.java`` with the JDK's source launcher (about
        2 s, most of it compiling). The ACLs are in force on return: KRaft applies them through
        the metadata log before answering.
        """
        if not acls:
            return ""
        argv = [_java(), "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                f"-D{HARNESS_MARKER}=1", "-Dlog4j2.level=WARN", "-cp", _classpath(),
                str(KAFKA_DIR / "Acls.java"), self.bootstrap_servers,
                *(acl.argument() for acl in acls)]  # fmt: skip
        result = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=120, env=_tool_env()
        )
        if result.returncode != 0:
            raise ServiceError(f"creating ACLs failed:\n{result.stdout}{result.stderr[-3000:]}")
        return result.stdout

    def memory_rss_bytes(self) -> dict[int, int]:
        """Resident memory of each running node, from /proc."""
        out: dict[int, int] = {}
        for node in self.nodes:
            proc = node._proc
            if proc is not None and proc.proc is not None and node.running:
                status = Path(f"/proc/{proc.proc.pid}/status").read_text()
                kb = next(int(line.split()[1]) for line in status.splitlines()
                          if line.startswith("VmRSS:"))  # fmt: skip
                out[node.node_id] = kb * 1024
        return out


def _tool_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("JAVA_TOOL_OPTIONS", None)  # it makes the JVM print a line on stderr
    return env


def _run_coroutine(fn, *args):
    """Run ``fn(*args)`` to completion on a fresh loop in a worker thread.

    Works from plain code and from inside a running event loop (an async test) alike.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(fn(*args))).result()


def _random_cluster_id() -> str:
    # A random 128-bit id in Kafka's URL-safe base64 form; must not start with '-'.
    import base64  # noqa: PLC0415
    import uuid  # noqa: PLC0415

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


async def _live_broker_ids(bootstrap: str) -> set[int]:
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), 5)
        info = await asyncio.wait_for(admin.describe_cluster(), 5)
    finally:
        await admin.close()
    return {int(b["node_id"]) for b in info["brokers"]}

"""Peer comparison: the same MQTT → Kafka load through the agent and the systems people use.

One Mosquitto and one single-node Kafka (the project's own ``tests.infra`` harness) serve every
system in turn; each system gets its own MQTT topic prefix
(``plant/<system>/<device>/temperature``), its own Kafka topic (3 partitions) and its own MQTT
client id, so no run sees another's data.
The systems, each with the configuration the table names:

- ``mosquitto_sub``: the C client, receive only (QoS 1, persistent session): the ceiling.
- ``telegraf``: Telegraf 1.37.2 built by ``scripts/build_telegraf`` with only
  ``inputs.mqtt_consumer`` and ``outputs.kafka``, configured fairly
  (``../shared/notes/telegraf-peer.md``): persistent session, so it acknowledges MQTT only after
  its Kafka write; acks=all, idempotent, zstd, key = device id; the record value is the payload,
  byte for byte. Skipped, with a message, when Go is missing.
- ``bridge``: ``bench/peers/bridge.py``, a plain aiomqtt → aiokafka script (auto-ack, no spool).
- ``agent``: the edge-agent with its defaults (MQTT 5, ``durability: fsync``).

Phases, per system (the system keeps running across them):

1. Throughput: ``--messages`` QoS 1 readings of ``--payload-bytes`` from ``--devices`` C
   ``mosquitto_pub -l`` publishers (pre-generated files), publish start → last record readable
   in Kafka (sum of the partitions' end offsets). CPU µs/msg from ``/proc/PID/stat`` (user +
   system) of the system's process over that window, peak RSS (``VmHWM``), disk bytes written
   (``/proc/PID/io`` ``write_bytes``) per payload byte.
2. Latency: a paced phase at ``--latency-rate`` msg/s for ``--latency-secs`` (30 s by default,
   after a 1 s warm-up): a feeder thread writes readings stamped with the current time into the
   publishers' stdin; latency = the record's append time in Kafka (``LogAppendTime``: with one
   replica the record is readable from then on) minus the reading's ``ts`` (epoch ms, set on the
   publisher side). Telegraf and the bridge forward the payload byte for byte; the agent's
   normalized record carries the same ``ts`` in its canonical JSON, so one extractor serves all.
   Prints p50/p99, p99.9, the maximum and the records over 50 ms, and writes
   ``<system>-latency.csv`` (publish time, latency) to find the stalls behind a p99.

``--outage`` (agent): Kafka stopped, ``--messages`` published into the spool, Kafka restarted;
prints ingest and drain rates and writes a PNG (ingest rate, spool depth, drain rate over time;
sampled from the agent's ``/metrics``) next to the numbers. That ingest is the agent's fastest
intake, so the ratio compares two maximums.

``--catch-up`` (agent): the question a plant asks after a WAN outage. Readings arrive at a steady
``--catch-up-rate`` (5,000 msg/s) throughout; Kafka is down for ``--catch-up-outage-secs`` (30 s)
and then back. Prints the rate at which the agent forwards from the first record readable again
until it has caught up, while readings keep arriving, against the ingest rate, and writes
``catch-up.png``.

What each system loses or duplicates when SIGKILLed: ``bench/kill_compare.py``.

    .venv/bin/python bench/compare.py                           # all systems, ~6 min
    .venv/bin/python bench/compare.py --systems agent,telegraf --outage --catch-up
    flock /tmp/bench.lock .venv/bin/python bench/compare.py     # on a shared machine

The numbers are for comparing systems in one run on one machine; no test asserts any of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.simulate import reading
from tests.infra import KafkaCluster, Mosquitto
from tests.infra._process import HARNESS_MARKER, ManagedProcess, free_port, reap_stale
from tests.support.kafka import create_topic

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = ("mosquitto_sub", "telegraf", "bridge", "agent")
PARTITIONS = 3
CLK_TCK = os.sysconf("SC_CLK_TCK")
TS_RE = re.compile(rb'"ts":(\d+)')
LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
RESULTS_DIR = REPO / ".cache" / "bench-results"


# ---------------------------------------------------------------------------- /proc readings
def cpu_secs(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_mib(pid: int, key: str) -> float:
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def write_bytes(pid: int) -> int:
    """Bytes the process caused to be written to storage (``/proc/PID/io``)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------- load
def line_for(device: str, seq: int, ts_ms: int, pad: str) -> bytes:
    """One reading as ``agent.simulate.reading`` builds it, with a given ``ts`` (fast path)."""
    return (
        f'{{"device_id":"{device}","metric":"temperature","value":{20.0 + (seq % 100) / 10},'
        f'"ts":{ts_ms},"quality":192,"unit":"degC","tags":{{"seq":"{seq}","pad":"{pad}"}}}}\n'
    ).encode()


def device_name(d: int) -> str:
    return f"dev-{d:05d}"


def write_payloads(workdir: Path, devices: int, per_device: int, size: int) -> list[Path]:
    files = []
    for d in range(devices):
        path = workdir / f"dev-{d}.txt"
        with path.open("wb") as fh:
            fh.writelines(reading(device_name(d), seq, size) + b"\n" for seq in range(per_device))
        files.append(path)
    return files


class Publishers:
    """One ``mosquitto_pub -l`` per device; always killed on exit."""

    def __init__(self, port: int, prefix: str, devices: int) -> None:
        self.port = port
        self.prefix = prefix
        self.devices = devices
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, files: list[Path] | None = None) -> None:
        for d in range(self.devices):
            stdin: IO[bytes] | int = files[d].open("rb") if files else subprocess.PIPE
            self.procs.append(
                subprocess.Popen(
                    ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-q", "1",
                     "-M", "200", "-V", "mqttv311", "-i", f"pub-{self.prefix}-{d}",
                     "-t", f"plant/{self.prefix}/{device_name(d)}/temperature", "-l"],
                    stdin=stdin,
                )
            )  # fmt: skip
            if files:
                assert not isinstance(stdin, int)  # noqa: S101 - a file above
                stdin.close()

    def wait(self, timeout_s: float = 120) -> None:
        for p in self.procs:
            if p.stdin is not None:
                with contextlib.suppress(OSError):
                    p.stdin.close()
            p.wait(timeout_s)
        self.procs.clear()

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.procs.clear()


class PacedFeeder(threading.Thread):
    """Writes fresh readings into the publishers' stdin at ``rate`` msg/s in total."""

    def __init__(self, pubs: Publishers, rate: float, secs: float, payload_bytes: int) -> None:
        super().__init__(name="paced-feeder", daemon=True)
        self.pubs = pubs
        self.rate = rate
        self.secs = secs
        base = len(line_for(device_name(0), 0, time.time_ns() // 1_000_000, "")) - 1
        self.pad = "x" * max(0, payload_bytes - base)
        self.sent = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        procs = self.pubs.procs
        seq = [0] * len(procs)
        while not self.stop_flag.is_set():
            elapsed = time.monotonic() - start
            if elapsed >= self.secs:
                break
            due = int(elapsed * self.rate) - self.sent
            now_ms = time.time_ns() // 1_000_000
            touched = set()
            for _ in range(due):
                d = self.sent % len(procs)
                stdin = procs[d].stdin
                assert stdin is not None  # noqa: S101 - started with a pipe
                stdin.write(line_for(device_name(d), seq[d], now_ms, self.pad))
                seq[d] += 1
                self.sent += 1
                touched.add(d)
            for d in touched:
                stdin = procs[d].stdin
                assert stdin is not None  # noqa: S101 - started with a pipe
                stdin.flush()
            time.sleep(0.002)


# ---------------------------------------------------------------------------- Kafka side
class KafkaProbe:
    """End offsets of a topic (records readable) and a latency reader."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            request_timeout_ms=5000,
        )

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.parts)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def end_offsets(self) -> dict[TopicPartition, int]:
        return dict(await self.consumer.end_offsets(self.parts))

    async def readable(self) -> int:
        return sum((await self.end_offsets()).values())

    async def wait_readable(self, target: int, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while (n := await self.readable()) < target:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {n}/{target} records readable in {self.topic} after "
                                 f"{timeout_s:.0f} s")  # fmt: skip
            await asyncio.sleep(0.05)
        return time.monotonic()

    async def latencies(
        self,
        start: dict[TopicPartition, int],
        count: int,
        not_before_ms: int,
        timeline: list[tuple[int, float]] | None = None,
    ) -> list[float]:
        """Latency of the ``count`` records after ``start`` stamped at or after ``not_before_ms``.

        Each record's Kafka timestamp is its broker append time (the topic has
        ``message.timestamp.type=LogAppendTime``; with one replica a record is readable from
        that moment), so the records are read after the paced phase: this reader's CPU does not
        compete with the system under test while it is measured.
        """
        for tp, offset in start.items():
            self.consumer.seek(tp, offset)
        out: list[float] = []
        seen = 0
        deadline = time.monotonic() + 60
        while seen < count and time.monotonic() < deadline:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=20000)
            for msgs in batch.values():
                seen += len(msgs)
                for m in msgs:
                    match = TS_RE.search(m.value)
                    if match and (ts := int(match.group(1))) >= not_before_ms:
                        out.append(float(m.timestamp - ts))
                        if timeline is not None:
                            timeline.append((ts, float(m.timestamp - ts)))
        return out


# ---------------------------------------------------------------------------- systems
@dataclass
class Env:
    work: Path
    mosquitto: Mosquitto
    kafka: KafkaCluster
    args: argparse.Namespace
    telegraf: str | None = None


@dataclass
class Result:
    system: str
    label: str
    rate: float = 0.0
    cpu_us: float = 0.0
    rss_mib: float = 0.0
    disk_ratio: float | None = 0.0
    p50: float | None = None
    p99: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


class System:
    """A system under test: one process that subscribes to MQTT and writes to Kafka."""

    name = ""
    label = ""

    def __init__(self, env: Env, tag: str = "") -> None:
        """``tag`` prefixes the MQTT topic level, Kafka topic, client id and work directory."""
        self.env = env
        self.prefix = tag + self.name
        self.topic = f"bench.{self.prefix}"
        self.client_id = f"bench-{self.prefix}"
        self.dir = env.work / self.prefix
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "out.log"
        self.proc: ManagedProcess | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None  # noqa: S101 - started
        assert self.proc.proc is not None  # noqa: S101 - started
        return self.proc.proc.pid

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ready_line(self) -> str:
        raise NotImplementedError

    def prepare(self) -> None:
        """Before the first start: write config files, create sessions."""

    async def start(self) -> None:
        """Start the process (it is ours to stop from here on) and wait for its ready line."""
        already = self.log.read_text(errors="replace") if self.log.exists() else ""
        self.proc = ManagedProcess(self.name, self.argv(), self.log)
        self.proc.start()
        deadline = time.monotonic() + 60
        while self.ready_line() not in self.log.read_text(errors="replace")[len(already) :]:
            if time.monotonic() > deadline or not self.proc.running:
                raise SystemExit(f"{self.name} did not start:\n" + self.log.read_text()[-3000:])
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout_s=30)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()


def mqtt_session(port: int, client_id: str, topic_filter: str) -> None:
    """Create a persistent MQTT 3.1.1 session with a QoS 1 subscription, then leave."""
    subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-c", "-i", client_id, "-q", "1",
         "-V", "mqttv311", "-t", topic_filter, "-E"],
        check=True, timeout=10,
    )  # fmt: skip


class Telegraf(System):
    name = "telegraf"
    label = "Telegraf 1.37.2 (persistent session, acks after Kafka write)"
    persistent = True

    def prepare(self) -> None:
        env = self.env
        persistent = "true" if self.persistent else "false"
        (self.dir / "telegraf.conf").write_text(f"""
[agent]
  interval = "10s"
  metric_batch_size = 1000
  metric_buffer_limit = 20000
  flush_interval = "100ms"
  flush_jitter = "0s"
  omit_hostname = true

[[inputs.mqtt_consumer]]
  servers = ["tcp://127.0.0.1:{env.mosquitto.port}"]
  topics = ["plant/{self.prefix}/+/+"]
  qos = 1
  persistent_session = {persistent}
  client_id = "{self.client_id}"
  max_undelivered_messages = 10000
  data_format = "value"
  data_type = "string"
  [[inputs.mqtt_consumer.topic_parsing]]
    topic = "plant/+/+/+"
    tags = "_/_/device_id/_"

[[outputs.kafka]]
  brokers = ["{env.kafka.bootstrap_servers}"]
  topic = "{self.topic}"
  routing_tag = "device_id"
  required_acks = -1
  idempotent_writes = true
  compression_codec = 4
  data_format = "template"
  template = '{{{{ .Field "value" }}}}'
""")
        if self.persistent:
            mqtt_session(env.mosquitto.port, self.client_id, f"plant/{self.prefix}/+/+")

    def argv(self) -> list[str]:
        assert self.env.telegraf is not None  # noqa: S101 - checked before
        return [self.env.telegraf, "--config", str(self.dir / "telegraf.conf")]

    def ready_line(self) -> str:
        return "Connected [tcp://"


class TelegrafAutoAck(Telegraf):
    """Telegraf's default: clean session, paho acknowledges on receipt."""

    name = "telegraf-autoack"
    label = "Telegraf 1.37.2 (default: clean session, auto-ack)"
    persistent = False


class Bridge(System):
    name = "bridge"
    label = "plain Python bridge (aiomqtt auto-ack -> aiokafka, uvloop)"

    def argv(self) -> list[str]:
        env = self.env
        return [sys.executable, str(REPO / "bench" / "peers" / "bridge.py"),
                "--mqtt-port", str(env.mosquitto.port), "--filter", f"plant/{self.prefix}/+/+",
                "--bootstrap", env.kafka.bootstrap_servers, "--topic", self.topic,
                "--client-id", self.client_id]  # fmt: skip

    def ready_line(self) -> str:
        return "subscribed"


class Agent(System):
    name = "agent"
    label = "edge-agent, defaults (MQTT 5, fsync spool)"

    def prepare(self) -> None:
        env = self.env
        self.http_port = free_port()
        template = f"plant/{self.prefix}/{{device_id}}/{{metric}}"
        config = {
            "gateway_id": "bench",
            "log_format": "text",
            "report_interval_secs": 1,
            "mqtt": {"port": env.mosquitto.port, "client_id": self.client_id,
                     "subscriptions": [f"plant/{self.prefix}/#"]},
            "kafka": {"bootstrap_servers": env.kafka.bootstrap_servers, "probe_interval_secs": 1,
                      "ack_timeout_secs": 3},
            "pipeline": {"device_id": {"topic_template": template},
                         "topics": {"normalized": self.topic, "raw": f"{self.topic}.raw",
                                    "dlq": f"{self.topic}.dlq"}},
            "spool": {"directory": str(self.dir / "spool")},
            "http": {"listen_host": "127.0.0.1", "port": self.http_port},
        }  # fmt: skip
        for item in env.args.agent_set:
            apply_override(config, item)
        (self.dir / "agent.yaml").write_text(yaml.safe_dump(config))

    def argv(self) -> list[str]:
        wrapper = self.env.args.agent_wrapper
        entry = [str(wrapper)] if wrapper else ["-m", "agent"]
        return [sys.executable, *entry, "run", "--config", str(self.dir / "agent.yaml")]

    def ready_line(self) -> str:
        return "MQTT subscribed"

    def metrics(self) -> dict[str, float]:
        """The agent's unlabelled metrics, and labelled ones summed by name."""
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("edge_agent_"):
                name, _, value = line.rpartition(" ")
                base = name.split("{", 1)[0]
                out[base] = out.get(base, 0.0) + float(value)
        return out


def apply_override(config: dict[str, object], item: str) -> None:
    """Apply ``a.b.c=VALUE`` (VALUE parsed as YAML) to the agent's config dict."""
    key, sep, raw = item.partition("=")
    if not sep:
        raise SystemExit(f"--agent-set {item!r}: expected KEY=VALUE")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})  # type: ignore[assignment]
    node[leaf] = yaml.safe_load(raw)


SYSTEM_CLASSES: dict[str, type[System]] = {
    cls.name: cls for cls in (Telegraf, TelegrafAutoAck, Bridge, Agent)
}


# ---------------------------------------------------------------------------- phases
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def run_mosquitto_sub(env: Env, files: list[Path], total: int) -> Result:
    """The receive-only ceiling: a C client with a persistent session counts the messages."""
    res = Result("mosquitto_sub", "mosquitto_sub (C, receive only: the ceiling)")
    port = env.mosquitto.port
    topic_filter = "plant/mosquitto_sub/+/+"
    mqtt_session(port, "bench-mosquitto_sub", topic_filter)
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-c", "-i", "bench-mosquitto_sub",
         "-q", "1", "-V", "mqttv311", "-t", topic_filter, "-C", str(total)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    pubs = Publishers(port, "mosquitto_sub", env.args.devices)
    try:
        t0 = time.monotonic()
        pubs.start(files)
        waiting = asyncio.ensure_future(asyncio.to_thread(os.wait4, sub.pid, 0))
        while not waiting.done():
            # ru_maxrss would include the forking Python's pages: read VmHWM while it runs.
            with contextlib.suppress(OSError):
                res.rss_mib = max(res.rss_mib, status_mib(sub.pid, "VmHWM"))
            await asyncio.wait({waiting}, timeout=0.05)
        _, status, usage = waiting.result()
        elapsed = time.monotonic() - t0
        sub.returncode = os.waitstatus_to_exitcode(status)
        pubs.wait()
    finally:
        pubs.kill()
        if sub.returncode is None:
            sub.kill()
            sub.wait()
    res.rate = total / elapsed
    res.cpu_us = (usage.ru_utime + usage.ru_stime) * 1e6 / total
    res.disk_ratio = None
    return res


async def run_system(system: System, env: Env, files: list[Path], total: int) -> Result:
    args = env.args
    res = Result(system.name, system.label)
    await create_topic(env.kafka.bootstrap_servers, system.topic, partitions=PARTITIONS,
                       configs=LOG_APPEND_TIME)  # fmt: skip
    probe = KafkaProbe(env.kafka.bootstrap_servers, system.topic)
    await probe.start()
    pubs = Publishers(env.mosquitto.port, system.prefix, args.devices)
    try:
        await asyncio.to_thread(system.prepare)
        await system.start()
        pid = system.pid
        print(f"  {system.name}: {status_mib(pid, 'VmRSS'):.0f} MiB RSS at rest after start",
              flush=True)  # fmt: skip
        # 1. throughput
        cpu0, io0 = cpu_secs(pid), write_bytes(pid)
        t0 = time.monotonic()
        pubs.start(files)
        t_end = await probe.wait_readable(total, 600)
        cpu, io = cpu_secs(pid) - cpu0, write_bytes(pid) - io0
        pubs.wait()
        res.rate = total / (t_end - t0)
        res.cpu_us = cpu * 1e6 / total
        res.rss_mib = status_mib(pid, "VmHWM")
        res.disk_ratio = io / (total * args.payload_bytes)
        print(f"  {system.name}: {res.rate:,.0f} msg/s, {res.cpu_us:.1f} us/msg, "
              f"{res.rss_mib:.0f} MiB peak", flush=True)  # fmt: skip
        # 2. latency at a paced rate
        if args.latency_secs > 0:
            start = await probe.end_offsets()
            pubs.start()
            warmup_s = 1.0
            not_before = time.time_ns() // 1_000_000 + int(warmup_s * 1000)
            feeder = PacedFeeder(pubs, args.latency_rate, args.latency_secs + warmup_s,
                                 args.payload_bytes)  # fmt: skip
            feeder.start()
            try:
                await asyncio.to_thread(feeder.join)
                await asyncio.to_thread(pubs.wait)
                await probe.wait_readable(sum(start.values()) + feeder.sent, 120)
            finally:
                feeder.stop_flag.set()
            timeline: list[tuple[int, float]] = []
            lat = await probe.latencies(start, feeder.sent, not_before, timeline)
            if lat:
                res.p50, res.p99 = percentile(lat, 0.5), percentile(lat, 0.99)
                over = sum(1 for v in lat if v > 50)  # the target, ms
                print(
                    f"  {system.name}: latency p50/p99 {res.p50:.1f}/{res.p99:.1f} ms, p99.9 "
                    f"{percentile(lat, 0.999):.0f} ms, max {max(lat):.0f} ms, {over} over 50 ms "
                    f"({len(lat)} records at {args.latency_rate:,.0f} msg/s)",
                    flush=True,
                )
                # publish time (epoch ms), latency (ms): find the stalls behind the p99
                (args.out / f"{system.name}-latency.csv").write_text(
                    "".join(f"{ts},{v:.0f}\n" for ts, v in sorted(timeline))
                )
        if args.outage and isinstance(system, Agent):
            res.extra = await outage(system, env, probe, files, total)
        if args.catch_up and isinstance(system, Agent):
            res.extra.update(await catch_up(system, env, probe))
    finally:
        pubs.kill()
        system.stop()
        await probe.stop()
    return res


Sample = tuple[float, float, float, float]  # t, MQTT received, spool depth, forwarded


async def sample_agent(agent: Agent, samples: list[Sample], t_origin: float) -> None:
    """Append the agent's counters to ``samples`` every 0.1 s until cancelled."""
    while True:
        with contextlib.suppress(OSError):
            m = await asyncio.to_thread(agent.metrics)
            samples.append((time.monotonic() - t_origin,
                            m.get("edge_agent_mqtt_messages_received_total", 0.0),
                            m.get("edge_agent_spool_records", 0.0),
                            m.get("edge_agent_records_forwarded_total", 0.0)))  # fmt: skip
        await asyncio.sleep(0.1)


async def outage(
    agent: Agent, env: Env, probe: KafkaProbe, files: list[Path], total: int
) -> dict[str, float]:
    """Kafka down while ``total`` messages arrive, then up: ingest, spool depth, drain."""
    base = await probe.readable()
    samples: list[Sample] = []
    t_origin = time.monotonic()
    sampler = asyncio.create_task(sample_agent(agent, samples, t_origin))
    pubs = Publishers(env.mosquitto.port, agent.prefix, env.args.devices)
    try:
        received0 = (await asyncio.to_thread(agent.metrics))[
            "edge_agent_mqtt_messages_received_total"
        ]
        await asyncio.sleep(1)
        t_down = time.monotonic()
        await asyncio.to_thread(env.kafka.stop_node, 1)
        while (await asyncio.to_thread(agent.metrics)).get("edge_agent_uplink_up", 1) != 0:
            await asyncio.sleep(0.1)
        t0 = time.monotonic()
        pubs.start(files)
        while (await asyncio.to_thread(agent.metrics))[
            "edge_agent_mqtt_messages_received_total"
        ] < received0 + total:
            await asyncio.sleep(0.05)
        ingest_s = time.monotonic() - t0
        pubs.wait()
        await asyncio.sleep(1)
        t1 = time.monotonic()
        await asyncio.to_thread(env.kafka.start_node, 1, wait=False)
        # The drain runs from the first record readable again to the last one.
        t_up, t_end = 0.0, time.monotonic() + 600
        while True:
            n = -1
            with contextlib.suppress(Exception):
                n = await asyncio.wait_for(probe.readable(), 2)
            if n > base and not t_up:
                t_up = time.monotonic()
            if n >= base + total:
                break
            if time.monotonic() > t_end:
                raise SystemExit(f"the spool did not drain: {n - base}/{total} readable")
            await asyncio.sleep(0.02)
        t_end = time.monotonic()
        await asyncio.sleep(1)
    finally:
        sampler.cancel()
        pubs.kill()
    drain_s = t_end - t_up
    ingest, drain = total / ingest_s, total / drain_s
    print(
        f"  outage: ingest {ingest:,.0f} msg/s while Kafka was down ({total} msgs); drain "
        f"{drain:,.0f} msg/s ({drain_s:.1f} s from the first record readable again; Kafka "
        f"restart took {t_up - t1:.1f} s); drain/ingest {drain / ingest:.1f}x",
        flush=True,
    )
    plot = env.args.out / "outage.png"
    marks = {"Kafka stopped": t_down, "Kafka restarting": t1, "first record readable": t_up}
    write_plot(plot, samples, {k: v - t_origin for k, v in marks.items()},
               "edge-agent: Kafka outage, spooling and drain")  # fmt: skip
    return {"ingest": ingest, "drain": drain, "ratio": drain / ingest}


async def catch_up(agent: Agent, env: Env, probe: KafkaProbe) -> dict[str, float]:
    """Readings at a steady rate throughout; Kafka down for a while, then up.

    The question a plant asks after a WAN outage: with the sensors still publishing, how fast
    does the backlog go? The drain rate is what the agent forwards from the first record readable
    again until it has caught up (less than 0.1 s of readings not yet readable), while new
    readings keep arriving at the same rate.
    """
    args = env.args
    rate, down_s = args.catch_up_rate, args.catch_up_outage_secs
    samples: list[Sample] = []
    t_origin = time.monotonic()
    sampler = asyncio.create_task(sample_agent(agent, samples, t_origin))
    base = await probe.readable()
    pubs = Publishers(env.mosquitto.port, agent.prefix, env.args.devices)
    pubs.start()
    feeder = PacedFeeder(pubs, rate, 3600, args.payload_bytes)
    feeder.start()
    try:
        await asyncio.sleep(2)  # steady state before the outage
        before = await probe.readable()  # what the agent forwarded before Kafka went down
        t_down = time.monotonic()
        await asyncio.to_thread(env.kafka.stop_node, 1)
        await asyncio.sleep(max(0.0, down_s - (time.monotonic() - t_down)))
        t1 = time.monotonic()
        await asyncio.to_thread(env.kafka.start_node, 1, wait=False)
        t_up = n_up = 0.0
        deadline = time.monotonic() + 600
        while True:
            n = -1
            with contextlib.suppress(Exception):
                n = await asyncio.wait_for(probe.readable(), 2)
            now = time.monotonic()
            if n > before and not t_up:
                t_up, n_up = now, n
            elif t_up and base + feeder.sent - n <= rate * 0.1:
                break
            if now > deadline:
                raise SystemExit(f"the agent did not catch up: {base + feeder.sent - n} behind")
            await asyncio.sleep(0.02)
        t_caught, n_caught = time.monotonic(), n
        backlog = max(s[2] for s in samples) if samples else 0.0
    finally:
        feeder.stop_flag.set()
        await asyncio.to_thread(feeder.join)
        sampler.cancel()
        await asyncio.to_thread(pubs.wait)
    drain = (n_caught - n_up) / (t_caught - t_up)
    print(
        f"  catch-up: {rate:,.0f} msg/s in throughout, Kafka down {down_s:g} s (Kafka restart "
        f"took {t_up - t1:.1f} s more), backlog peaked at {backlog:,.0f} records; with readings "
        f"still arriving, the agent forwarded {drain:,.0f} msg/s until it had caught up, "
        f"{t_caught - t_up:.1f} s after the first record was readable again: drain/ingest "
        f"{drain / rate:.1f}x",
        flush=True,
    )
    marks = {"Kafka stopped": t_down, "Kafka restarting": t1, "first record readable": t_up,
             "caught up": t_caught}  # fmt: skip
    write_plot(env.args.out / "catch-up.png", samples,
               {k: v - t_origin for k, v in marks.items()},
               f"edge-agent: Kafka outage at {rate:,.0f} msg/s, spooling and catch-up")  # fmt: skip
    return {"catch_up_drain": drain, "catch_up_ratio": drain / rate}


def write_plot(path: Path, samples: list[Sample], marks: dict[str, float], title: str) -> None:
    try:
        import matplotlib as mpl  # noqa: PLC0415 - optional: pip install -e '.[bench]'

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("  (no plot: matplotlib is not installed; pip install -e '.[bench]')")
        return
    t = [s[0] for s in samples]

    def rate(i: int, window: int = 5) -> list[float]:
        """Per-second rate of column ``i`` over the last ``window`` samples (0.5 s)."""
        return [
            (samples[k][i] - samples[max(0, k - window)][i])
            / max(1e-6, samples[k][0] - samples[max(0, k - window)][0])
            for k in range(len(samples))
        ]

    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(t, rate(1), label="ingest (MQTT received/s)")
    ax.plot(t, rate(3), label="drain (forwarded to Kafka/s)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("records per second")
    ax2 = ax.twinx()
    ax2.plot(t, [s[2] for s in samples], color="tab:red", linestyle="--", label="spool depth")
    ax2.set_ylabel("records in the spool")
    for name, x in marks.items():
        ax.axvline(x, color="grey", linestyle=":")
        ax.text(x, ax.get_ylim()[1] * 0.5, f" {name}", color="grey", fontsize=8, rotation=90)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper center", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"  plot: {path}")


# ---------------------------------------------------------------------------- table
def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def table(results: list[Result]) -> str:
    by = {r.system: r for r in results}
    tel, bri = by.get("telegraf"), by.get("bridge")
    rows = [
        (
            "| system | msg/s | CPU us/msg | peak RSS MiB | disk B / payload B "
            "| latency p50 / p99 ms | msg/s vs Telegraf | CPU vs Telegraf | msg/s vs bridge "
            "| CPU vs bridge |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lat = f"{r.p50:.1f} / {r.p99:.1f}" if r.p50 is not None and r.p99 is not None else "-"
        rows.append(
            f"| {r.label} | {r.rate:,.0f} | {r.cpu_us:.1f} | {r.rss_mib:.0f} | "
            f"{'-' if r.disk_ratio is None else f'{r.disk_ratio:.2f}'} | {lat} | "
            f"{ratio(r.rate, tel.rate if tel else None)} | "
            f"{ratio(r.cpu_us, tel.cpu_us if tel else None)} | "
            f"{ratio(r.rate, bri.rate if bri else None)} | "
            f"{ratio(r.cpu_us, bri.cpu_us if bri else None)} |"
        )
    return "\n".join(rows)


# ---------------------------------------------------------------------------- main
def build_telegraf() -> str | None:
    """The Telegraf binary (built on first use), or None with a message when Go is missing."""
    result = subprocess.run([str(REPO / "scripts" / "build_telegraf")], stdout=subprocess.PIPE,
                            text=True, check=False)  # fmt: skip
    if result.returncode == 3:
        print("# telegraf skipped: Go is not installed (see scripts/build_telegraf)")
        return None
    if result.returncode != 0:
        raise SystemExit("scripts/build_telegraf failed")
    return result.stdout.strip().splitlines()[-1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated subset of {','.join(SYSTEMS)}")  # fmt: skip
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--payload-bytes", type=int, default=256)
    parser.add_argument("--latency-rate", type=float, default=5000, help="paced phase, msg/s")
    parser.add_argument("--latency-secs", type=float, default=30,
                        help="0 skips the paced phase; long enough that a p99 is not decided by "
                             "one or two stalls (1%% of 6 s is 60 ms of records)")  # fmt: skip
    parser.add_argument("--outage", action="store_true", help="agent: Kafka outage and drain")
    parser.add_argument("--catch-up", action="store_true",
                        help="agent: Kafka outage while readings keep arriving at a steady rate; "
                             "the drain rate until the agent has caught up")  # fmt: skip
    parser.add_argument("--catch-up-rate", type=float, default=5000, help="msg/s, throughout")
    parser.add_argument("--catch-up-outage-secs", type=float, default=30)
    parser.add_argument("--out", type=Path, help=f"results directory (default under {RESULTS_DIR})")
    parser.add_argument("--agent-set", action="append", default=[], metavar="KEY=VALUE",
                        help="agent option in dotted form, VALUE as YAML (repeatable), e.g. "
                             "forwarder.max_in_flight_blocks=4")  # fmt: skip
    parser.add_argument("--agent-wrapper", type=Path, metavar="SCRIPT",
                        help="run the agent through this Python script instead of -m agent "
                             "(same arguments), e.g. a tracemalloc wrapper")  # fmt: skip
    args = parser.parse_args()
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    if args.out is None:
        args.out = RESULTS_DIR / time.strftime("compare-%Y%m%dT%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def stop_on_sigterm() -> None:
    """SIGTERM cancels the run like Ctrl-C does, so every process it started is stopped.

    The work directory's name carries the harness marker, so processes whose config lives in it
    (agent, Telegraf) are also reaped by the next run if this one was SIGKILLed.
    """
    task = asyncio.current_task()
    assert task is not None  # noqa: S101 - called from a coroutine
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


async def main() -> None:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the outage is on purpose
    stop_on_sigterm()
    args = parse_args()
    telegraf = build_telegraf() if "telegraf" in args.systems else None
    reap_stale()
    work = Path(tempfile.mkdtemp(prefix=f"{HARNESS_MARKER}-compare-"))
    mosquitto = Mosquitto()
    kafka = KafkaCluster.single()
    env = Env(work, mosquitto, kafka, args, telegraf)
    results: list[Result] = []
    try:
        print(f"# starting Mosquitto and Kafka; work dir {work}", flush=True)
        mosquitto.start()
        kafka.start()
        per_device = args.messages // args.devices
        total = per_device * args.devices
        files = write_payloads(work, args.devices, per_device, args.payload_bytes)
        print(f"# peer comparison: {total} QoS 1 msgs of {args.payload_bytes} B from "
              f"{args.devices} mosquitto_pub, Mosquitto + Kafka single node on loopback, "
              f"{PARTITIONS} partitions, {os.cpu_count()} cores", flush=True)  # fmt: skip
        for name in args.systems:
            print(f"## {name}", flush=True)
            if name == "mosquitto_sub":
                results.append(await run_mosquitto_sub(env, files, total))
            elif name == "telegraf" and telegraf is None:
                continue
            else:
                results.append(await run_system(SYSTEM_CLASSES[name](env), env, files, total))
        text = table(results)
        print()
        print(text)
        notes = (
            f"latency: the publisher's ts in the payload -> the record's append time in Kafka "
            f"(LogAppendTime), paced at {args.latency_rate:,.0f} msg/s for "
            f"{args.latency_secs:g} s\ndisk: /proc/PID/io write_bytes per payload byte during "
            "the throughput phase; CPU: /proc/PID/stat user+system of the system's process"
        )
        print(f"\n{notes}")
        (args.out / "table.md").write_text(f"{text}\n\n{notes}\n")
        print(f"results: {args.out}")
    finally:
        kafka.close()
        mosquitto.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("interrupted; every process the bench started is stopped")

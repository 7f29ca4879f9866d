"""Demo driver behind ``scripts/demo``: the agent's main job, end to end, on this machine.

Starts Mosquitto and a single-node Apache Kafka (tests/infra), the agent as a real process,
and simulated sensors; shows live progress read back from Kafka; lets you cut the uplink
(press Enter) to watch the spool fill and drain. Ctrl-C stops everything and wipes the data.

    scripts/demo                      # interactive, until Ctrl-C
    scripts/demo --duration-secs 60   # non-interactive, e.g. for CI or a screen recording
    scripts/demo --outage-at-secs 20 --outage-secs 15 --duration-secs 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from agent.simulate import SimulationSettings, Simulator
from tests.infra import KafkaCluster, Mosquitto
from tests.infra._process import reap_stale
from tests.support.kafka import create_topic

TOPICS = ("iot.telemetry.normalized", "iot.telemetry.raw", "iot.dlq")


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def metrics_port(preferred: int = 9810) -> int:
    """The agent's usual metrics port when it is free here, else any free loopback port."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")


class Tally:
    """Counts what arrives in each Kafka topic."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(TOPICS, 0)
        self.last_dlq_reason = ""

    async def run(self, bootstrap: str) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(t, p) for t in TOPICS for p in range(3)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for tp, msgs in batch.items():
                    self.counts[tp.topic] += len(msgs)
                    if tp.topic == "iot.dlq" and msgs:
                        self.last_dlq_reason = dict(msgs[-1].headers)["dlq-reason"].decode()
        finally:
            await consumer.stop()


def agent_progress(log: Path) -> dict[str, str]:
    """The newest 'Progress.' line of the agent's log, as fields."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if "Progress." in line]
    if not lines:
        return {}
    return dict(re.findall(r"(\w+)=(\S+)", lines[-1]))


LOG_LINE = re.compile(r"^\S+ (?P<level>[A-Z]+)\s+(?P<logger>\S+)  (?P<text>.*?)(?: event=\w+)?$")


def lifecycle_lines(log: Path, seen: int) -> tuple[list[str], int]:
    """Lifecycle events, warnings and errors the agent logged after line ``seen``."""
    lines = log.read_text(errors="replace").splitlines()
    shown = []
    for line in lines[seen:]:
        match = LOG_LINE.match(line)
        if match is None:
            continue
        level, logger, text = match["level"], match["logger"], match["text"]
        if logger != "agent.lifecycle" and level not in ("WARNING", "ERROR"):
            continue
        if "Device online." in text and "first_seen=True" in text:
            continue  # every sensor's first message: too many lines for a demo
        shown.append(text if level == "INFO" else f"{level} {text}")
    return shown, len(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description="edge-agent end-to-end demo")
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--rate-per-device-hz", type=float, default=10.0)
    parser.add_argument("--duration-secs", type=float, default=0, help="0 = until Ctrl-C")
    parser.add_argument("--outage-at-secs", type=float, default=0, help="cut the uplink then")
    parser.add_argument("--outage-secs", type=float, default=15)
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    # SIGTERM (a supervisor, `timeout`) stops the demo as Ctrl-C does: through the cleanup below.
    main_task = asyncio.current_task()
    assert main_task is not None  # noqa: S101 - asyncio.run runs main() as a task
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)

    reap_stale()
    work = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    mosquitto = Mosquitto()
    kafka = KafkaCluster.single()
    agent: subprocess.Popen[bytes] | None = None
    try:
        t0 = time.monotonic()
        mosquitto.start()
        say(f"Mosquitto up at {mosquitto.url} ({time.monotonic() - t0:.1f} s)")
        kafka.start()
        say(f"Kafka (KRaft, Apache {kafka_version()}) up at {kafka.bootstrap_servers} "
            f"({kafka.started_in_s:.1f} s)")  # fmt: skip
        for topic in TOPICS:
            await create_topic(kafka.bootstrap_servers, topic, partitions=3)
        config = {
            "gateway_id": "demo-gateway",
            "log_format": "text",
            "report_interval_secs": 1,
            "drain_timeout_secs": 10,
            "mqtt": {"port": mosquitto.port, "subscriptions": ["plant/#"]},
            "kafka": {"bootstrap_servers": kafka.bootstrap_servers, "probe_interval_secs": 1,
                      "ack_timeout_secs": 3, "request_timeout_secs": 5},
            "pipeline": {"device_id": {"topic_template": "plant/{site}/{device_id}/{metric}"},
                         "forward_raw": True},
            "spool": {"directory": str(work / "spool")},
            "http": {"listen_host": "127.0.0.1", "port": metrics_port()},
        }  # fmt: skip
        (work / "agent.yaml").write_text(yaml.safe_dump(config))
        log = work / "agent.log"
        with log.open("wb") as fh:
            agent = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(work / "agent.yaml")],
                stdout=fh, stderr=subprocess.STDOUT,
            )  # fmt: skip
        while "MQTT subscribed" not in log.read_text():
            if agent.poll() is not None:
                say("the agent exited:\n" + log.read_text()[-3000:])
                return 1
            await asyncio.sleep(0.1)
        say(f"agent running (pid {agent.pid}), config {work / 'agent.yaml'}, log {log}")
        say(f"metrics at http://127.0.0.1:{config['http']['port']}/metrics")
        sim = Simulator(
            SimulationSettings(
                port=mosquitto.port,
                topic_prefix="plant/demo",
                devices=args.devices,
                messages_per_device=0,
                rate_per_device_hz=args.rate_per_device_hz,
                bad_every=50,
            )
        )
        say(f"simulating {args.devices} sensors at {args.rate_per_device_hz:g} Hz each; "
            "every 50th message is malformed and goes to the dead-letter topic")  # fmt: skip
        interactive = sys.stdin.isatty() and not args.duration_secs
        if interactive:
            say("press Enter to cut the uplink to Kafka, Enter again to restore it; Ctrl-C stops")
        await run_demo(args, sim, kafka, log, interactive)
        return 0
    finally:
        if agent is not None and agent.poll() is None:
            say("stopping the agent (SIGTERM: it drains the spool first)")
            agent.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.wait(30)
        kafka.close()
        mosquitto.close()
        say(f"stopped; demo data wiped (agent log kept at {work / 'agent.log'})")


async def run_demo(args, sim: Simulator, kafka: KafkaCluster, log: Path, interactive: bool) -> None:
    tally = Tally()
    toggles: asyncio.Queue[None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    if interactive:
        loop.add_reader(
            sys.stdin.fileno(), lambda: (sys.stdin.readline(), toggles.put_nowait(None))
        )
    started = time.monotonic()
    uplink_cut = False
    seen = 0
    last_published = last_normalized = 0
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sim.run())
        tally_task = tg.create_task(tally.run(kafka.bootstrap_servers))
        try:
            while not args.duration_secs or time.monotonic() - started < args.duration_secs:
                await asyncio.sleep(2)
                elapsed = time.monotonic() - started
                scheduled = args.outage_at_secs and (
                    args.outage_at_secs <= elapsed < args.outage_at_secs + args.outage_secs
                )
                want_cut = uplink_cut
                while not toggles.empty():
                    toggles.get_nowait()
                    want_cut = not want_cut
                if args.outage_at_secs:
                    want_cut = bool(scheduled)
                if want_cut != uplink_cut:
                    uplink_cut = want_cut
                    say("cutting the uplink: stopping Kafka" if uplink_cut else
                        "restoring the uplink: starting Kafka")  # fmt: skip
                    await asyncio.to_thread(kafka.stop_node if uplink_cut else kafka.start_node, 1)
                lines, seen = lifecycle_lines(log, seen)
                for line in lines:
                    say(f"agent: {line}")
                p = agent_progress(log)
                c = tally.counts
                in_rate = (sim.published - last_published) / 2
                out_rate = (c["iot.telemetry.normalized"] - last_normalized) / 2
                last_published, last_normalized = sim.published, c["iot.telemetry.normalized"]
                say(f"t={elapsed:5.0f}s in={in_rate:5.0f}/s out={out_rate:6.0f}/s "
                    f"published={sim.published:7d} "
                    f"normalized={c['iot.telemetry.normalized']:7d} "
                    f"raw={c['iot.telemetry.raw']:7d} "
                    f"dlq={c['iot.dlq']:5d} spool={p.get('spool_records', '?'):>6} "
                    f"uplink={'up' if p.get('uplink_up') == 'True' else 'DOWN'}")  # fmt: skip
        finally:
            if interactive:
                loop.remove_reader(sys.stdin.fileno())
            # stop(), not cancel(): a cancel that lands in a failing publish is spent there and
            # leaves the simulator running (Python 3.11), which kept the demo from ending.
            sim.stop()
            tally_task.cancel()
    if uplink_cut:
        await asyncio.to_thread(kafka.start_node, 1)


def kafka_version() -> str:
    jars = sorted(Path("tests/infra/kafka/lib").glob("kafka_2.13-*.jar"))
    return jars[0].stem.split("-")[-1] if jars else "?"


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(asyncio.run(main()))

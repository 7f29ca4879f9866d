r"""``edge-agent dry-run``: what the agent would produce for one MQTT message, without a broker.

Usage::

    edge-agent dry-run --topic zigbee2mqtt/kitchen --payload '{"temperature":21.5}' \
        --config /etc/edge-agent/config.yaml [--set PATH=VALUE ...] [--format json]

The message goes through exactly what ingest runs: the payload limit the MQTT source applies
(a payload over ``pipeline.max_payload_bytes`` is cut as on receipt), the last-will check, and
:meth:`agent.pipeline.Pipeline.process` built from the configuration (file, ``EDGE_AGENT_``
environment, and ``--set``/``--gateway-id`` flags as for ``run``, so a profile can be tried
before it is written into the file). It prints the profile that reads the topic, the outcome,
and every record with its Kafka topic, key, timestamp, headers and value, or the DLQ reason and
detail. Nothing is sent or written.

The message id is fixed (``--message-id``, 32 zeros by default) and the receive time is now
(``--received-at-ms``), so two runs print the same ids. Operators use it to write profiles; the
how-to is ``docs/how-to/map-payloads.md``.

Exit codes: 0 the message is VALID; 1 it would be REJECTED (dead-letter) or DROPPED, or the
payload file cannot be read; 2 usage error; 78 the configuration is invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Final

from agent._config.flags import add_config_flags, overrides

if TYPE_CHECKING:
    from agent.config import AgentSettings
    from agent.model import Record
    from agent.pipeline import Processed

COMMAND: Final = "dry-run"
DRY_RUN_MESSAGE_ID: Final = "0" * 32
EXIT_NOT_VALID: Final = 1
EX_CONFIG: Final = 78


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dry-run`` to the ``edge-agent`` sub-command parser."""
    parser = sub.add_parser(
        COMMAND,
        help="show the records one MQTT message would give, without any broker",
        description=(
            "Run one MQTT message through the agent's pipeline as configured and print what "
            "it would produce: every record with its topic, key, headers and value, or the "
            "dead-letter reason. Nothing is sent. Exit 0 valid, 1 dead-letter or dropped, "
            "78 bad configuration."
        ),
    )
    parser.add_argument("--topic", required=True, help="the MQTT topic the message arrives on")
    payload = parser.add_mutually_exclusive_group(required=True)
    payload.add_argument("--payload", metavar="TEXT", help="the payload, as UTF-8 text")
    payload.add_argument(
        "--payload-file",
        type=Path,
        metavar="FILE",
        help="read the payload bytes from FILE (- = stdin)",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML configuration file")
    add_config_flags(parser)
    parser.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    parser.add_argument(
        "--message-id",
        default=DRY_RUN_MESSAGE_ID,
        type=_message_id,
        help="the message's id (32 lowercase hex digits; default 32 zeros)",
    )
    parser.add_argument(
        "--received-at-ms", type=int, metavar="MS", help="receive time, epoch ms (default now)"
    )


def _message_id(text: str) -> str:
    if len(text) != 32 or text.strip("0123456789abcdef"):  # noqa: PLR2004
        raise argparse.ArgumentTypeError("a message id is 32 lowercase hex digits")
    return text


def dispatch(args: argparse.Namespace) -> int | None:
    """Run ``dry-run`` when ``args`` names it; None otherwise."""
    if args.command != COMMAND:
        return None
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Load the configuration, process the message and print the result; the exit code."""
    from agent.config import InvalidConfigError, load_config  # noqa: PLC0415 - slow import

    try:
        settings = load_config(args.config, overrides(args)).settings
    except InvalidConfigError as exc:
        for problem in exc.problems:
            print(f"edge-agent: {problem}", file=sys.stderr)  # noqa: T201
        return EX_CONFIG
    try:
        payload = _payload(args)
    except OSError as exc:
        print(f"edge-agent: cannot read the payload file: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_NOT_VALID
    received_at_ms = args.received_at_ms
    if received_at_ms is None:
        received_at_ms = time.time_ns() // 1_000_000
    result = dry_run(settings, args.topic, payload, received_at_ms, args.message_id)
    text = json.dumps(result, indent=2) if args.format == "json" else render_text(result)
    sys.stdout.write(text + "\n")
    return 0 if result["outcome"] == "valid" else EXIT_NOT_VALID


def _payload(args: argparse.Namespace) -> bytes:
    if args.payload is not None:
        return str(args.payload).encode("utf-8", "surrogateescape")
    path: Path = args.payload_file
    if str(path) == "-":
        return sys.stdin.buffer.read()
    return path.read_bytes()


def dry_run(
    settings: AgentSettings,
    topic: str,
    payload: bytes,
    received_at_ms: int,
    message_id: str = DRY_RUN_MESSAGE_ID,
) -> dict[str, object]:
    """What the agent configured by ``settings`` produces for one message, as plain data.

    Returns:
        ``topic``, ``profile``, ``outcome`` (valid, rejected, dropped or last_will), ``reason``,
        ``detail`` and ``records`` (each with ``topic``, ``key``, ``timestamp_ms``, ``headers``
        and ``value``; bytes that are not UTF-8 are shown with backslash escapes). With alert
        rules, the alert records the message's readings raise from a fresh state (nothing
        raised yet, no for_s timer running) follow the message's records.
    """
    from paho.mqtt.client import topic_matches_sub  # noqa: PLC0415

    from agent.model import ReceivedMessage  # noqa: PLC0415
    from agent.pipeline import Pipeline  # noqa: PLC0415

    pipeline = Pipeline(settings.pipeline, settings.gateway_id)
    limit = settings.pipeline.max_payload_bytes
    original_size, digest = None, None
    if len(payload) > limit:  # the MQTT source cuts it on receipt
        original_size, digest = len(payload), sha256(payload).hexdigest()
        payload = payload[: settings.pipeline.dlq_max_payload_bytes]
    message = ReceivedMessage(
        topic,
        payload,
        qos=1,
        retain=False,
        received_at_ms=received_at_ms,
        original_size=original_size,
        payload_sha256=digest,
        message_id=message_id,
    )
    result: dict[str, object] = {"topic": topic, "profile": pipeline.profile(topic)}
    if any(topic_matches_sub(f, topic) for f in settings.lifecycle.last_will_topics):
        device_id = pipeline.device_id(message)
        detail = f"a last will of device {device_id!r}: a device_offline lifecycle event"
        return {**result, "outcome": "last_will", "reason": None, "detail": detail, "records": []}
    processed = pipeline.process(message)
    shown = _processed(processed)
    if settings.alerts.rules:  # evaluated from a fresh state: as if nothing were raised yet
        from agent.alerts import AlertEngine  # noqa: PLC0415

        engine = AlertEngine(
            settings.alerts, settings.gateway_id, settings.pipeline.topics.normalized
        )
        alerts = engine.observe(processed.records, received_at_ms)
        shown["records"] = [*shown["records"], *map(_record, alerts)]  # type: ignore[misc]
    return {**result, **shown}


def _processed(processed: Processed) -> dict[str, object]:
    return {
        "outcome": processed.outcome.value,
        "reason": None if processed.reason is None else processed.reason.value,
        "detail": processed.detail,
        "records": [_record(record) for record in processed.records],
    }


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def _record(record: Record) -> dict[str, object]:
    return {
        "topic": record.topic,
        "key": None if record.key is None else _text(record.key),
        "timestamp_ms": record.timestamp_ms,
        "headers": {name: _text(value) for name, value in record.headers},
        "value": _text(record.value),
    }


def render_text(result: dict[str, object]) -> str:
    """The result of :func:`dry_run` for people."""
    lines = [f"topic:   {result['topic']}", f"profile: {result['profile']}"]
    records: list[dict[str, object]] = result["records"]  # type: ignore[assignment]
    outcome = f"outcome: {result['outcome']}"
    if result["reason"] is not None:
        outcome += f" ({result['reason']}: {result['detail']})"
    elif result["detail"] is not None:
        outcome += f" ({result['detail']})"
    lines.append(f"{outcome}, {len(records)} record{'s' if len(records) != 1 else ''}")
    for index, record in enumerate(records, 1):
        lines.append("")
        lines.append(f"record {index} -> {record['topic']}")
        key = record["key"]
        lines.append(f"  key:       {'(none)' if key is None else key}")
        lines.append(f"  timestamp: {record['timestamp_ms']}")
        headers: dict[str, str] = record["headers"]  # type: ignore[assignment]
        lines.append("  headers:")
        lines.extend(f"    {name}: {value}" for name, value in headers.items())
        lines.append(f"  value:     {record['value']}")
    return "\n".join(lines)


__all__ = ["COMMAND", "add_parser", "dispatch", "dry_run", "render_text", "run"]

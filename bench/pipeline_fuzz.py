"""Fuzz the pipeline: generated payloads and topics through Pipeline.process and its records.

Usage: ``.venv/bin/python bench/pipeline_fuzz.py [cases] [seed]`` (default 100,000 cases,
seed 9). Not a CI test: it takes a minute or two. Every case is a (topic, payload) pair from one
of the generators below (random bytes, text with Unicode edge cases, readings with wrong types,
NaN/inf, huge numbers, deep and huge JSON, odd topics), processed by one of several pipeline
configurations. Oversized payloads also go through the MQTT source's cut (as the source does
right after receipt) in half of the cases.

Every tenth case also goes through the last-will path (device id of a non-reading, then the
``device_offline`` record ingest spools), counted on its own line.

Each result is checked against the pipeline's contract (never raises; VALID has 1-2 records
with a JSON reading keyed by the device id; REJECTED has exactly one DLQ record holding the
payload's first ``dlq_max_payload_bytes`` bytes, with original-size and payload-sha256 when
cut; DROPPED has none; every record has the fixed header order, bytes values and an int64
timestamp). The report counts every outcome by reason; the counts sum to the input, and any
exception, ``internal_error`` or contract violation is a crash (exit status 1).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING

from agent.lifecycle.emitter import Lifecycle
from agent.lifecycle.presence import Presence
from agent.lifecycle.settings import LifecycleSettings
from agent.model import ReceivedMessage
from agent.pipeline import Outcome, Pipeline, PipelineSettings, Reason

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.model import Record
    from agent.pipeline import Processed

RECEIVED_AT_MS = 1_764_182_400_000
COMMON = ["message-id", "source-topic", "gateway-id", "received-at", "schema-version"]
INT64 = (-(2**63), 2**63 - 1)

CONFIGS: dict[str, PipelineSettings] = {
    "default": PipelineSettings(),
    "template": PipelineSettings.model_validate(
        {"device_id": {"topic_template": "plant/{site}/{device_id}/{metric}", "json_field": None}}
    ),
    "template+field": PipelineSettings.model_validate(
        {
            "device_id": {"topic_template": "p/{device_id}", "json_field": "meta.id"},
            "forward_raw": True,
        }
    ),
    "strict": PipelineSettings.model_validate(
        {
            "unknown_fields": "reject",
            "missing_ts": "reject",
            "min_quality": 100,
            "low_quality_action": "dlq",
        }
    ),
    "tags": PipelineSettings.model_validate(
        {"unknown_fields": "keep_as_tags", "max_tags": 4, "max_tag_bytes": 16}
    ),
    "mapped": PipelineSettings.model_validate(
        {"field_map": {"value": "v", "ts": "t", "metric": "m"}, "min_quality": 10}
    ),
    "small": PipelineSettings.model_validate(
        {"max_payload_bytes": 1024, "dlq_max_payload_bytes": 100, "forward_raw": True}
    ),
}

UNICODE = [
    "",
    "\x00",
    "\x1f",
    "\x7f",
    "\u0085",
    "\u200b",
    "\u200e",
    "\u202e",
    "\ufeff",
    "\ufffd",
    "\uffff",
    "\U0001f600",
    "e\u0301",
    "\U0010ffff",
    "ß",
    "İ",
    "\u2028",
    "\ud800",
    "\udfff",
    "a" * 300,
]
NUMBERS: list[object] = [
    0,
    -0.0,
    1,
    -1,
    21.5,
    1e308,
    -1e308,
    5e-324,
    2**53 + 1,
    2**63,
    -(2**63) - 1,
    10**30,
    True,
    False,
    None,
    "21.5",
    "",
    [],
    {},
    [1.0],
    {"v": 1},
]
NUMBER_LITERALS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1" * 5000,
    "-0",
    "0.000000000000000000000000001",
    "1E+2",
    "01",
    "1.",
    ".5",
    "+1",
    "0x10",
]
TIMESTAMPS: list[object] = [
    RECEIVED_AT_MS,
    RECEIVED_AT_MS // 1000,
    RECEIVED_AT_MS * 1000,
    RECEIVED_AT_MS * 1_000_000,
    -1,
    0,
    2**63,
    1.5e12,
    float(RECEIVED_AT_MS) + 0.5,
    "2025-11-26T18:40:00Z",
    "2025-11-26T18:40:00+14:00",
    "2025-11-26T18:40:00",
    "2025-02-30T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "0001-01-01T00:00:00Z",
    "2025-11-26T18:40:00.123456789Z",
    "yesterday",
    "",
    None,
    [],
    True,
]
QUALITIES: list[object] = [
    0,
    64,
    192,
    255,
    256,
    -1,
    1.5,
    "good",
    "bad",
    "uncertain",
    "GOOD",
    "x",
    None,
]


def _topics(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind < 4:
        site = rng.choice(["berlin", "werk-süd", "", "+", "#"])
        device = rng.choice(["press-7", "d1", "", "dev\x00", "d" * 300, rng.choice(UNICODE)])
        metric = rng.choice(["temp", "", "vib/x", rng.choice(UNICODE)])
        return rng.choice([f"plant/{site}/{device}/{metric}", f"p/{device}", "sensors/x"])
    if kind == 4:
        return "/".join(rng.choice(UNICODE) for _ in range(rng.randrange(1, 6)))
    if kind == 5:
        return "x/" * rng.randrange(0, 2000)
    if kind == 6:
        return "".join(chr(rng.randrange(0, 0x110000)) for _ in range(rng.randrange(0, 40)))
    return rng.choice(["", "/", "//", "#", "+/+", "$SYS/x", "a" * 65535, "plant/s/d/m"])


def _reading(rng: random.Random) -> dict[str, object]:
    doc: dict[str, object] = {
        "device_id": rng.choice(["d1", "press-7", "", 7, None, [], "\x00", "d" * 300, "é"]),
        "metric": rng.choice(["temp", "", 1, None, "\n", "m" * 300, rng.choice(UNICODE)]),
        "value": rng.choice(NUMBERS),
        "ts": rng.choice(TIMESTAMPS),
        "quality": rng.choice(QUALITIES),
        "unit": rng.choice(["degC", "", 5, None, "u" * 300]),
        "tags": rng.choice(
            [{"line": "3"}, {}, [], "x", {"k": 1}, {"": "v"}, {f"t{i}": "v" for i in range(40)}]
        ),
        "meta": rng.choice([{"id": "m1"}, {"id": 5}, {}, None, "x"]),
        "v": rng.choice(NUMBERS),
        "t": rng.choice(TIMESTAMPS),
        "m": rng.choice(["temp", 3]),
        "extra": rng.choice(["x", 1, None, {"a": 1}, [1], True]),
    }
    for key in list(doc):
        if rng.random() < 0.3:
            del doc[key]
    return doc


def _json_reading(rng: random.Random) -> bytes:
    text = json.dumps(_reading(rng), ensure_ascii=rng.random() < 0.5, allow_nan=True)
    if rng.random() < 0.3:
        text = text.replace('"value": ', f'"value": {rng.choice(NUMBER_LITERALS)}, "_": ', 1)
    encoding = rng.choice(["utf-8"] * 8 + ["utf-16", "utf-8-sig", "utf-32"])
    return text.encode(encoding, "surrogatepass")


def _near_valid(rng: random.Random) -> bytes:
    """A good reading with at most one field changed to an odd value."""
    doc: dict[str, object] = {
        "device_id": "d1",
        "meta": {"id": "m1"},
        "metric": "temp",
        "value": 21.5,
        "ts": RECEIVED_AT_MS - 1000,
        "v": 3,
        "t": RECEIVED_AT_MS,
        "m": "vib",
    }
    if rng.random() < 0.3:
        doc.update(quality=rng.choice(QUALITIES), unit="degC", tags={"line": "3"})
    key = rng.choice(["value", "ts", "metric", "device_id", "quality", "tags", "unit", "none"])
    pools: dict[str, list[object]] = {
        "value": NUMBERS,
        "ts": TIMESTAMPS,
        "quality": QUALITIES,
        "metric": ["", "x" * 300, 5, *UNICODE],
        "device_id": ["", 5, "d" * 300, *UNICODE],
        "tags": [{}, {"k": 1}, {f"t{i}": "v" for i in range(40)}, {"k": "v" * 300}, []],
        "unit": ["", 5, None, "u" * 300],
    }
    if key in pools:
        doc[key] = rng.choice(pools[key])
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5, allow_nan=True)
    if key == "value" and rng.random() < 0.3:
        text = text.replace('"value": ', f'"value": {rng.choice(NUMBER_LITERALS)}, "_": ', 1)
    return text.encode("utf-8", "surrogatepass")


def _random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([0, 1, 2, 16, 200, 2000]))


def _text(rng: random.Random) -> bytes:
    parts = [
        rng.choice([*UNICODE, "{", "}", "[", '"', ":", ",", "null", "1e999"]) for _ in range(20)
    ]
    return "".join(parts).encode("utf-8", "surrogatepass")


def _deep(rng: random.Random) -> bytes:
    depth = rng.choice([50, 500, 5000, 100_000])
    if rng.random() < 0.5:
        return b"[" * depth + b"]" * depth
    return b'{"value":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


def _huge(rng: random.Random) -> bytes:
    size = rng.choice([1000, 60_000, 65_536, 65_537, 200_000, 1_500_000])
    kind = rng.randrange(3)
    if kind == 0:
        return json.dumps(
            {"device_id": "d1", "metric": "m", "value": 1, "pad": "x" * size}
        ).encode()
    if kind == 1:
        return json.dumps({"device_id": "d1", "metric": "m", "value": [1] * (size // 3)}).encode()
    return b'{"device_id":"d1","metric":"m","value":' + b"9" * size + b"}"


def _odd_json(rng: random.Random) -> bytes:
    return rng.choice(
        [
            b'{"device_id":"d1","device_id":"d2","metric":"m","value":1}',
            b'{"device_id":"d1","metric":"m","value":1} trailing',
            b'{"device_id":"d1","metric":"m","value":1,}',
            b"\xef\xbb\xbf{}",
            b"null",
            b"[]",
            b'"string"',
            b"1",
            b"{}",
            b'{"device_id":"d1","metric":"m","value":1e-400}',
            b'{"device_id":"d1","metric":"m","value":-0}',
            b'{"device_id":"d1","metric":"m","value":1,"ts":"2025-11-26T18:40:00\\u0000Z"}',
            b'{"device_id":"\\ud800","metric":"m","value":1}',
            b'{"device_id":"d1","metric":"\\u0000","value":1}',
            b'{"\\ud800":1}',
        ]
    )


GENERATORS: list[tuple[str, int, Callable[[random.Random], bytes]]] = [
    ("near_valid", 30, _near_valid),
    ("reading", 25, _json_reading),
    ("random_bytes", 12, _random_bytes),
    ("text", 12, _text),
    ("odd_json", 10, _odd_json),
    ("deep_json", 3, _deep),
    ("huge", 1, _huge),
]


def _cut(message: ReceivedMessage, settings: PipelineSettings) -> ReceivedMessage:
    """What the MQTT source hands over for a payload over max_payload_bytes."""
    payload = message.payload
    return ReceivedMessage(
        message.topic,
        payload[: settings.dlq_max_payload_bytes],
        message.qos,
        message.retain,
        message.received_at_ms,
        original_size=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
    )


def _violations(  # noqa: C901 - one check per clause of the contract
    result: Processed, message: ReceivedMessage, original: bytes, settings: PipelineSettings
) -> list[str]:
    problems: list[str] = []
    if result.reason is Reason.INTERNAL_ERROR:
        problems.append(f"internal_error: {result.detail}")
    for record in result.records:
        problems.extend(_record_problems(record, message))
    if result.outcome is Outcome.VALID:
        if result.reason is not None or result.device_id is None:
            problems.append("VALID with a reason or without a device id")
        elif not 1 <= len(result.records) <= 2:
            problems.append(f"VALID with {len(result.records)} records")
        else:
            reading = json.loads(result.records[-1].value)
            if result.records[-1].key != result.device_id.encode("utf-8"):
                problems.append("normalized key is not the device id")
            if reading["device_id"] != result.device_id:
                problems.append("reading device_id differs")
    elif result.outcome is Outcome.REJECTED:
        if len(result.records) != 1 or result.reason is None:
            problems.append("REJECTED without exactly one record and a reason")
        else:
            (record,) = result.records
            headers = dict(record.headers)
            keep = settings.dlq_max_payload_bytes
            if record.value != original[:keep]:
                problems.append("DLQ value is not the payload's prefix")
            if headers.get("dlq-reason") != result.reason.value.encode():
                problems.append("dlq-reason header")
            if len(original) > keep and (
                headers.get("original-size") != b"%d" % len(original)
                or headers.get("payload-sha256") != hashlib.sha256(original).hexdigest().encode()
            ):
                problems.append("cut DLQ payload without original-size / payload-sha256")
    elif result.records or result.reason is None:
        problems.append("DROPPED with records or without a reason")
    return problems


def _last_will(
    pipeline: Pipeline, presence: Presence, message: ReceivedMessage, wills: Counter[str]
) -> list[str]:
    """Run ``message`` as a last will; count the outcome, return contract violations."""
    wills["cases"] += 1
    try:
        device_id = pipeline.device_id(message)
        if device_id is None:
            wills["no_device"] += 1
            return []
        presence.seen(device_id, RECEIVED_AT_MS)  # online, so the will takes it offline
        record = presence.last_will(device_id, RECEIVED_AT_MS, event_id=message.message_id)
    except Exception as exc:  # noqa: BLE001 - the fuzz counts every crash
        wills["exception"] += 1
        return [f"last will raised {type(exc).__name__}: {exc}"[:200]]
    if record is None:
        return ["last will of an online device gave no record"]
    wills["record"] += 1
    event = json.loads(record.value)
    if record.key != device_id.encode("utf-8") or event["event_id"] != message.message_id:
        return ["last-will record key or event id"]
    return []


def _record_problems(record: Record, message: ReceivedMessage) -> list[str]:
    problems = []
    names = [name for name, _ in record.headers]
    if names[:5] != COMMON:
        problems.append(f"header order {names}")
    if not all(isinstance(v, bytes) for _, v in record.headers):
        problems.append("a header value is not bytes")
    if dict(record.headers).get("message-id") != message.message_id.encode():
        problems.append("message-id is not the message's id")
    if not isinstance(record.value, bytes) or not (INT64[0] <= record.timestamp_ms <= INT64[1]):
        problems.append("value not bytes or timestamp outside int64")
    try:
        record.topic.encode("utf-8")
        for name, _ in record.headers:
            name.encode("ascii")
    except UnicodeEncodeError:
        problems.append("topic or header name not encodable")
    return problems


def main() -> int:
    """Run the fuzz cases and print the report; exit status 1 on any crash."""
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 9
    rng = random.Random(seed)  # noqa: S311 - reproducible cases, not cryptography
    pipelines = {name: Pipeline(s, "gw-fuzz") for name, s in CONFIGS.items()}
    names = [g[0] for g in GENERATORS]
    weights = [g[1] for g in GENERATORS]
    makers = {g[0]: g[2] for g in GENERATORS}
    outcomes: Counter[str] = Counter()
    by_generator: Counter[str] = Counter()
    by_config: Counter[str] = Counter()
    crashes: Counter[str] = Counter()
    examples: dict[str, tuple[str, bytes]] = {}
    cut_cases = 0
    wills: Counter[str] = Counter()
    lifecycle_settings = LifecycleSettings(max_tracked_devices=1000)
    presence = Presence(lifecycle_settings, Lifecycle(lifecycle_settings, "gw-fuzz"))
    logging.disable(logging.CRITICAL)  # device_offline lines
    started = time.perf_counter()
    for _ in range(cases):
        generator = rng.choices(names, weights)[0]
        config = rng.choice(list(CONFIGS))
        settings = CONFIGS[config]
        topic = _topics(rng)
        payload = makers[generator](rng)
        message = ReceivedMessage(topic, payload, 1, retain=False, received_at_ms=RECEIVED_AT_MS)
        if len(payload) > settings.max_payload_bytes and rng.random() < 0.5:
            message = _cut(message, settings)
            cut_cases += 1
        by_generator[generator] += 1
        by_config[config] += 1
        try:
            result = pipelines[config].process(message)
            problems = _violations(result, message, payload, settings)
        except Exception as exc:  # noqa: BLE001 - the fuzz counts every crash
            outcomes["exception"] += 1
            problems = [f"raised {type(exc).__name__}: {exc}"[:200]]
        else:
            outcomes[f"{result.outcome.value}/{result.reason or '-'}"] += 1
        if rng.random() < 0.1:
            problems.extend(_last_will(pipelines[config], presence, message, wills))
        for problem in problems:
            crashes[problem] += 1
            examples.setdefault(problem, (topic[:80], payload[:120]))
    elapsed = time.perf_counter() - started
    _report(cases, seed, elapsed, outcomes, by_generator, by_config, cut_cases)
    print("last-will path: " + ", ".join(f"{k}={v}" for k, v in sorted(wills.items())))
    print(f"crashes (exceptions, internal errors, contract violations): {sum(crashes.values())}")
    for problem, count in crashes.most_common():
        print(f"  {count:7d}  {problem}  e.g. {examples[problem]!r}")
    return 1 if crashes else 0


def _report(
    cases: int,
    seed: int,
    elapsed: float,
    outcomes: Counter[str],
    by_generator: Counter[str],
    by_config: Counter[str],
    cut_cases: int,
) -> None:
    print(f"pipeline fuzz: {cases} cases, seed {seed}, {elapsed:.1f} s")
    print("generators: " + ", ".join(f"{k}={v}" for k, v in sorted(by_generator.items())))
    print("configs:    " + ", ".join(f"{k}={v}" for k, v in sorted(by_config.items())))
    print(f"payloads cut as by the MQTT source: {cut_cases}")
    print("outcome/reason:")
    for key, count in sorted(outcomes.items()):
        print(f"  {count:7d}  {key}")
    total = sum(outcomes.values())
    print(f"  {total:7d}  total ({'=' if total == cases else '!='} {cases} cases)")


if __name__ == "__main__":
    sys.exit(main())

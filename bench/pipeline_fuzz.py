"""Fuzz the pipeline: generated payloads and topics through Pipeline.process and its records.

Usage: ``.venv/bin/python bench/pipeline_fuzz.py [cases] [seed]`` (default 100,000 cases,
seed 9). Not a CI test: it takes a few minutes. Every case is a (topic, payload) pair from one
of the generators below, processed by one of several pipeline configurations:

* the single-reading JSON path (``default``, topic templates, field maps, strict policies,
  tags, small limits), fed with random bytes, text with Unicode edge cases, readings with
  wrong types, NaN/inf, huge numbers, deep and huge JSON, odd topics;
* schema version 2 without profiles (``v2``) and three configurations with payload profiles
  (``profiles``, ``profiles-drop``, ``profiles-strict``) routing topic filters to every format:
  ``json_fields`` (Zigbee2MQTT with ``exclude``, Tasmota with ``include``/``units`` and no
  ``ts_field``, Node-RED arrays with renamed shared fields), ``json_reading`` arrays,
  ``scalar`` (``value_type`` auto, number, boolean, string), ``influx_line`` (``device_tag``,
  every precision, both metric names) and ``sparkplug_b`` (``unknown_alias`` dlq and drop,
  default and custom device id templates), with varied limits and quality policies.

Profile generators aim at those topics: near-valid and hostile JSON objects and arrays
(nested to the depth limit and beyond, huge, Unicode and dotted keys, NaN/Infinity literals,
many fields), bare values (numbers and booleans in many spellings, quotes, empty, binary),
InfluxDB line protocol (every escape, many lines, bad escapes, missing parts, integer
overflow, unsigned, int64-edge timestamps, CRLF, trailing spaces, comments, non-UTF-8), and
Sparkplug B (births, alias-only DATA with and without a prior birth on a shared
``SparkplugState`` per configuration, deaths, commands, every datatype including unsupported
ones, NaN/inf, huge metric counts, odd properties and timestamps, truncated or mutated
protobufs, invalid UTF-8 in strings, random bytes, malformed ``spBv1.0`` topics). Oversized
payloads also go through the MQTT source's cut (as the source does right after receipt) in
half of the cases.

Every tenth case also goes through the last-will path (device id of a non-reading, then the
``device_offline`` record ingest spools), and every Sparkplug birth or death the pipeline
states goes through presence as ingest does; both are counted on their own lines.

Each result is checked against the pipeline's contract: never raises; VALID has N >= 1
normalized records (after the raw copy when ``forward_raw``: the payload, keyed and
timestamped as the first reading), each keyed by its reading's device id and timestamped
with its ``ts``, whose value is canonical JSON (sorted keys, compact) valid against
``docs/reference/reading.schema.json`` (a hand-written equivalent for every reading, the
JSON Schema itself with ``jsonschema`` for every non-ASCII one and one in 16 of the others),
within the configured limits; one reading keeps the message's id and the five headers,
several get ``message-id`` = BLAKE2b-128 of ``<parent>/<index>``, ``parent-message-id`` and
``reading-index`` in that order; ``device_id`` and ``other_device_ids`` name the readings'
devices. Profile checks: scalar value types, json_fields include/exclude/units, Sparkplug
device ids and tags from the topic. REJECTED has exactly one DLQ record holding the payload's
first ``dlq_max_payload_bytes`` bytes with the reason (and original-size and payload-sha256
when cut); DROPPED has none. Births and deaths: only Sparkplug topics state them; a decoded
birth states its device online, a death its device(s) offline, with event ids derived from
the message id; commands, STATE and deaths give no reading. Every record has the fixed header
order, bytes values and an int64 timestamp. The report counts every outcome by reason; the
counts sum to the input, and any exception, ``internal_error`` or contract violation is a
crash (exit status 1).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema  # type: ignore[import-untyped]

from agent.lifecycle.emitter import Lifecycle
from agent.lifecycle.presence import Presence
from agent.lifecycle.settings import LifecycleSettings
from agent.model import ReceivedMessage
from agent.pipeline import (
    JsonFieldsProfile,
    Outcome,
    Pipeline,
    PipelineSettings,
    Reason,
    ScalarProfile,
)
from agent.pipeline._device import parse_template
from agent.pipeline._result import DeviceChange, ProcessedDevices
from agent.pipeline.settings import SparkplugProfile
from agent.sparkplug import SparkplugState, parse_topic
from agent.sparkplug.sparkplug_b_pb2 import Payload

if TYPE_CHECKING:
    from collections.abc import Callable

    from agent.model import Record
    from agent.pipeline import Processed
    from agent.pipeline.settings import Profile

RECEIVED_AT_MS = 1_764_182_400_000
COMMON = ["message-id", "source-topic", "gateway-id", "received-at", "schema-version"]
MANY = [*COMMON, "parent-message-id", "reading-index"]
DLQ = [*COMMON, "dlq-reason", "dlq-detail"]
CUT = ["original-size", "payload-sha256"]
INT64 = (-(2**63), 2**63 - 1)
SCHEMA = jsonschema.Draft202012Validator(
    json.loads(
        (Path(__file__).parents[1] / "docs" / "reference" / "reading.schema.json").read_text()
    )
)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SCHEMA_SAMPLE = 16
"""One in this many ASCII readings is also validated with jsonschema (0.5 ms each)."""


def _profiles(**sparkplug: object) -> list[dict[str, object]]:
    """A profile for every format, on topic filters the generators below aim at."""
    return [
        {
            "name": "zigbee2mqtt",
            "format": "json_fields",
            "topic_filters": ["zigbee2mqtt/+"],
            "device_id": {"topic_template": "zigbee2mqtt/{device_id}"},
            "exclude": ["last_seen", "update", "color.hue"],
        },
        {
            "name": "tasmota",
            "format": "json_fields",
            "topic_filters": ["tele/+/SENSOR"],
            "device_id": {"topic_template": "tele/{device_id}/SENSOR"},
            "include": ["ENERGY", "DS18B20.Temperature", "Temp"],
            "exclude": ["ENERGY.TotalStartTime"],
            "units": {"ENERGY.Power": "W", "ENERGY.Voltage": "V", "Temp": "°C"},
            "ts_field": None,
        },
        {
            "name": "nodered-fields",
            "format": "json_fields",
            "arrays": True,
            "topic_filters": ["nodered/fields/#"],
            "ts_field": "time",
            "quality_field": "q",
            "tags_field": "meta.labels",
        },
        {
            "name": "nodered-readings",
            "format": "json_reading",
            "arrays": True,
            "topic_filters": ["nodered/readings/#"],
        },
        {
            "name": "bare",
            "format": "scalar",
            "topic_filters": ["plant/+/+/+"],
            "device_id": {"topic_template": "plant/{site}/{device_id}/{metric}"},
        },
        {
            "name": "level",
            "format": "scalar",
            "value_type": "number",
            "topic_filters": ["num/+"],
            "device_id": {"topic_template": "num/{device_id}"},
            "metric": "level",
            "unit": "m",
        },
        {
            "name": "switch",
            "format": "scalar",
            "value_type": "boolean",
            "topic_filters": ["bool/+/+"],
            "device_id": {"topic_template": "bool/{device_id}/{metric}"},
        },
        {
            "name": "state",
            "format": "scalar",
            "value_type": "string",
            "topic_filters": ["str/+"],
            "device_id": {"topic_template": "str/{device_id}"},
            "metric": "state",
        },
        {
            "name": "telegraf",
            "format": "influx_line",
            "topic_filters": ["telegraf/#"],
            "device_tag": "host",
            "device_id": {"topic_template": "telegraf/{device_id}"},
        },
        {
            "name": "influx-s",
            "format": "influx_line",
            "topic_filters": ["influx/s/+"],
            "precision": "s",
            "metric_name": "field",
            "device_id": {"topic_template": "influx/s/{device_id}"},
        },
        {
            "name": "influx-ms",
            "format": "influx_line",
            "topic_filters": ["influx/ms/+"],
            "precision": "ms",
            "device_tag": "device",
            "device_id": {"topic_template": "influx/ms/{device_id}"},
        },
        {
            "name": "influx-us",
            "format": "influx_line",
            "topic_filters": ["influx/us/+"],
            "precision": "us",
            "device_id": {"topic_template": "influx/us/{device_id}"},
        },
        {"name": "sparkplug", "format": "sparkplug_b", **sparkplug},
    ]


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
    "v2": PipelineSettings.model_validate({"schema_version": 2, "forward_raw": True}),
    "profiles": PipelineSettings.model_validate({"schema_version": 2, "profiles": _profiles()}),
    "profiles-drop": PipelineSettings.model_validate(
        {
            "schema_version": 2,
            "forward_raw": True,
            "min_quality": 100,
            "max_readings_per_message": 16,
            "max_string_value_bytes": 32,
            "max_tags": 3,
            "max_tag_bytes": 24,
            "device_id": {"topic_template": "p/{device_id}", "json_field": "meta.id"},
            "profiles": _profiles(
                unknown_alias="drop",
                device_id_template="{group_id}:{edge_node_id}/{device_id}",
                node_id_template="{group_id}:{edge_node_id}",
            ),
        }
    ),
    "profiles-strict": PipelineSettings.model_validate(
        {
            "schema_version": 2,
            "min_quality": 64,
            "low_quality_action": "dlq",
            "missing_ts": "reject",
            "unknown_fields": "reject",
            "max_payload_bytes": 4096,
            "dlq_max_payload_bytes": 100,
            "max_future_skew_secs": 0,
            "field_map": {"value": "v"},
            "profiles": _profiles(topic_filters=["spBv1.0/+/+/+", "spBv1.0/+/+/+/+"]),
        }
    ),
}
PROFILE_CONFIGS = ["profiles", "profiles-drop", "profiles-strict"]

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


FIELD_KEYS = [
    "temperature",
    "humidity",
    "battery",
    "linkquality",
    "state",
    "last_seen",
    "update",
    "ts",
    "time",
    "quality",
    "q",
    "tags",
    "meta",
    "device_id",
    "ENERGY",
    "Power",
    "Temp",
    "color",
    "hue",
    "a.b",
    "",
    ".",
    "é",
    "温度",
    "\u202e",
    "\x00",
    "\x9f",
    "\ud800",
    "\U0001f321",
    "k" * 300,
    "k" * 250,
]
FIELD_VALUES: list[object] = [
    *NUMBERS,
    "ON",
    "OFF",
    "",
    " ",
    "x" * 300,
    "é" * 129,
    "\x07",
    "\u2028",
    "\ud800",
    float("nan"),
    float("inf"),
    float("-inf"),
    [1, 2],
    [{"a": 1}],
]


def _field_value(rng: random.Random, depth: int) -> object:
    if depth < 40 and rng.random() < 0.12:
        return {
            rng.choice(FIELD_KEYS): _field_value(rng, depth + 1) for _ in range(rng.randrange(4))
        }
    return rng.choice(FIELD_VALUES)


def _nested(depth: int, leaf: object) -> object:
    node = leaf
    for i in range(depth):
        node = {f"l{i}": node}
    return node


GOOD_SHARED: dict[str, list[object]] = {
    "ts": [RECEIVED_AT_MS - 1000, "2025-11-26T18:40:00Z"],
    "time": [RECEIVED_AT_MS - 1000, (RECEIVED_AT_MS - 1000) / 1000],
    "quality": [192, 64, "good"],
    "q": [192, 0, "uncertain"],
    "tags": [{"line": "3"}],
}


def _fields_object(rng: random.Random) -> dict[str, object]:
    """A Zigbee2MQTT/Tasmota/Shelly-like object, near-valid or hostile."""
    kind = rng.randrange(6)
    doc: dict[str, object]
    if kind == 0:
        doc = {"temperature": 21.5, "humidity": 40, "battery": 97, "linkquality": 120}
        doc |= {"last_seen": "2024-05-01T10:00:00Z", "state": "ON", "child_lock": False}
        doc["color"] = {"hue": 10, "x": 0.3}
    elif kind == 1:
        energy = {"TotalStartTime": "2023-12-01T00:00:00", "Total": 1.234, "Power": 12}
        doc = {"Time": "2024-01-01T12:00:00", "ENERGY": energy | {"Voltage": 230}}
        doc["DS18B20"] = {"Temperature": 21.5, "Id": "0316"}
        doc["Temp"] = rng.choice([21.5, "21.5", None, {"x": 1}])
    elif kind == 2:
        doc = {rng.choice(FIELD_KEYS): _field_value(rng, 0) for _ in range(rng.randrange(12))}
    elif kind == 3:
        count = rng.choice([16, 17, 255, 256, 257, 1000])
        doc = {f"f{i}": rng.choice([1, 1.5, True, "s"]) for i in range(count)}
    elif kind == 4:
        doc = {"deep": _nested(rng.choice([30, 31, 32, 33, 100, 900]), rng.choice([1, "x"]))}
    else:
        doc = {"device_id": rng.choice(["oven-1", "", 5, "\x00", "d" * 300]), "temp": 180.5}
        doc["meta"] = rng.choice([{"id": "m1", "labels": {"line": "3"}, "x": 1}, {"id": 5}, None])
    for name, pool in (
        ("ts", TIMESTAMPS),
        ("time", TIMESTAMPS),
        ("quality", QUALITIES),
        ("q", QUALITIES),
        ("tags", [{"line": "3"}, {}, [], "x", {"k": 1}, {f"t{i}": "v" for i in range(40)}]),
    ):
        if rng.random() < 0.4:
            doc[name] = rng.choice(GOOD_SHARED[name] if rng.random() < 0.7 else pool)
    if rng.random() < 0.8:
        doc["device_id"] = rng.choice(["oven-1", "oven-2"])
        doc["meta"] = {"id": "m1", "labels": {"line": "3"}}
    if rng.random() < 0.2:  # one field changed to an odd value
        doc[rng.choice(FIELD_KEYS)] = rng.choice(FIELD_VALUES)
    return doc


def _array_reading(rng: random.Random) -> dict[str, object]:
    """An element of a Node-RED array: a good reading of one of a few devices, or any."""
    if rng.random() < 0.3:
        return _reading(rng)
    return {
        "device_id": rng.choice(["d1", "d2", "d3"]),
        "meta": {"id": rng.choice(["m1", "m2"])},
        "metric": rng.choice(["temp", "running", "mode"]),
        "v" if rng.random() < 0.5 else "value": rng.choice([21.5, 3, True, "AUTO"]),
        "quality": rng.choice([0, 64, 100, 192, "bad", "good"]),
    }


def _json_fields(rng: random.Random) -> tuple[str, bytes]:
    device = rng.choice(["kitchen", "plug-3", "tasmota_1A2B", "", "d\x00", "é", "d" * 300])
    topic = rng.choice(
        [
            f"zigbee2mqtt/{device}",
            f"tele/{device}/SENSOR",
            f"nodered/fields/{device}",
            f"nodered/readings/{device}",
            "zigbee2mqtt/bridge/state",
            "nodered/fields",
        ]
    )
    document: object = _fields_object(rng)
    if topic.startswith("nodered") and rng.random() < 0.7:
        items: list[object] = [_fields_object(rng) for _ in range(rng.choice([0, 1, 2, 5, 300]))]
        if "readings" in topic:
            count = rng.choice([0, 1, 2, 5, 300])
            items = [_array_reading(rng) for _ in range(count)]
        if items and rng.random() < 0.1:
            items[rng.randrange(len(items))] = rng.choice([1, "x", None, [], [{}]])
        document = items
    text = json.dumps(document, ensure_ascii=rng.random() < 0.5, allow_nan=True)
    if rng.random() < 0.1:
        text = text.replace(": ", f": {rng.choice(NUMBER_LITERALS)}, {chr(34)}_{chr(34)}: ", 1)
    encoding = rng.choice(["utf-8"] * 12 + ["utf-16", "utf-8-sig"])
    return topic, text.encode(encoding, "surrogatepass")


SCALARS = [
    b"21.5",
    b"-0",
    b"0",
    b"1",
    b"-1.5e3",
    b"1E+2",
    b"1e400",
    b"-1e400",
    b"1" * 400,
    b"01",
    b"1.",
    b".5",
    b"+1",
    b"0x10",
    b"NaN",
    b"nan",
    b"Infinity",
    b"-Infinity",
    b"inf",
    b"true",
    b"false",
    b"TRUE",
    b"False",
    b"on",
    b"OFF",
    b"On",
    b"yes",
    b"no",
    b"t",
    b"f",
    b"OPEN",
    b'"OPEN"',
    b'"21.5"',
    b'""',
    b'"',
    b"'x'",
    b"",
    b" ",
    b"\t\n",
    b" 21.5 \r\n",
    b"\x00",
    b"\xff\xfe",
    b"\xef\xbb\xbf1",
    b"\x001",
    b"a\x07b",
    b"x" * 256,
    b"x" * 257,
    "é".encode() * 129,
    "\u2028".encode(),
    b"null",
    b"{}",
    b"[1]",
    b"1 2",
]


def _scalar(rng: random.Random) -> tuple[str, bytes]:
    device = rng.choice(["valve-2", "d1", "", "d\x00", "d" * 300, "é"])
    metric = rng.choice(["position", "temp", "", "\x7f", "m" * 300])
    topic = rng.choice(
        [
            f"plant/berlin/{device}/{metric}",
            f"num/{device}",
            f"bool/{device}/{metric}",
            f"str/{device}",
            f"plant/berlin/{device}",
        ]
    )
    kind = rng.randrange(10)
    if kind < 7:
        payload = rng.choice(SCALARS)
    elif kind == 7:
        payload = rng.randbytes(rng.choice([1, 4, 64]))
    elif kind == 8:
        number = rng.choice([rng.uniform(-1e9, 1e9), rng.randrange(-(2**70), 2**70)])
        payload = repr(number).encode()
    else:
        payload = rng.choice(SCALARS).decode("utf-8", "replace").encode("utf-16")
    return topic, payload


LP_GOOD_MEASUREMENTS = ["cpu", "modbus", r"m\,x", r"m\ y", r"m\=z", "温度"]
LP_MEASUREMENTS = [*LP_GOOD_MEASUREMENTS, "m" * 300, "", "#m", "m\\"]
LP_GOOD_TAGS = [
    "host=plc-4",
    "host=plc\\ 4",
    "device=dev-1",
    "line=3",
    r"k\=1=v\,2",
    r"k\ x=v\ y",
    "k=v=w",
    "é=ü",
]
LP_TAGS = [*LP_GOOD_TAGS, "host=", "=v", "k", "host=" + "h" * 300, "k=\x00", "k=" + "v" * 30]
LP_GOOD_FIELDS = [
    "v=1.5",
    "v=-2e3",
    "v=.5",
    "v=1.",
    "v=5i",
    "v=-5i",
    "v=1i",
    "v=9223372036854775807i",
    "v=5u",
    "v=18446744073709551615u",
    "v=t",
    "v=T",
    "v=true",
    "v=True",
    "v=TRUE",
    "v=f",
    "v=FALSE",
    'v="AUTO"',
    'v="a \\" b, c=d \\\\ e"',
    'v=""',
    'v=1,w=2i,x=t,y="s p"',
    r"v\ x=1",
    r"v\=x=2",
    r"v\,x=3",
]
LP_FIELDS = [
    *LP_GOOD_FIELDS,
    "v=1e400",
    "v=9223372036854775808i",
    "v=-9223372036854775809i",
    "v=" + "9" * 400 + "i",
    "v=" + "9" * 5000 + "i",
    "v=-" + "9" * 5000 + "i",
    "v=" + "9" * 5000 + "u",
    "v=" + "9" * 5000,
    "v=18446744073709551616u",
    "v=-1u",
    "v=tRUE",
    'v="unterminated',
    'v="x' + "y" * 300 + '"',
    'v="\x01"',
    'v="tab\there"',
    "v=abc",
    "v=",
    "v",
    "=1",
    "v\\=4",
    "v=NaN",
    "v=inf",
    "v=0x10",
]
LP_GOOD_TIMESTAMPS = {
    "ns": ["", "1764182400000000000", "1764182399999999999"],
    "us": ["", "1764182400000000", "1764182399999999"],
    "ms": ["", "1764182400000", "1764182399999"],
    "s": ["", "1764182400", "1764182399"],
}
LP_TIMESTAMPS = [
    *LP_GOOD_TIMESTAMPS["ns"],
    "1764182400",
    "1764182400000",
    "1764182400000000",
    "-9223372036854775808",
    "9223372036854775807",
    "9223372036854775808",
    "-1",
    "0",
    "1e18",
    "1764182400000000000 extra",
    "+1764182400",
    "9" * 400,
    "9" * 5000,
    "-" + "9" * 5000,
]


def _line(rng: random.Random, precision: str) -> str:
    """A line: of good parts (odd escapes included) most often, of any parts otherwise."""
    good = rng.random() < 0.6
    measurement = rng.choice(LP_GOOD_MEASUREMENTS if good else LP_MEASUREMENTS)
    tag_pool = LP_GOOD_TAGS if good else LP_TAGS
    field_pool = LP_GOOD_FIELDS if good else LP_FIELDS
    tags = "".join("," + rng.choice(tag_pool) for _ in range(rng.choice([0, 0, 1, 2, 3, 40])))
    fields = ",".join(rng.choice(field_pool) for _ in range(rng.choice([1, 1, 2, 5, 300])))
    stamp = rng.choice(LP_GOOD_TIMESTAMPS[precision] if good else LP_TIMESTAMPS)
    line = f"{measurement}{tags} {fields}" + (f" {stamp}" if stamp else "")
    if rng.random() < 0.05:
        line = rng.choice([line.replace(" ", "  ", 1), line.replace(" ", "", 1), " " + line])
    return line


def _line_protocol(rng: random.Random) -> tuple[str, bytes]:
    device = rng.choice(["gw-1", "", "d\x00", "d" * 300, "é"])
    topic = rng.choice(
        [
            f"telegraf/{device}",
            "telegraf",
            f"telegraf/{device}/x",
            f"influx/s/{device}",
            f"influx/ms/{device}",
            f"influx/us/{device}",
        ]
    )
    precision = topic.split("/")[1] if topic.startswith("influx/") else "ns"
    count = rng.choice([1, 1, 1, 2, 3, 10, 300])
    lines = [
        rng.choice(["", "# comment", "  ", "#", "\t"])
        if rng.random() < 0.1
        else _line(rng, precision)
        for _ in range(count)
    ]
    separator = rng.choice(["\n"] * 6 + ["\r\n", "\r", "\n\n", " \n", "\x1c", "\u2028", "\x85"])
    text = separator.join(lines) + rng.choice(["", "", "\n", "\r\n", "  ", "\n#"])
    payload = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.03:
        at = rng.randrange(len(payload) + 1)
        payload = payload[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80"]) + payload[at:]
    return topic, payload


SP_GROUPS = ["plant-a", "g2"]
SP_NODES = ["gw-1", "gw-2", "n3"]
SP_DEVICES = ["press-1", "pump-2"]
SP_ODD = ["+", "#", "\x00", "\u202e", "x" * 300, "spBv1.0", "NBIRTH", "a b", "\ud800", "é", ":"]
SP_KINDS = ["NBIRTH", "DBIRTH", "NDATA", "DDATA", "NDEATH", "DDEATH", "NCMD", "DCMD", "STATE"]
SP_KIND_WEIGHTS = [12, 12, 14, 30, 4, 4, 2, 2, 2]
SP_NAMES = [
    "temperature",
    "Motor/Speed",
    "running",
    "mode",
    "counter",
    "started_at",
    "bdSeq",
    "Node Control/Rebirth",
    "",
    "\x00x",
    "é/ü",
    "m" * 256,
    "m" * 300,
    "\u2028",
]
SP_SUPPORTED = list(range(1, 16))
SP_UNSUPPORTED = [0, *range(16, 35), 35, 1000]
SP_INTS = [0, 1, 127, 128, 255, 2**15, 2**31 - 1, 2**31, 2**32 - 1]
SP_LONGS = [0, 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, RECEIVED_AT_MS, 253_402_300_800_000]
SP_FLOATS = [21.3, -0.0, 3.4e38, 1e-45, float("nan"), float("inf"), float("-inf")]
SP_DOUBLES = [12.25, 1e308, 5e-324, float("nan"), float("inf"), float("-inf"), 2.0**63]
SP_STRINGS = ["AUTO", "", "x" * 300, "\x00", "\u2028", "é" * 129, "5f0c3c1e-8c2a-4b59"]
SP_STAMPS = [0, 1, RECEIVED_AT_MS - 1000, RECEIVED_AT_MS, RECEIVED_AT_MS + 10**6, 2**64 - 1]
SP_STAMPS += [946_684_799_999, 946_684_800_000]


SP_POOLS: dict[str, list[Any]] = {
    "int_value": SP_INTS,
    "long_value": SP_LONGS,
    "float_value": SP_FLOATS,
    "double_value": SP_DOUBLES,
    "boolean_value": [True, False],
    "string_value": SP_STRINGS,
    "bytes_value": [b"\x00\x01", b""],
}
SP_FIELD_OF = {
    **dict.fromkeys((1, 2, 3, 5, 6, 7), "int_value"),
    **dict.fromkeys((4, 8, 13), "long_value"),
    9: "float_value",
    10: "double_value",
    11: "boolean_value",
    **dict.fromkeys((12, 14, 15), "string_value"),
}


def _sp_stamp(rng: random.Random) -> int:
    """A timestamp in range most often; 0, the edges of the range and beyond otherwise."""
    if rng.random() < 0.85:
        return RECEIVED_AT_MS - rng.randrange(100_000)
    return rng.choice(SP_STAMPS)


def _sp_value(rng: random.Random, metric: Payload.Metric, datatype: int) -> None:
    """Set a value: the datatype's field most often, any field (or none) otherwise."""
    if rng.random() < 0.8:
        field = SP_FIELD_OF.get(datatype, "bytes_value")
    else:
        field = rng.choice([*SP_POOLS, "dataset", "template", "none", "null"])
    if field in SP_POOLS:
        setattr(metric, field, rng.choice(SP_POOLS[field]))
    elif field == "dataset":
        metric.dataset_value.num_of_columns = 1
    elif field == "template":
        metric.template_value.version = "v1"
    elif field == "null":
        metric.is_null = True


def _sp_metric(rng: random.Random, payload: Payload, *, named: bool, aliased: bool) -> None:
    metric = payload.metrics.add()
    if named:
        metric.name = rng.choice(SP_NAMES[:6] * 12 + SP_NAMES)
    if aliased:
        metric.alias = rng.choice([*range(1, 13), 99, 2**64 - 1])
    datatype = rng.choice(SP_SUPPORTED * 4 + SP_UNSUPPORTED)
    if rng.random() < 0.9:  # a DATA metric may leave it to the birth
        metric.datatype = datatype
    _sp_value(rng, metric, datatype)
    if rng.random() < 0.3:
        metric.timestamp = _sp_stamp(rng)
    if rng.random() < 0.05:
        metric.is_historical = True
    if rng.random() < 0.15:
        _sp_properties(rng, metric.properties)


def _sp_properties(rng: random.Random, properties: Payload.PropertySet) -> None:
    """Quality and engUnit properties, right and wrong."""
    for _ in range(rng.randrange(1, 3)):
        properties.keys.append(rng.choice(["Quality", "engUnit", "other", "Quality", ""]))
        prop = properties.values.add()
        field = rng.choice(["int_value", "long_value", "string_value", "boolean_value"])
        pools: dict[str, list[Any]] = {
            "int_value": [0, 64, 192, 255, 256, 2**32 - 1],
            "long_value": [0, 64, 192, 255, 256, 2**64 - 1],
            "string_value": ["degC", "", "\x00", "u" * 300, "é"],
        }
        setattr(prop, field, rng.choice(pools.get(field, [True])))


def _sp_topic(rng: random.Random, kind: str) -> str:
    group, node, device = (
        rng.choice(SP_ODD) if rng.random() < 0.03 else rng.choice(pool)
        for pool in (SP_GROUPS, SP_NODES, SP_DEVICES)
    )
    if rng.random() < 0.06:
        return rng.choice(
            [
                f"spBv1.0/{group}/DDATA/{node}",
                f"spBv1.0/{group}/NDATA/{node}/{device}",
                f"spBv1.0/{group}/DDATA",
                "spBv1.0",
                "spBv1.0/",
                f"spBv1.0//DDATA/{node}/{device}",
                f"spBv1.0/{group}/ddata/{node}/{device}",
                f"spBv1.0/{group}/DDATA/{node}/{device}/x",
                f"spBv1.0/{group}/DDATA/{node}/",
                "spBv1.0/STATE",
                "spBv1.0/STATE/h/x",
                f"spBv1.0/{group}/STATE/{node}",
                f"spBv2.0/{group}/DDATA/{node}/{device}",
            ]
        )
    if kind == "STATE":
        return f"spBv1.0/STATE/{node}"
    if kind.startswith("N"):
        return f"spBv1.0/{group}/{kind}/{node}"
    return f"spBv1.0/{group}/{kind}/{node}/{device}"


def _sp_mutate(rng: random.Random, data: bytes) -> bytes:
    """Truncate, flip, insert, append, or break the UTF-8 of a string field."""
    kind = rng.randrange(5)
    at = rng.randrange(len(data) + 1)
    if kind == 0:
        return data[:at]
    if kind == 1 and data:
        flipped = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if kind == 2:
        return data[:at] + rng.randbytes(rng.randrange(1, 8)) + data[at:]
    if kind == 3:
        return data + rng.choice([b"\x08", b"\x12\xff\xff\xff\xff\x0f", b"\x2a\x02\xff\xfe"])
    for text in (b"temperature", b"AUTO", b"running", b"mode", b"counter", b"Motor"):
        if text in data:  # the same length, so the protobuf framing stays valid
            bad = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80"[: len(text)]])
            return data.replace(text, (bad * len(text))[: len(text)], 1)
    return data


def _sparkplug(rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choices(SP_KINDS, SP_KIND_WEIGHTS)[0]
    topic = _sp_topic(rng, kind)
    if rng.random() < 0.04:
        return topic, rng.randbytes(rng.choice([0, 1, 3, 16, 200]))
    payload = Payload()
    if rng.random() < 0.7:
        payload.seq = rng.choice([*range(8), 255, 256, 2**64 - 1])
    if rng.random() < 0.7:
        payload.timestamp = _sp_stamp(rng)
    count = rng.choice([0, 1, 1, 2, 3, 5, 8, 12]) if rng.random() > 0.03 else 300
    birth = kind.endswith("BIRTH")
    if kind in {"NBIRTH", "NDEATH"} and rng.random() < 0.8:
        bd = payload.metrics.add()
        bd.name, bd.datatype, bd.long_value = "bdSeq", 4, rng.choice([0, 1, 3])
    for _ in range(count):
        if birth:
            _sp_metric(rng, payload, named=rng.random() < 0.97, aliased=rng.random() < 0.8)
        else:
            shape = rng.random()
            _sp_metric(rng, payload, named=0.7 < shape < 0.95, aliased=shape < 0.7 or shape > 0.9)
    data = payload.SerializeToString()
    if rng.random() < 0.12:
        data = _sp_mutate(rng, data)
    return topic, data


def _any_topic(
    maker: Callable[[random.Random], bytes],
) -> Callable[[random.Random], tuple[str, bytes]]:
    def make(rng: random.Random) -> tuple[str, bytes]:
        return _topics(rng), maker(rng)

    return make


GENERATORS: list[tuple[str, int, Callable[[random.Random], tuple[str, bytes]], bool]] = [
    ("near_valid", 30, _any_topic(_near_valid), False),
    ("reading", 25, _any_topic(_json_reading), False),
    ("random_bytes", 12, _any_topic(_random_bytes), False),
    ("text", 12, _any_topic(_text), False),
    ("odd_json", 10, _any_topic(_odd_json), False),
    ("deep_json", 3, _any_topic(_deep), False),
    ("huge", 1, _any_topic(_huge), False),
    ("json_fields", 20, _json_fields, True),
    ("scalar", 15, _scalar, True),
    ("line_protocol", 20, _line_protocol, True),
    ("sparkplug", 40, _sparkplug, True),
]
"""(name, weight, maker, aims at profiles); the profile generators go to a profile
configuration nine times in ten."""


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


def _derived_id(parent: str, index: int, what: str = "") -> str:
    """docs/reference/headers.md: BLAKE2b-128 of ``<parent>/<index>`` (deaths: ``/change/``)."""
    text = f"{parent}/{what}{index}".encode("ascii")
    return hashlib.blake2b(text, digest_size=16).hexdigest()


class Checker:
    """The contract of one configuration; counts what it checked."""

    def __init__(self, settings: PipelineSettings, pipeline: Pipeline) -> None:
        """Remember the settings and the profiles by name."""
        self.settings = settings
        self.pipeline = pipeline
        self.profiles: dict[str, Profile] = {p.name: p for p in settings.profiles}
        self.stats: Counter[str] = Counter()

    def profile(self, topic: str) -> Profile | None:
        """The profile that reads ``topic``, None for the default reader."""
        return self.profiles.get(self.pipeline.profile(topic))

    def violations(self, result: Processed, message: ReceivedMessage, original: bytes) -> list[str]:
        """Every clause of the contract ``result`` breaks."""
        problems: list[str] = []
        if result.reason is Reason.INTERNAL_ERROR:
            problems.append(f"internal_error: {result.detail}")
        for record in result.records:
            problems.extend(_record_problems(record))
        profile = self.profile(message.topic) if self.settings.profiles else None
        problems.extend(self._changes(result, message, profile))
        if result.outcome is Outcome.VALID:
            problems.extend(self._valid(result, message, profile))
        elif result.outcome is Outcome.REJECTED:
            problems.extend(self._rejected(result, message, original))
        elif result.records or result.reason is None:
            problems.append("DROPPED with records or without a reason")
        return problems

    # ------------------------------------------------------------------ VALID
    def _valid(  # noqa: C901 - one check per clause of the contract
        self, result: Processed, message: ReceivedMessage, profile: Profile | None
    ) -> list[str]:
        settings = self.settings
        if result.reason is not None or result.device_id is None:
            return ["VALID with a reason or without a device id"]
        records = list(result.records)
        problems: list[str] = []
        if settings.forward_raw:
            if not records or records[0].topic != settings.topics.raw:
                return ["forward_raw without the raw record first"]
            raw = records.pop(0)
            if raw.value != message.payload or _names(raw) != COMMON or not records:
                problems.append("raw record: not the payload, odd headers or no reading")
            elif raw.key != records[0].key or raw.timestamp_ms != records[0].timestamp_ms:
                problems.append("raw record not keyed and timestamped as the first reading")
            elif dict(raw.headers)["message-id"] != message.message_id.encode():
                problems.append("raw record's message-id is not the message's id")
        if not records or len(records) > settings.max_readings_per_message:
            return [*problems, f"VALID with {len(records)} normalized records"]
        if any(r.topic != settings.topics.normalized for r in records):
            problems.append("a reading record not on the normalized topic")
        many = len(records) > 1
        self.stats["readings"] += len(records)
        self.stats["multi-reading messages"] += many
        readings: list[dict[str, Any]] = []
        for index, record in enumerate(records):
            headers = dict(record.headers)
            if many:
                if _names(record) != MANY:
                    problems.append(f"reading header names {_names(record)}")
                elif (
                    headers["message-id"] != _derived_id(message.message_id, index).encode()
                    or headers["parent-message-id"] != message.message_id.encode()
                    or headers["reading-index"] != b"%d" % index
                ):
                    problems.append("reading message-id/parent-message-id/reading-index")
            elif _names(record) != COMMON or headers["message-id"] != message.message_id.encode():
                problems.append("single reading without exactly the message's five headers")
            reading, problem = self._reading(record)
            if problem is not None:
                problems.append(problem)
                continue
            readings.append(reading)
        if problems:
            return problems
        devices = list(dict.fromkeys(r["device_id"] for r in readings))
        others = result.other_device_ids if isinstance(result, ProcessedDevices) else ()
        if result.device_id != devices[0] or len(set(others)) < len(others):
            problems.append("device_id is not the first reading's, or others repeat")
        elif settings.min_quality == 0 and tuple(devices[1:]) != others:
            problems.append("other_device_ids are not the readings' other devices in order")
        elif not set(devices[1:]) <= set(others) or result.device_id in others:
            # readings left out for low quality name their devices in others too
            problems.append("other_device_ids miss a reading's device")
        if len({h for r in records for n, h in r.headers if n == "message-id"}) != len(records):
            problems.append("two readings share a message-id")
        problems.extend(self._profile_valid(profile, message, readings))
        return problems

    def _reading(self, record: Record) -> tuple[dict[str, Any], str | None]:
        """The reading of a normalized record, and what is wrong with it."""
        try:
            reading = json.loads(record.value)
        except ValueError:
            return {}, "normalized value is not JSON"
        if not isinstance(reading, dict):
            return {}, "normalized value is not a JSON object"
        canonical = json.dumps(reading, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        if canonical.encode() != record.value:
            return reading, "normalized value is not canonical JSON"
        problem = _schema_problem(reading, self.settings)
        if problem is None and (not record.value.isascii() or self._sample()):
            self.stats["schema-validated readings"] += 1
            error = jsonschema.exceptions.best_match(SCHEMA.iter_errors(reading))
            if error is not None:
                problem = f"reading.schema.json: {error.message[:80]}"
        if problem is not None:
            return reading, problem
        if record.key != reading["device_id"].encode() or record.timestamp_ms != reading["ts"]:
            return reading, "record key/timestamp is not the reading's device_id/ts"
        return reading, _limits_problem(reading, self.settings)

    def _sample(self) -> bool:
        self.stats["_ascii"] += 1
        return self.stats["_ascii"] % SCHEMA_SAMPLE == 0

    def _profile_valid(
        self, profile: Profile | None, message: ReceivedMessage, readings: list[dict[str, Any]]
    ) -> list[str]:
        """What each profile promises about its readings."""
        if isinstance(profile, ScalarProfile):
            expected = {"auto": None, "number": "number", "boolean": "boolean", "string": "string"}
            kind = expected[profile.value_type]
            (reading,) = readings
            if kind is not None and reading["value_type"] != kind:
                return [f"scalar {profile.value_type} gave a {reading['value_type']}"]
            if reading.get("unit") != profile.unit:
                return ["scalar unit"]
            device_id = profile.device_id or self.settings.device_id
            template = parse_template(str(device_id.topic_template))
            match = template.pattern.fullmatch(message.topic)
            metric = match and (match.groupdict().get("metric") or profile.metric)
            if match is None or (reading["device_id"], reading["metric"]) != (
                match.group("device_id"),
                metric,
            ):
                return ["scalar device id or metric is not the topic's"]
        elif isinstance(profile, JsonFieldsProfile):
            return _fields_problems(profile, self.settings, readings)
        elif isinstance(profile, SparkplugProfile):
            return _sparkplug_valid(profile, message, readings)
        return []

    # ------------------------------------------------------------------ REJECTED
    def _rejected(self, result: Processed, message: ReceivedMessage, original: bytes) -> list[str]:
        if len(result.records) != 1 or result.reason is None:
            return ["REJECTED without exactly one record and a reason"]
        (record,) = result.records
        headers = dict(record.headers)
        keep = self.settings.dlq_max_payload_bytes
        problems = []
        if record.topic != self.settings.topics.dlq:
            problems.append("DLQ record not on the DLQ topic")
        if record.value != original[:keep]:
            problems.append("DLQ value is not the payload's prefix")
        if headers.get("dlq-reason") != result.reason.value.encode():
            problems.append("dlq-reason header")
        cut = len(original) > keep
        if _names(record) != (DLQ + CUT if cut else DLQ):
            problems.append(f"DLQ header names {_names(record)}")
        elif headers["message-id"] != message.message_id.encode():
            problems.append("DLQ message-id is not the message's id")
        if cut and (
            headers.get("original-size") != b"%d" % len(original)
            or headers.get("payload-sha256") != hashlib.sha256(original).hexdigest().encode()
        ):
            problems.append("cut DLQ payload without original-size / payload-sha256")
        key = None if result.device_id is None else result.device_id.encode()
        if record.key != key or record.timestamp_ms != message.received_at_ms:
            problems.append("DLQ key is not the device id or timestamp not the receive time")
        return problems

    # ------------------------------------------------------------------ births, deaths
    def _changes(  # noqa: C901 - one check per kind of Sparkplug message
        self, result: Processed, message: ReceivedMessage, profile: Profile | None
    ) -> list[str]:
        changes = result.changes if isinstance(result, ProcessedDevices) else ()
        if not isinstance(profile, SparkplugProfile):
            return ["births or deaths from a message that is not Sparkplug"] if changes else []
        topic = parse_topic(message.topic)
        if topic is None or topic.message_type in {"NCMD", "DCMD", "STATE"}:
            if changes:
                return ["births or deaths from a Sparkplug command, STATE or bad topic"]
            if topic is not None and result.reason is not Reason.NO_READINGS:
                return ["a Sparkplug command or STATE not dropped as no_readings"]
            return []
        kind = topic.message_type
        node, device = _sparkplug_ids(profile, message.topic)
        undecoded = result.reason in {
            Reason.PAYLOAD_TOO_LARGE,
            Reason.BAD_DEVICE_ID,
            Reason.INTERNAL_ERROR,
        }
        mid = message.message_id
        if undecoded:
            return ["births or deaths from an undecoded message"] if changes else []
        if result.reason is Reason.NOT_PROTOBUF and not changes:
            return []  # not parsed; a string not UTF-8 found later keeps the birth stated
        if kind in {"NDATA", "DDATA"}:
            return ["births or deaths from a DATA message"] if changes else []
        if kind.endswith("DEATH") and (result.records or result.reason is not Reason.NO_READINGS):
            return ["a death not dropped as no_readings"]
        if kind == "NDEATH":
            ids = [c.device_id for c in changes]
            expected = [
                DeviceChange(d, False, _derived_id(mid, i, "change/"), "sparkplug_ndeath")  # noqa: FBT003
                for i, d in enumerate(ids)
            ]
            if changes and (
                list(changes) != expected or ids[0] != node or len(set(ids)) < len(ids)
            ):
                return [f"NDEATH changes {changes[:2]}"]
            return []
        cause = {"NBIRTH": "sparkplug_nbirth", "DBIRTH": "sparkplug_dbirth"}
        online = kind in cause
        change = DeviceChange(
            device, online, _derived_id(mid, 0, "change/"), cause.get(kind, "sparkplug_ddeath")
        )
        if changes != (change,):
            return [f"{kind} changes {changes[:2]}, expected one for {device!r}"]
        return []


def _names(record: Record) -> list[str]:
    return [name for name, _ in record.headers]


def _name_problem(value: object, what: str, *, empty: bool = False) -> str | None:
    if not isinstance(value, str) or (not value and not empty) or CONTROL.search(value):
        return f"reading {what} is not a name"
    if not empty and len(value.encode("utf-8", "surrogatepass")) > 256:
        return f"reading {what} is longer than 256 bytes"
    return None


def _schema_problem(reading: dict[str, Any], settings: PipelineSettings) -> str | None:  # noqa: C901
    """docs/reference/reading.schema.json, written out for speed (jsonschema takes 0.5 ms)."""
    required = {"device_id", "metric", "quality", "ts", "value"}
    allowed = required | {"unit", "tags"}
    if settings.schema_version == 2:
        required |= {"schema_version", "value_type"}
        allowed |= required
        if reading.get("schema_version") != 2:
            return "schema_version is not 2"
    if not required <= reading.keys() <= allowed:
        return f"reading keys {sorted(reading)}"
    for what in ("device_id", "metric", "unit"):
        if what in reading and (problem := _name_problem(reading[what], what)):
            return problem
    quality, ts, value = reading["quality"], reading["ts"], reading["value"]
    if type(quality) is not int or not 0 <= quality <= 255:
        return "reading quality"
    if type(ts) is not int or not INT64[0] <= ts <= INT64[1]:
        return "reading ts is not an int64"
    tags = reading.get("tags", {})
    if not isinstance(tags, dict) or any(
        _name_problem(k, "tag name") or _name_problem(v, "tag value", empty=True)
        for k, v in tags.items()
    ):
        return "reading tags"
    kind = reading.get("value_type", "number")
    types: dict[str, type] = {"number": float, "boolean": bool, "string": str}
    if kind not in types or type(value) is not types[kind]:
        return f"reading value {type(value).__name__} with value_type {kind}"
    if isinstance(value, float) and not math.isfinite(value):
        return "reading value not finite"
    if isinstance(value, str) and CONTROL.search(value):
        return "reading string value has control characters"
    return None


def _limits_problem(reading: dict[str, Any], settings: PipelineSettings) -> str | None:
    """The configured limits every reading keeps."""
    if reading["quality"] < settings.min_quality:
        return "a reading below min_quality"
    value = reading["value"]
    if isinstance(value, str) and len(value.encode()) > settings.max_string_value_bytes:
        return "a string value over max_string_value_bytes"
    tags = reading.get("tags", {})
    limit = settings.max_tag_bytes
    if len(tags) > settings.max_tags or any(
        len(k.encode()) > limit or len(v.encode()) > limit for k, v in tags.items()
    ):
        return "tags over max_tags or max_tag_bytes"
    return None


def _fields_problems(
    profile: JsonFieldsProfile, settings: PipelineSettings, readings: list[dict[str, Any]]
) -> list[str]:
    """json_fields: no shared, device id or excluded field is a reading; include and units hold."""
    skip = {f for f in (profile.ts_field, profile.quality_field, profile.tags_field) if f}
    skip |= set(profile.exclude)
    device = (profile.device_id or settings.device_id).json_field
    if device:
        skip.add(device)
    for reading in readings:
        metric = reading["metric"]
        parts = metric.split(".")
        prefixes = {".".join(parts[:n]) for n in range(1, len(parts) + 1)}
        if prefixes & skip:
            return [f"json_fields made a reading of the skipped field {metric[:40]!r}"]
        if profile.include is not None and not prefixes & set(profile.include):
            return [f"json_fields made a reading of {metric[:40]!r}, which include leaves out"]
        if reading.get("unit") != profile.units.get(metric):
            return [f"json_fields unit of {metric[:40]!r}"]
    return []


def _sparkplug_ids(profile: SparkplugProfile, topic: str) -> tuple[str, str]:
    """The node's and the message's device ids the profile's templates give for ``topic``."""
    parsed = parse_topic(topic)
    assert parsed is not None  # noqa: S101 - only called for Sparkplug topics
    fields = {"group_id": parsed.group_id, "edge_node_id": parsed.edge_node_id}
    node = profile.node_id_template.format(**fields, device_id="")
    if parsed.device_id is None:
        return node, node
    return node, profile.device_id_template.format(**fields, device_id=parsed.device_id)


def _sparkplug_valid(
    profile: SparkplugProfile, message: ReceivedMessage, readings: list[dict[str, Any]]
) -> list[str]:
    topic = parse_topic(message.topic)
    if topic is None or topic.message_type not in {"NBIRTH", "DBIRTH", "NDATA", "DDATA"}:
        return ["readings from a Sparkplug message that is not a birth or DATA"]
    _, device = _sparkplug_ids(profile, message.topic)
    for reading in readings:
        tags = reading.get("tags", {})
        if reading["device_id"] != device:
            return [f"Sparkplug reading of {reading['device_id']!r}, expected {device!r}"]
        if tags.get("group_id") != topic.group_id or tags.get("edge_node_id") != topic.edge_node_id:
            return ["Sparkplug reading tags are not the topic's group and edge node"]
        if reading["metric"] == "bdSeq" and topic.device_id is None:
            return ["bdSeq of a node message became a reading"]
    return []


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


def _stated(result: Processed, presence: Presence, lifecycle: Counter[str]) -> list[str]:
    """Hand births and deaths to presence as ingest does; check each death's record."""
    if not isinstance(result, ProcessedDevices):
        return []
    problems = []
    for change in result.changes:
        lifecycle["online" if change.online else "offline"] += 1
        try:
            record = presence.stated(change, RECEIVED_AT_MS)
        except Exception as exc:  # noqa: BLE001 - the fuzz counts every crash
            problems.append(f"presence.stated raised {type(exc).__name__}: {exc}"[:200])
            continue
        if record is None:
            lifecycle["no record"] += 1
            continue
        lifecycle["device_offline records"] += 1
        event = json.loads(record.value)
        if (
            change.online
            or record.key != change.device_id.encode()
            or event["kind"] != "device_offline"
            or event["event_id"] != change.event_id
            or event["reason"] != change.cause
            or event.get("source") != "sparkplug"
        ):
            problems.append(f"lifecycle record of {change.cause}: {event}"[:200])
    return problems


def _record_problems(record: Record) -> list[str]:
    problems = []
    names = _names(record)
    if names[:5] != COMMON:
        problems.append(f"header order {names}")
    if not all(isinstance(v, bytes) for _, v in record.headers):
        problems.append("a header value is not bytes")
    if type(record.value) is not bytes or not (INT64[0] <= record.timestamp_ms <= INT64[1]):
        problems.append("value not bytes or timestamp outside int64")
    try:
        record.topic.encode("utf-8")
        for name, _ in record.headers:
            name.encode("ascii")
        if record.key is not None:
            record.key.decode("utf-8")
    except UnicodeError:
        problems.append("topic, key or header name not encodable")
    return problems


def main() -> int:
    """Run the fuzz cases and print the report; exit status 1 on any crash."""
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 9
    rng = random.Random(seed)  # noqa: S311 - reproducible cases, not cryptography
    states = {name: SparkplugState() for name in CONFIGS}
    pipelines = {
        name: Pipeline(s, "gw-fuzz", sparkplug=states[name]) for name, s in CONFIGS.items()
    }
    checkers = {name: Checker(CONFIGS[name], p) for name, p in pipelines.items()}
    names = [g[0] for g in GENERATORS]
    weights = [g[1] for g in GENERATORS]
    makers = {g[0]: g for g in GENERATORS}
    outcomes: Counter[str] = Counter()
    by_generator: Counter[str] = Counter()
    by_config: Counter[str] = Counter()
    by_profile: Counter[str] = Counter()
    valid: Counter[str] = Counter()
    crashes: Counter[str] = Counter()
    examples: dict[str, tuple[str, str, bytes]] = {}
    cut_cases = 0
    wills: Counter[str] = Counter()
    lifecycle: Counter[str] = Counter()
    lifecycle_settings = LifecycleSettings(max_tracked_devices=1000)
    presence = Presence(lifecycle_settings, Lifecycle(lifecycle_settings, "gw-fuzz"))
    logging.disable(logging.CRITICAL)  # device_offline lines, Sparkplug sequence gaps
    started = time.perf_counter()
    for _ in range(cases):
        generator = rng.choices(names, weights)[0]
        _, _, make, profiled = makers[generator]
        if profiled and rng.random() < 0.9:
            config = rng.choice(PROFILE_CONFIGS)
        else:
            config = rng.choice(list(CONFIGS))
        settings = CONFIGS[config]
        topic, payload = make(rng)
        message = ReceivedMessage(topic, payload, 1, retain=False, received_at_ms=RECEIVED_AT_MS)
        if len(payload) > settings.max_payload_bytes and rng.random() < 0.5:
            message = _cut(message, settings)
            cut_cases += 1
        by_generator[generator] += 1
        by_config[config] += 1
        try:
            if settings.profiles:
                by_profile[pipelines[config].profile(topic)] += 1
            result = pipelines[config].process(message)
            problems = checkers[config].violations(result, message, payload)
            problems.extend(_stated(result, presence, lifecycle))
        except Exception as exc:  # noqa: BLE001 - the fuzz counts every crash
            outcomes["exception"] += 1
            problems = [f"raised {type(exc).__name__}: {exc}"[:200]]
        else:
            outcomes[f"{result.outcome.value}/{result.reason or '-'}"] += 1
            valid[generator] += result.outcome is Outcome.VALID
        if rng.random() < 0.1:
            problems.extend(_last_will(pipelines[config], presence, message, wills))
        for problem in problems:
            crashes[problem] += 1
            examples.setdefault(problem, (config, topic[:80], payload[:120]))
    elapsed = time.perf_counter() - started
    _report(cases, seed, elapsed, outcomes, by_generator, by_config, cut_cases)
    print("valid by generator: " + _counts(valid))
    print("profiles:   " + ", ".join(f"{k}={v}" for k, v in sorted(by_profile.items())))
    checked: Counter[str] = sum((c.stats for c in checkers.values()), Counter())
    del checked["_ascii"]
    print("checked:    " + ", ".join(f"{k}={v}" for k, v in sorted(checked.items())))
    events: Counter[str] = sum((s.counts for s in states.values()), Counter())
    print("sparkplug state events: " + ", ".join(f"{k}={v}" for k, v in sorted(events.items())))
    print("births/deaths through presence: " + _counts(lifecycle))
    print("last-will path: " + _counts(wills))
    print(f"crashes (exceptions, internal errors, contract violations): {sum(crashes.values())}")
    for problem, count in crashes.most_common():
        print(f"  {count:7d}  {problem}  e.g. {examples[problem]!r}")
    return 1 if crashes else 0


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counter.items()))


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
    print("generators: " + _counts(by_generator))
    print("configs:    " + _counts(by_config))
    print(f"payloads cut as by the MQTT source: {cut_cases}")
    print("outcome/reason:")
    for key, count in sorted(outcomes.items()):
        print(f"  {count:7d}  {key}")
    total = sum(outcomes.values())
    print(f"  {total:7d}  total ({'=' if total == cases else '!='} {cases} cases)")


if __name__ == "__main__":
    sys.exit(main())

"""Building Sparkplug B payloads: for the simulator, the tests and the benchmarks.

Imports ``protobuf`` (the generated module); the agent itself only decodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.sparkplug.sparkplug_b_pb2 import DataType, Payload

_INT32 = frozenset({DataType.Int8, DataType.Int16, DataType.Int32})
_UINT32 = frozenset({DataType.UInt8, DataType.UInt16, DataType.UInt32})
_LONG = frozenset({DataType.Int64, DataType.UInt64, DataType.DateTime})
_STRING = frozenset({DataType.String, DataType.Text, DataType.UUID})


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric to encode.

    Attributes:
        name: The metric name (None: only the alias goes on the wire, as in DATA messages).
        value: The value (None with ``is_null``).
        datatype: A :class:`DataType` value.
        alias: The alias, when it has one.
        timestamp: The metric's timestamp in epoch ms, when it has one.
        is_null: Send the metric as null.
        is_historical: Flag it as historical.
        properties: Property name -> value (int, float, bool or str).
    """

    name: str | None
    value: object
    datatype: int
    alias: int | None = None
    timestamp: int | None = None
    is_null: bool = False
    is_historical: bool = False
    properties: tuple[tuple[str, object], ...] = ()


def encode(metrics: list[MetricSpec], *, seq: int | None, timestamp: int | None) -> bytes:
    """A serialized Sparkplug B payload holding ``metrics``."""
    payload = Payload()
    if timestamp is not None:
        payload.timestamp = timestamp
    if seq is not None:
        payload.seq = seq
    for spec in metrics:
        metric = payload.metrics.add()
        if spec.name is not None:
            metric.name = spec.name
        if spec.alias is not None:
            metric.alias = spec.alias
        if spec.timestamp is not None:
            metric.timestamp = spec.timestamp
        metric.datatype = spec.datatype
        if spec.is_historical:
            metric.is_historical = True
        if spec.is_null or spec.value is None:
            metric.is_null = True
        else:
            _set_value(metric, spec.datatype, spec.value)
        for key, value in spec.properties:
            metric.properties.keys.append(key)
            prop = metric.properties.values.add()
            _set_property(prop, value)
    return payload.SerializeToString()


def _set_value(metric: Payload.Metric, datatype: int, value: object) -> None:
    if datatype in _INT32 and isinstance(value, int):
        metric.int_value = value % 2**32  # two's complement, as the specification says
    elif datatype in _UINT32 and isinstance(value, int):
        metric.int_value = value
    elif datatype in _LONG and isinstance(value, int):
        metric.long_value = value % 2**64
    elif datatype == DataType.Float and isinstance(value, (int, float)):
        metric.float_value = float(value)
    elif datatype == DataType.Double and isinstance(value, (int, float)):
        metric.double_value = float(value)
    elif datatype == DataType.Boolean and isinstance(value, bool):
        metric.boolean_value = value
    elif datatype in _STRING and isinstance(value, str):
        metric.string_value = value
    elif isinstance(value, bytes):
        metric.bytes_value = value
    else:
        raise TypeError(f"cannot encode {value!r} as datatype {datatype}")


def _set_property(prop: Payload.PropertyValue, value: object) -> None:
    if isinstance(value, bool):
        prop.type = DataType.Boolean
        prop.boolean_value = value
    elif isinstance(value, int):
        prop.type = DataType.Int32
        prop.int_value = value % 2**32
    elif isinstance(value, float):
        prop.type = DataType.Double
        prop.double_value = value
    elif isinstance(value, str):
        prop.type = DataType.String
        prop.string_value = value
    else:
        raise TypeError(f"cannot encode property value {value!r}")

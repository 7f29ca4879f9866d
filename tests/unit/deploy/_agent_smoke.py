"""Run the agent for a few seconds on uvloop, then drain, and report what the sandbox allowed.

Usage: ``python _agent_smoke.py CONFIG SECONDS``. Prints one JSON object: the agent's exit code
and, for a few operations the unit's sandbox must refuse, whether they were allowed or the errno
name. Used by tests/unit/deploy/test_systemd_unit.py inside and outside ``_sandbox.py``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import mmap
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import uvloop

from agent.app import Agent
from agent.config import load_settings

ZSTD_CODEC = 4
"""aiokafka's codec number for zstd."""


def outcome(operation: Callable[[], object]) -> str:
    """'allowed', or the errno name the operation failed with."""
    try:
        operation()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "allowed"


def use_native_extensions() -> str:
    """Load and use the compiled dependencies the agent may import later (zstd on first send)."""
    import cramjam  # noqa: PLC0415
    import pydantic_core  # noqa: PLC0415
    import yaml  # noqa: PLC0415
    from aiokafka.record.default_records import (  # noqa: PLC0415
        DefaultRecordBatch,
        DefaultRecordBatchBuilder,
    )

    payload = b"edge-agent " * 100
    assert bytes(cramjam.zstd.decompress(cramjam.zstd.compress(payload))) == payload
    assert pydantic_core.from_json(b'{"a": 1}') == {"a": 1}
    assert yaml.load("a: 1", Loader=yaml.CSafeLoader) == {"a": 1}
    # A zstd-compressed, CRC-checked Kafka record batch, as the producer builds it.
    builder = DefaultRecordBatchBuilder(2, ZSTD_CODEC, 0, 1, 0, 0, 1 << 16)
    builder.append(0, timestamp=1, key=b"device-1", value=payload, headers=[])
    batch = DefaultRecordBatch(bytes(builder.build()))
    assert batch.validate_crc()
    assert [record.value for record in batch] == [payload]
    return "ok"


def netlink_socket() -> None:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close()


def main() -> None:
    config, seconds = Path(sys.argv[1]), float(sys.argv[2])
    report = {
        # MemoryDenyWriteExecute
        "write_execute_mapping": outcome(
            lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        ),
        # ~@resources
        "sched_setaffinity": outcome(lambda: os.sched_setaffinity(0, os.sched_getaffinity(0))),
        # RestrictAddressFamilies
        "netlink_socket": outcome(netlink_socket),
    }
    report["native_extensions"] = use_native_extensions()
    settings = load_settings(config)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        report["agent_exit"] = runner.run(Agent(settings).run(asyncio.sleep(seconds)))
    print(json.dumps(report))


if __name__ == "__main__":
    main()

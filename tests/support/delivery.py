"""Counting every message: what the delivery tests assert on."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from tests.support.kafka import Consumed


@dataclass
class DeliveryReport:
    """What arrived in the normalized topic, per device, against what was published."""

    expected: dict[str, int]
    missing: dict[str, list[int]] = field(default_factory=dict)
    duplicates: int = 0
    duplicates_with_new_id: int = 0
    out_of_order_devices: list[str] = field(default_factory=list)
    unexpected: int = 0

    @property
    def lost(self) -> int:
        return sum(len(v) for v in self.missing.values())

    def summary(self) -> str:
        return (
            f"lost={self.lost} duplicates={self.duplicates} "
            f"(with a new message id: {self.duplicates_with_new_id}) "
            f"out_of_order_devices={len(self.out_of_order_devices)} unexpected={self.unexpected}"
        )


def check_delivery(records: list[Consumed], expected: dict[str, int]) -> DeliveryReport:
    """Check that every (device, seq) published arrived, how often, and in order.

    Order: within its partition, the first occurrences of a device's sequence numbers must be
    increasing. A duplicate is any second record with the same (device, seq); it must carry
    the same ``message-id`` header as the first.
    """
    report = DeliveryReport(expected=expected)
    seen: dict[tuple[str, int], bytes] = {}
    firsts: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for rec in sorted(records, key=lambda r: (r.partition, r.offset)):
        reading = json.loads(rec.value)
        device = reading["device_id"]
        seq = int(reading["tags"]["seq"])
        if device not in expected or rec.key != device.encode():
            report.unexpected += 1
            continue
        partitions[device].add(rec.partition)
        mid = rec.headers.get("message-id", b"")
        key = (device, seq)
        if key in seen:
            report.duplicates += 1
            if seen[key] != mid:
                report.duplicates_with_new_id += 1
            continue
        seen[key] = mid
        firsts[device].append(seq)
    for device, count in expected.items():
        got = set(firsts.get(device, []))
        missing = [s for s in range(count) if s not in got]
        if missing:
            report.missing[device] = missing
        seqs = firsts.get(device, [])
        if seqs != sorted(seqs) or len(partitions.get(device, ())) > 1:
            report.out_of_order_devices.append(device)
    return report

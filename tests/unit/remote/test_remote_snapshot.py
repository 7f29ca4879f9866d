"""Snapshots, their hash, publish-on-change, and the inotify event decoding."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.remote import ConfigSnapshot, content_hash
from agent.remote._inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    InotifyEvent,
    is_relevant,
    parse_events,
)
from agent.remote._snapshot import ChangeFilter

_mappings = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)


@given(_mappings, _mappings)
def test_content_hash_equal_exactly_for_equal_mappings(
    first: dict[str, str], second: dict[str, str]
) -> None:
    """Two mappings hash the same if and only if they are equal, whatever the key order."""
    assert (content_hash(first) == content_hash(second)) == (first == second)
    assert content_hash(dict(reversed(list(first.items())))) == content_hash(first)


def test_content_hash_keeps_key_value_boundaries() -> None:
    """Moving characters between a key and its value, or between entries, changes the hash."""
    assert content_hash({"ab": "c"}) != content_hash({"a": "bc"})
    assert content_hash({"a": "b", "c": "d"}) != content_hash({"a": "bc", "": "d"})


def test_snapshot_data_is_a_read_only_copy() -> None:
    """A snapshot does not change when the source mapping does, and cannot be changed itself."""
    source = {"agent.yaml": "a: 1\n"}
    snapshot = ConfigSnapshot.of(source, "directory:/etc/edge-agent", 1)
    source["agent.yaml"] = "a: 2\n"
    assert snapshot.data == {"agent.yaml": "a: 1\n"}
    assert snapshot.content_hash == content_hash({"agent.yaml": "a: 1\n"})
    with pytest.raises(TypeError):
        snapshot.data["agent.yaml"] = "x"  # type: ignore[index]


async def test_change_filter_publishes_first_and_changes_only() -> None:
    """The first snapshot and each change are published; a repeat is not; a failure is retried."""
    published: list[str] = []
    fail = [False]

    async def publish(snapshot: ConfigSnapshot) -> None:
        if fail[0]:
            raise RuntimeError("handler failed")
        published.append(snapshot.data["k"])

    changes = ChangeFilter(publish)
    one = ConfigSnapshot.of({"k": "1"}, "s", 1)
    two = ConfigSnapshot.of({"k": "2"}, "s", 2)
    assert await changes.offer(one)
    assert not await changes.offer(ConfigSnapshot.of({"k": "1"}, "s", 3))
    fail[0] = True
    with pytest.raises(RuntimeError):
        await changes.offer(two)
    fail[0] = False
    assert await changes.offer(two)  # not marked as published by the failed attempt
    assert published == ["1", "2"]


def _packed(wd: int, mask: int, name: str) -> bytes:
    raw = os.fsencode(name)
    padded = raw + b"\0" * (16 - len(raw) % 16) if raw else b""
    return struct.pack("iIII", wd, mask, 0, len(padded)) + padded


def test_parse_events_decodes_a_kernel_buffer() -> None:
    """Several packed events with NUL-padded names decode in order."""
    buffer = (
        _packed(1, IN_CREATE, "..2026_11_26_10_00_01.123456790")
        + _packed(1, IN_MOVED_TO, "..data")
        + _packed(1, IN_DELETE_SELF, "")
    )
    assert list(parse_events(buffer)) == [
        InotifyEvent(1, IN_CREATE, "..2026_11_26_10_00_01.123456790"),
        InotifyEvent(1, IN_MOVED_TO, "..data"),
        InotifyEvent(1, IN_DELETE_SELF, ""),
    ]


@pytest.mark.parametrize(
    ("mask", "name", "relevant"),
    [
        (IN_MOVED_TO, "..data", True),  # kubelet's atomic swap
        (IN_CREATE, "..data", True),  # the very first version
        (IN_MOVED_FROM, "..data_tmp", False),
        (IN_CREATE, "..data_tmp", False),
        (IN_CREATE, "..2026_11_26_10_00_00.123456789", False),
        (IN_DELETE, "..2026_11_26_10_00_00.123456789", False),
        (IN_CLOSE_WRITE, "agent.yaml", True),  # a plain directory edited in place
        (IN_MOVED_TO, "agent.yaml", True),
        (IN_CLOSE_WRITE, ".agent.yaml.swp", False),
        (IN_DELETE_SELF, "", True),
        (IN_Q_OVERFLOW, "", True),
    ],
)
def test_inotify_relevance_follows_kubelet_and_plain_writes(
    mask: int, name: str, relevant: bool
) -> None:
    """Only the ..data swap, plain top-level files and the loss of the watch wake the watcher."""
    assert is_relevant(InotifyEvent(1, mask, name)) is relevant

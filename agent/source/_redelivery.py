"""Gives a broker's redelivery of a spooled QoS 1 message the message id of its first copy.

Every new reception gets a fresh id (:func:`agent.model.new_message_id`). A message the agent
spooled but whose PUBACK never reached the broker (the agent crashed between the spool commit
and the PUBACK, or the connection dropped with acks pending) comes back on the next connection
with the same packet id and the DUP flag set (MQTT 3.1.1 §4.4, MQTT 5 §4.4). That copy must
carry the first copy's id, so downstream can drop it as a duplicate; a new reading with the
same bytes must not.

Rules (``docs/reference/headers.md`` states them for users):

1. The window maps packet id → (CRC-32 of topic and payload, payload length, message id,
   connection) of the QoS 1 messages spooled most recently; one entry per packet id, at most
   ``max_entries``. The broker's unacknowledged messages are always the last ones it sent, at
   most its inflight window (MQTT 5: the agent's Receive Maximum), so older entries cannot be
   redelivered; 65,536 covers every packet id when the window is unknown (MQTT 3.1.1).
2. A message with DUP=1 on connection ``c`` whose packet id has an entry from an earlier
   connection with the same CRC and length reuses that entry's id. Only an earlier connection:
   the broker resends only when a session resumes.
3. A message with DUP=0 and packet id ``m`` proves that the broker got the PUBACK of the
   earlier message ``m`` (it reuses a packet id only after its acknowledgement): its entry is
   replaced, so a later identical reading under the same packet id is never taken for a
   redelivery.
4. The broker resends the unacknowledged messages first, in order, before any new one. So the
   first DUP=0 QoS 1 message on connection ``c`` ends the redelivery phase: entries of earlier
   connections are dropped then (no DUP copy of them can come any more).
5. :meth:`RedeliveryWindow.journal` serialises what a crash right after the commit must not
   forget: the entries of every group whose PUBACKs the broker has not provably processed
   (:meth:`RedeliveryWindow.confirm`, fed by the source's ack barrier; a PUBACK written to
   the socket can still be unread by a busy broker when the agent dies) and, during a
   redelivery phase, the entries of earlier connections; newest first up to
   ``max_journal_entries``. Ingest stores it with every spool commit and loads it at start;
   loaded entries count as an earlier connection (-1).
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from agent.model import ReceivedMessage

_log = logging.getLogger(__name__)

_QOS_AT_LEAST_ONCE: Final = 1
_MAGIC: Final = b"EAR1"
_HEADER: Final = struct.Struct(">4sI")
_ENTRY: Final = struct.Struct(">HII16s")
MAX_ENTRIES: Final = 65_536
MAX_JOURNAL_ENTRIES: Final = 16_384
"""26 bytes each: a journal is at most ~416 KiB."""


@dataclass(slots=True)
class _Entry:
    crc: int
    size: int
    message_id: str
    connection: int
    group: int
    packed: bytes
    """The entry as a journal stores it (packed once, written with every commit it is in)."""


def _entry(mid: int, key: tuple[int, int], message_id: str, where: tuple[int, int]) -> _Entry:
    """An entry; ``key`` is (crc, size), ``where`` is (connection, group)."""
    crc, size = key
    packed = _ENTRY.pack(mid, crc, size, bytes.fromhex(message_id))
    return _Entry(crc, size, message_id, where[0], where[1], packed)


def fingerprint(message: ReceivedMessage) -> tuple[int, int]:
    """CRC-32 of the topic (UTF-8), a NUL and the payload as kept, and the original length."""
    crc = zlib.crc32(message.topic.encode("utf-8", "surrogatepass") + b"\x00")
    return zlib.crc32(message.payload, crc), message.size_bytes


class RedeliveryWindow:
    """Assigns message ids to QoS 1 messages; see the module docstring for the rules."""

    def __init__(
        self, *, max_entries: int = MAX_ENTRIES, max_journal_entries: int = MAX_JOURNAL_ENTRIES
    ) -> None:
        """Create an empty window (call :meth:`load` with the last journal at start)."""
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._max_entries = max_entries
        self._max_journal = max_journal_entries
        self._connection = 0
        self._redelivering = False
        self._group = 0
        # Committed groups whose PUBACKs are not confirmed yet, oldest first: (group, ack)
        # with ack = (connection, PUBACKs sent on it up to this group), or None when some of
        # its messages could not be acked (their connection was gone).
        self._unconfirmed: deque[tuple[int, tuple[int, int] | None]] = deque()
        self.reused = 0
        """Redeliveries that got their first copy's id back."""
        self._reported = 0

    def __len__(self) -> int:
        """Entries in the window."""
        return len(self._entries)

    def load(self, journal: bytes) -> int:
        """Take the entries of a journal written by :meth:`journal`; returns how many.

        An unreadable journal is ignored with a warning: redeliveries then get fresh ids
        (duplicates downstream cannot be recognised by id, nothing is lost).
        """
        if not journal:
            return 0
        entries = _decode(journal)
        if entries is None:
            _log.warning(
                "Ignored an unreadable message-id journal; messages the broker redelivers "
                "after this start get new message ids.",
                extra={"journal_bytes": len(journal)},
            )
            return 0
        for mid, crc, size, message_id in entries:
            self._entries.pop(mid, None)
            self._entries[mid] = _entry(mid, (crc, size), message_id, (-1, -1))
        self._redelivering = bool(self._entries)
        return len(entries)

    def assign(self, message: ReceivedMessage) -> str:
        """Return the message id for ``message`` and remember it; call in receive order."""
        if message.qos != _QOS_AT_LEAST_ONCE:
            return message.message_id
        connection = message.connection
        if connection != self._connection:
            self._connection = connection
            self._redelivering = bool(self._entries)
        crc, size = fingerprint(message)
        entries = self._entries
        mid = message.mid
        message_id = message.message_id
        if message.dup:
            entry = entries.get(mid)
            if (
                entry is not None
                and entry.connection < connection
                and entry.crc == crc
                and entry.size == size
            ):
                message_id = entry.message_id
                self.reused += 1
        elif self._redelivering:
            self._end_redelivery(connection)
        entries.pop(mid, None)
        entries[mid] = _entry(mid, (crc, size), message_id, (connection, self._group))
        if len(entries) > self._max_entries:
            entries.popitem(last=False)
        return message_id

    def end_group(self, ack: tuple[int, int] | None = (0, 0)) -> None:
        """The current group was committed and acked; the next messages form the next group.

        Args:
            ack: ``(connection, n)``: its PUBACKs are confirmed once the broker processed the
                first ``n`` PUBACKs of that connection; None when some could not be sent;
                ``(0, 0)`` (the default) when it had no QoS 1 message.
        """
        if ack != (0, 0):
            self._unconfirmed.append((self._group, ack))
        self._group += 1

    def confirm(self, connection: int, acks: int) -> None:
        """The broker processed the first ``acks`` PUBACKs sent on ``connection``."""
        pending = self._unconfirmed
        while pending:
            ack = pending[0][1]
            if ack is None or ack[0] != connection or ack[1] > acks:
                return
            pending.popleft()

    def journal(self) -> bytes:
        """Serialise the entries a crash after the current group's commit must not forget."""
        keep: list[bytes] = []
        oldest_group = self._unconfirmed[0][0] if self._unconfirmed else self._group
        for entry in reversed(self._entries.values()):
            if len(keep) >= self._max_journal:
                break
            recent = entry.connection == self._connection and entry.group >= oldest_group
            carried = entry.connection < self._connection and self._redelivering
            if recent or carried:
                keep.append(entry.packed)
            elif not self._redelivering:
                break  # older groups of this connection only from here on
        keep.append(_HEADER.pack(_MAGIC, len(keep)))
        keep.reverse()
        return b"".join(keep)

    def _end_redelivery(self, connection: int) -> None:
        self._redelivering = False
        # Groups of earlier connections cannot be confirmed any more and need not be.
        self._unconfirmed = deque(
            (group, ack)
            for group, ack in self._unconfirmed
            if ack is not None and ack[0] >= connection
        )
        if self.reused > self._reported:
            _log.info(
                "Recognised messages the MQTT broker delivered again; they keep their first "
                "message ids.",
                extra={"messages": self.reused - self._reported, "connection": connection},
            )
            self._reported = self.reused
        stale = [mid for mid, e in self._entries.items() if e.connection < connection]
        for mid in stale:
            del self._entries[mid]


def _decode(journal: bytes) -> list[tuple[int, int, int, str]] | None:
    if len(journal) < _HEADER.size:
        return None
    magic, count = _HEADER.unpack_from(journal)
    if magic != _MAGIC or len(journal) != _HEADER.size + count * _ENTRY.size:
        return None
    return [
        (mid, crc, size, raw.hex())
        for mid, crc, size, raw in _ENTRY.iter_unpack(journal[_HEADER.size :])
    ]

"""The container ingest stores as the spool journal when alert rules are on.

Layout (all integers big-endian)::

    b"EAJ2" | u32 length of the message-id journal | message-id journal | alert state

Without alert rules ingest stores the message-id journal alone, as before; :func:`unpack_journal`
reads both (a journal without the magic is a message-id journal and no alert state), so an
upgrade, a downgrade of the rules to none, or a first start with rules all read what is there.
"""

from __future__ import annotations

import struct

_MAGIC = b"EAJ2"
_HEADER = struct.Struct(">4sI")


def pack_journal(window: bytes, alerts: bytes) -> bytes:
    """One journal holding the message-id journal ``window`` and the alert ``alerts`` state."""
    return b"".join((_HEADER.pack(_MAGIC, len(window)), window, alerts))


def unpack_journal(journal: bytes) -> tuple[bytes, bytes]:
    """``(message-id journal, alert state)`` of a stored journal (either layout)."""
    if len(journal) >= _HEADER.size and journal.startswith(_MAGIC):
        _, size = _HEADER.unpack_from(journal)
        end = _HEADER.size + size
        if end <= len(journal):
            return journal[_HEADER.size : end], journal[end:]
    return journal, b""

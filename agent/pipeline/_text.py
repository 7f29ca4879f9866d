"""Checks for the short strings a reading carries (device id, metric, unit, tags); text payloads."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from agent.pipeline._result import InvalidMessageError, Reason

if TYPE_CHECKING:
    from agent.model import ReceivedMessage

MAX_NAME_BYTES = 256
"""Longest device id, metric or unit, in UTF-8 bytes."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_QUOTE_CHARS = 64


def text_problem(text: str, max_bytes: int, *, allow_empty: bool = False) -> str | None:
    r"""Say what is wrong with ``text`` as a name, or return ``None`` when it is acceptable.

    Acceptable means: non-empty (unless ``allow_empty``), no C0/C1 control characters, valid
    Unicode (no lone surrogates, which JSON ``\ud800`` escapes can produce) and at most
    ``max_bytes`` once encoded as UTF-8.
    """
    if not text:
        return None if allow_empty else "is empty"
    if text.isascii() and text.isprintable():
        size = len(text)
    else:
        if _CONTROL.search(text):
            return "contains a control character"
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            return "is not valid Unicode"
    if size > max_bytes:
        return f"is longer than {max_bytes} bytes"
    return None


def quote(text: str) -> str:
    """Quote untrusted text for a detail message: repr-escaped and cut to 64 characters."""
    if len(text) > _QUOTE_CHARS:
        return repr(text[:_QUOTE_CHARS]) + "..."
    return repr(text)


def json_type(value: object) -> str:
    """Name the JSON type of a decoded value, with its article: ``"a string"``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def payload_text(msg: ReceivedMessage, max_payload_bytes: int) -> str:
    """The payload of a text format (a bare value, line protocol) as a string.

    Raises:
        InvalidMessageError: ``payload_too_large`` (also for a payload the source cut) or
            ``not_utf8``.
    """
    payload = msg.payload
    if msg.original_size is not None or len(payload) > max_payload_bytes:
        raise InvalidMessageError(
            Reason.PAYLOAD_TOO_LARGE,
            f"the payload is {msg.size_bytes} bytes, more than max_payload_bytes",
        )
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessageError(
            Reason.NOT_UTF8, f"the payload is not UTF-8 (byte {exc.start})"
        ) from None

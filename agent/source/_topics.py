"""MQTT topic filter syntax (MQTT 3.1.1 section 4.7, MQTT 5.0 section 4.7 and 4.8.2)."""

from __future__ import annotations

SHARE_PREFIX = "$share/"
_SHARE_PARTS = 3  # "$share", group, filter
_MAX_FILTER_BYTES = 65_535


def validate_filter(topic_filter: str) -> str:
    """Return ``topic_filter`` unchanged if it is a legal subscription filter.

    Legal means: not empty, at most 65,535 bytes of UTF-8, no NUL character, ``#`` only as the
    whole last level, ``+`` only as a whole level, and a shared subscription written as
    ``$share/<group>/<filter>`` with a non-empty group free of ``/``, ``+`` and ``#``.

    Raises:
        ValueError: With one sentence saying what is wrong.
    """
    if not topic_filter:
        raise ValueError("a topic filter must not be empty")
    if "\x00" in topic_filter:
        raise ValueError(f"topic filter {topic_filter!r} contains a NUL character")
    if len(topic_filter.encode("utf-8", "surrogatepass")) > _MAX_FILTER_BYTES:
        raise ValueError("a topic filter must not exceed 65,535 bytes of UTF-8")
    if topic_filter.startswith(SHARE_PREFIX) or topic_filter == SHARE_PREFIX.rstrip("/"):
        _check_shared(topic_filter)
    else:
        _check_levels(topic_filter, topic_filter)
    return topic_filter


def _check_shared(topic_filter: str) -> None:
    parts = topic_filter.split("/", 2)
    if len(parts) < _SHARE_PARTS or not parts[1] or not parts[2]:
        raise ValueError(
            f"shared subscription {topic_filter!r} must have the form $share/<group>/<filter>"
        )
    _, group, inner = parts
    if "+" in group or "#" in group:
        raise ValueError(
            f"the group of shared subscription {topic_filter!r} must not contain '+' or '#'"
        )
    _check_levels(inner, topic_filter)


def _check_levels(levels_text: str, topic_filter: str) -> None:
    levels = levels_text.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            raise ValueError(
                f"in topic filter {topic_filter!r}, '#' must be a whole level and the last one"
            )
        if "+" in level and level != "+":
            raise ValueError(f"in topic filter {topic_filter!r}, '+' must be a whole level")

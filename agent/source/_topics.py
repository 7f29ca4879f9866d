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


def _split(topic_filter: str) -> tuple[str | None, list[str]]:
    """``(share group or None, levels of the filter proper)``."""
    if topic_filter.startswith(SHARE_PREFIX):
        _, group, inner = topic_filter.split("/", 2)
        return group, inner.split("/")
    return None, topic_filter.split("/")


def covers(outer: str, inner: str) -> bool:
    """Whether every topic that ``inner`` matches is matched by ``outer`` too.

    Filters of different shared-subscription groups (or shared and not) never cover each other:
    the broker delivers to each of them.
    """
    outer_group, a = _split(outer)
    inner_group, b = _split(inner)
    if outer_group != inner_group:
        return False
    for index, level in enumerate(a):
        if level == "#":
            return True
        if index >= len(b) or b[index] == "#":
            return False
        if level != "+" and level != b[index]:
            return False
    return len(a) == len(b)


def overlap(first: str, second: str) -> bool:
    """Whether some topic matches both filters (ignoring shared-subscription groups)."""
    _, a = _split(first)
    _, b = _split(second)
    for x, y in zip(a, b, strict=False):
        if "#" in (x, y):
            return True
        if "+" not in (x, y) and x != y:
            return False
    return (
        len(a) == len(b)
        or (len(a) == len(b) + 1 and a[-1] == "#")
        or (len(b) == len(a) + 1 and b[-1] == "#")
    )


def without_covered(filters: tuple[str, ...]) -> tuple[str, ...]:
    """``filters`` without those another one covers (the first of equal ones stays).

    An MQTT 5 broker (Mosquitto 2 included) delivers a message once per matching subscription;
    each copy would be a new reception with a new message id, so nested filters are not
    subscribed: the outer one receives everything the inner one would.
    """
    kept: list[str] = []
    for index, candidate in enumerate(filters):
        others = filters[:index] + filters[index + 1 :]
        if any(
            covers(other, candidate) and (not covers(candidate, other) or other in filters[:index])
            for other in others
        ):
            continue
        kept.append(candidate)
    return tuple(kept)


def partial_overlaps(filters: tuple[str, ...]) -> list[tuple[str, str]]:
    """Pairs of filters that share some topics while neither contains the other."""
    return [
        (a, b)
        for i, a in enumerate(filters)
        for b in filters[i + 1 :]
        if overlap(a, b) and not covers(a, b) and not covers(b, a)
    ]

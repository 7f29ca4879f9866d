"""Where the device id comes from: an MQTT topic template, a JSON payload field, or both.

A topic template such as ``plant/{site}/{device_id}/{metric}`` is split on ``/``; every level
is either literal text (matched exactly) or one whole placeholder ``{name}`` (matches exactly
one non-empty topic level, like MQTT's ``+``). ``{device_id}`` is required; ``{metric}`` is
optional and supplies the reading's metric when the payload has none. The template compiles to
one regular expression, once.

When both sources are configured the template is tried first; the JSON field is used only when
the topic does not match the template. A device id the template did find but that is invalid
is rejected (``bad_device_id``), never silently replaced by the payload's.

What the template finds in a topic is kept per topic (:class:`~agent.pipeline._cache.TopicCache`):
the regular expression runs once per topic, not once per message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.pipeline._cache import TopicCache
from agent.pipeline._result import InvalidMessageError, Reason
from agent.pipeline._text import MAX_NAME_BYTES, json_type, quote, text_problem

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    """A compiled topic template.

    Attributes:
        template: The template as configured.
        pattern: The compiled regular expression, matched against the whole topic.
        has_metric: Whether the template has a ``{metric}`` placeholder.
    """

    template: str
    pattern: re.Pattern[str]
    has_metric: bool


@dataclass(frozen=True, slots=True)
class TopicFields:
    """What the template found in one topic.

    Attributes:
        device_id: The device id, or ``None`` when it is invalid.
        problem: Why the device id is invalid, or ``None``.
        metric: The ``{metric}`` level, when the template has one.
    """

    device_id: str | None
    problem: str | None
    metric: str | None


def parse_template(template: str) -> TopicTemplate:
    """Compile a topic template.

    Raises:
        ValueError: The template is empty, has MQTT wildcards, unbalanced braces or partial
            placeholders, repeats a placeholder, or lacks ``{device_id}``.
    """
    if not template:
        raise ValueError("the topic template is empty")
    if "+" in template or "#" in template:
        raise ValueError(
            "MQTT wildcards '+' and '#' are not allowed in a topic template; "
            "use a named placeholder such as '{site}' for a level that varies"
        )
    names: list[str] = []
    parts = [_level_pattern(level, names) for level in template.split("/")]
    if "device_id" not in names:
        raise ValueError("the topic template must contain the placeholder '{device_id}'")
    return TopicTemplate(template, re.compile("/".join(parts)), "metric" in names)


def _level_pattern(level: str, names: list[str]) -> str:
    match = _PLACEHOLDER.fullmatch(level)
    if match is None:
        if "{" in level or "}" in level:
            raise ValueError(
                f"topic template level {level!r} must be literal text or exactly one "
                "placeholder such as '{site}'; check for unbalanced braces"
            )
        return re.escape(level)
    name = match.group(1)
    if name in names:
        raise ValueError(f"placeholder '{{{name}}}' appears more than once in the topic template")
    names.append(name)
    return f"(?P<{name}>[^/]+)"


class DeviceIdResolver:
    """Finds and checks the device id of a message."""

    __slots__ = ("_path", "_template", "_topics")

    def __init__(self, template: TopicTemplate | None, json_field: str | None) -> None:
        """Use ``template`` first, then the dotted ``json_field`` path; at least one is set."""
        self._template = template
        self._path = tuple(json_field.split(".")) if json_field else ()
        self._topics: TopicCache[TopicFields | None] = TopicCache()

    def from_topic(self, topic: str) -> TopicFields | None:
        """Apply the template to ``topic``; ``None`` when there is no template or no match."""
        if self._template is None:
            return None
        try:
            return self._topics[topic]
        except KeyError:
            return self._topics.remember(topic, self._match(self._template, topic))

    @staticmethod
    def _match(template: TopicTemplate, topic: str) -> TopicFields | None:
        match = template.pattern.fullmatch(topic)
        if match is None:
            return None
        metric = match.group("metric") if template.has_metric else None
        device_id: str = match.group("device_id")
        problem = text_problem(device_id, MAX_NAME_BYTES)
        if problem is not None:
            return TopicFields(None, f"the device id in the topic {problem}", metric)
        return TopicFields(device_id, None, metric)

    def resolve(self, topic: TopicFields | None, payload: dict[str, object]) -> str:
        """Return the device id from the topic fields, else from the payload.

        Raises:
            InvalidMessageError: ``no_device_id`` or ``bad_device_id``.
        """
        if topic is not None:
            if topic.device_id is None:
                raise InvalidMessageError(Reason.BAD_DEVICE_ID, str(topic.problem))
            return topic.device_id
        if not self._path:
            raise InvalidMessageError(
                Reason.NO_DEVICE_ID, "the topic does not match the device id topic template"
            )
        return self._from_payload(payload)

    def _from_payload(self, payload: dict[str, object]) -> str:
        node: object = payload
        for part in self._path:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                raise InvalidMessageError(Reason.NO_DEVICE_ID, self._no_id_detail())
        if not isinstance(node, str):
            raise InvalidMessageError(
                Reason.BAD_DEVICE_ID,
                f"field {quote('.'.join(self._path))} is {json_type(node)}, expected a string",
            )
        problem = text_problem(node, MAX_NAME_BYTES)
        if problem is not None:
            raise InvalidMessageError(
                Reason.BAD_DEVICE_ID, f"field {quote('.'.join(self._path))} {problem}"
            )
        return node

    def _no_id_detail(self) -> str:
        field = quote(".".join(self._path))
        if self._template is None:
            return f"the payload has no field {field}"
        return f"the topic does not match the template and the payload has no field {field}"

    @property
    def payload_root(self) -> str | None:
        """The top-level payload field the device id is read from, if any."""
        return self._path[0] if self._path else None

"""A bounded per-topic cache: what a topic alone decides is worked out once per topic.

A gateway sees the same few topics again and again (one or a few per device), so results that
depend only on the topic (the device id and metric from the topic template, whether the topic
is a last-will topic) are kept in a plain dict keyed by topic. Bounded: at most
:data:`TOPIC_CACHE_ENTRIES` topics, each at most :data:`TOPIC_CACHE_MAX_CHARS` characters long
(a longer topic is worked out every time), so the cache holds at most a few MiB whatever the
broker sends. When full, the oldest entry makes room (first in, first out). A cache belongs to
one compiled configuration: a reload builds new objects with empty caches.
"""

from __future__ import annotations

from typing import TypeVar

TOPIC_CACHE_ENTRIES = 4096
TOPIC_CACHE_MAX_CHARS = 256

_T = TypeVar("_T")


class TopicCache(dict[str, _T]):
    """Topic → result: read it like a dict, fill it with :meth:`remember`."""

    __slots__ = ()

    def remember(self, topic: str, value: _T) -> _T:
        """Keep ``value`` for ``topic`` (unless the topic is too long) and return it."""
        if len(topic) <= TOPIC_CACHE_MAX_CHARS:
            if len(self) >= TOPIC_CACHE_ENTRIES:
                del self[next(iter(self))]
            self[topic] = value
        return value

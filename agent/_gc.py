"""Garbage-collector settings for the agent's process: fewer collections per message.

CPython starts a young-generation collection every 700 net allocations of container objects.
The agent allocates a few per message (the received message, the record, a dict or two) and
frees them by reference counting: they form no cycles. At thousands of messages per second
the default threshold runs the collector hundreds of times a second, each run walking every
young object, and every tenth or hundredth run also the older generations, which hold the whole
process (configuration, modules, the spool index, in-flight records).

:func:`tune_for_throughput` moves what exists after start-up out of the collector's sight
(``gc.freeze``) and raises the young threshold, so collections are rarer and cheaper. Cyclic
garbage (exceptions with tracebacks, finished tasks) is still collected, just in larger rounds:
at most :data:`YOUNG_THRESHOLD` container objects wait for a collection.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
"""Net container allocations between two young-generation collections (CPython default 700)."""


def tune_for_throughput() -> None:
    """Freeze what start-up allocated and make young collections rarer (call once, at start)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)

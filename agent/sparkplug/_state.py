"""What the births of each Sparkplug B edge node defined, kept across pipelines and reconnects.

Invariants:

* One :class:`EdgeNode` per ``(group_id, edge_node_id)``. An NBIRTH replaces it whole (aliases,
  datatypes, devices, ``bdSeq``, the expected ``seq``); a DBIRTH adds the device's metrics to
  its node's tables (aliases are unique per edge node across the node and all its devices).
* Bounded: at most ``max_edge_nodes`` nodes and ``max_metrics`` metric definitions over all of
  them. Beyond either, the least recently used node is evicted (counted as ``node_evicted``;
  its next DATA finds no aliases until it is born again). A single birth bigger than
  ``max_metrics`` keeps its first ``max_metrics`` definitions (``metric_table_full``).
* Memory only: after a restart the tables are empty until the edge nodes are born again. A
  node's DATA with an unknown alias then follows ``unknown_alias`` (DLQ by default, nothing is
  guessed).
* Sequence numbers: every message of an edge node after its NBIRTH (NDATA, DBIRTH, DDATA,
  DDEATH) carries ``seq``, the previous one plus 1 modulo 256. Another value is a gap: counted
  (``seq_gap``) and logged at most every ``_GAP_LOG_INTERVAL_S`` seconds, never a reason to
  drop data; the count then continues from the value received.
* Every counter goes through ``on_event(event, n)`` (the metrics) and :attr:`counts`; the
  events are the closed set :data:`SPARKPLUG_EVENTS`.

The state is used from the event loop only (ingest's pipeline), so it takes no lock.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

_log = logging.getLogger(__name__)

SPARKPLUG_EVENTS = (
    "seq_gap",
    "unknown_alias",
    "metric_null",
    "metric_unsupported_type",
    "stale_death",
    "data_before_birth",
    "node_evicted",
    "metric_table_full",
)
"""The closed set of things the Sparkplug B profile counts (the ``event`` metric label)."""

MAX_EDGE_NODES = 4096
MAX_METRICS = 200_000
_SEQ_MODULO = 256
_GAP_LOG_INTERVAL_S = 10.0


@dataclass(slots=True)
class EdgeNode:
    """The births of one edge node: aliases, datatypes, devices and sequence numbers.

    Attributes:
        aliases: Alias -> (sparkplug device id, "" for the node itself; metric name; datatype).
        types: (sparkplug device id or ""; metric name) -> datatype, from the births.
        devices: Sparkplug device ids born since the NBIRTH (and not dead).
        bd_seq: The NBIRTH's ``bdSeq`` metric, None when it had none.
        next_seq: The ``seq`` the next message should carry; None before the NBIRTH.
        born: Whether an NBIRTH of this node was seen.
    """

    aliases: dict[int, tuple[str, str, int]] = field(default_factory=dict)
    types: dict[tuple[str, str], int] = field(default_factory=dict)
    devices: dict[str, None] = field(default_factory=dict)
    bd_seq: int | None = None
    next_seq: int | None = None
    born: bool = False

    @property
    def size(self) -> int:
        """Metric definitions held (the bound counts these)."""
        return len(self.types) + len(self.aliases)


class SparkplugState:
    """Births, aliases and sequence numbers of every edge node; see the module docstring."""

    __slots__ = (
        "_last_gap_log",
        "_max_metrics",
        "_max_nodes",
        "_nodes",
        "_on_event",
        "_size",
        "_unlogged_gaps",
        "counts",
    )

    def __init__(
        self,
        *,
        max_edge_nodes: int = MAX_EDGE_NODES,
        max_metrics: int = MAX_METRICS,
        on_event: Callable[[str, int], None] | None = None,
    ) -> None:
        """Create an empty state; ``on_event(event, n)`` is told of every count."""
        self._nodes: collections.OrderedDict[tuple[str, str], EdgeNode] = collections.OrderedDict()
        self._max_nodes = max_edge_nodes
        self._max_metrics = max_metrics
        self._on_event = on_event
        self._size = 0
        self._last_gap_log = float("-inf")
        self._unlogged_gaps = 0
        self.counts: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        """Edge nodes tracked."""
        return len(self._nodes)

    def count(self, event: str, n: int = 1) -> None:
        """Count ``n`` occurrences of ``event`` (one of :data:`SPARKPLUG_EVENTS`)."""
        self.counts[event] += n
        if self._on_event is not None:
            self._on_event(event, n)

    def node(self, group_id: str, edge_node_id: str) -> EdgeNode | None:
        """The edge node's state (marked recently used), or None if never born or evicted."""
        key = (group_id, edge_node_id)
        node = self._nodes.get(key)
        if node is not None:
            self._nodes.move_to_end(key)
        return node

    def nbirth(self, group_id: str, edge_node_id: str, bd_seq: int | None, seq: int) -> EdgeNode:
        """Start the edge node afresh: its previous tables and devices are forgotten."""
        key = (group_id, edge_node_id)
        old = self._nodes.pop(key, None)
        if old is not None:
            self._size -= old.size
        node = EdgeNode(bd_seq=bd_seq, next_seq=(seq + 1) % _SEQ_MODULO, born=True)
        self._nodes[key] = node
        while len(self._nodes) > self._max_nodes:
            self._evict_oldest()
        return node

    def unborn(self, group_id: str, edge_node_id: str) -> EdgeNode:
        """The node's state, created empty (not born) for a message that came before a birth."""
        node = self.node(group_id, edge_node_id)
        if node is None:
            node = EdgeNode()
            self._nodes[(group_id, edge_node_id)] = node
            while len(self._nodes) > self._max_nodes:
                self._evict_oldest()
        return node

    def define(
        self, node: EdgeNode, device: str, name: str, alias: int | None, datatype: int
    ) -> None:
        """Record a birth's metric: its datatype, and its alias when it has one."""
        key = (device, name)
        if key not in node.types:
            if not self._room(node):
                return
            self._size += 1
        node.types[key] = datatype
        if alias is not None:
            if alias not in node.aliases:
                if not self._room(node):
                    return
                self._size += 1
            node.aliases[alias] = (device, name, datatype)

    def forget_device(self, node: EdgeNode, device: str) -> None:
        """A DBIRTH starts over: drop what an earlier birth of ``device`` defined."""
        stale = [key for key in node.types if key[0] == device]
        for key in stale:
            del node.types[key]
        aliases = [alias for alias, entry in node.aliases.items() if entry[0] == device]
        for alias in aliases:
            del node.aliases[alias]
        self._size -= len(stale) + len(aliases)

    def check_seq(self, node: EdgeNode, seq: int | None, where: str) -> None:
        """Check a message's ``seq`` against the expected one; count and log a gap."""
        expected = node.next_seq
        if seq is None:
            return
        node.next_seq = (seq + 1) % _SEQ_MODULO
        if expected is None or seq == expected:
            return
        self.count("seq_gap")
        self._unlogged_gaps += 1
        now = time.monotonic()
        if now - self._last_gap_log >= _GAP_LOG_INTERVAL_S:
            _log.warning(
                "Sparkplug sequence gap: messages of an edge node were lost or reordered "
                "before the agent; the data received is kept.",
                extra={
                    "edge_node": where,
                    "expected_seq": expected,
                    "seq": seq,
                    "gaps_since_last_log": self._unlogged_gaps,
                },
            )
            self._last_gap_log = now
            self._unlogged_gaps = 0

    def ndeath(self, group_id: str, edge_node_id: str, bd_seq: int | None) -> list[str] | None:
        """The edge node died: the devices it had (then forgotten), or None when stale.

        An NDEATH whose ``bdSeq`` differs from the current NBIRTH's belongs to an earlier
        session (the broker delivers a will late) and is ignored (counted ``stale_death``).
        The node's aliases are kept: DATA never follows a death without a new NBIRTH, which
        replaces them anyway.
        """
        node = self.node(group_id, edge_node_id)
        if node is not None and None not in (node.bd_seq, bd_seq) and node.bd_seq != bd_seq:
            self.count("stale_death")
            return None
        if node is None:
            return []
        devices = list(node.devices)
        node.devices.clear()
        node.next_seq = None
        return devices

    def _room(self, node: EdgeNode) -> bool:
        """Make room for one more definition in ``node``; False if even that is not possible."""
        while self._size >= self._max_metrics:
            oldest = next(iter(self._nodes.values()))
            if oldest is node:
                self.count("metric_table_full")
                return False
            self._evict_oldest()
        return True

    def _evict_oldest(self) -> None:
        _, node = self._nodes.popitem(last=False)
        self._size -= node.size
        self.count("node_evicted")

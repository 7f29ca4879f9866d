"""The Sparkplug B topic namespace.

``spBv1.0/{group_id}/{message_type}/{edge_node_id}[/{device_id}]``, where the message type is
one of NBIRTH, NDATA, NDEATH, NCMD (node: four levels) or DBIRTH, DDATA, DDEATH, DCMD (device:
five levels); ``spBv1.0/STATE/{host_id}`` is a host application's state (three levels).
"""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE = "spBv1.0"
NODE_TYPES = frozenset({"NBIRTH", "NDATA", "NDEATH", "NCMD"})
DEVICE_TYPES = frozenset({"DBIRTH", "DDATA", "DDEATH", "DCMD"})
MESSAGE_TYPES = NODE_TYPES | DEVICE_TYPES | {"STATE"}
_NODE_LEVELS = 4
_DEVICE_LEVELS = 5
_STATE_LEVELS = 3


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """A parsed Sparkplug B topic.

    Attributes:
        group_id: The group (``STATE``: empty).
        message_type: NBIRTH, NDATA, ..., or STATE.
        edge_node_id: The edge node (``STATE``: the host application id).
        device_id: The device, for the D* message types; None for node messages.
    """

    group_id: str
    message_type: str
    edge_node_id: str
    device_id: str | None


def parse_topic(topic: str) -> SparkplugTopic | None:
    """Parse ``topic``; None when it is not a well-formed Sparkplug B topic."""
    levels = topic.split("/")
    if levels[0] != NAMESPACE or any(not level for level in levels):
        return None
    if len(levels) == _STATE_LEVELS and levels[1] == "STATE":
        return SparkplugTopic("", "STATE", levels[2], None)
    if len(levels) == _NODE_LEVELS and levels[2] in NODE_TYPES:
        return SparkplugTopic(levels[1], levels[2], levels[3], None)
    if len(levels) == _DEVICE_LEVELS and levels[2] in DEVICE_TYPES:
        return SparkplugTopic(levels[1], levels[2], levels[3], levels[4])
    return None

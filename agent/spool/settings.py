"""Settings of the disk spool.

``max_size_bytes``, ``max_age_secs`` and ``overflow_policy`` are marked to apply live; the
others (``directory``, ``durability``, ``max_quarantine_bytes``, ``reserve_bytes``) need a
restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OverflowPolicy = Literal["block", "drop_oldest", "drop_newest"]
Durability = Literal["fsync", "normal"]

_GIB = 1024**3
_MIB = 1024**2
_DAY_SECS = 86_400.0


class SpoolSettings(BaseModel):
    """Where and how the spool keeps records until Kafka acknowledged them.

    The limits (size, age, overflow policy) are marked live; the rest is read once, at open.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    directory: Path = Field(
        default=Path("/var/lib/edge-agent/spool"),
        description=(
            "Directory of the spool, used by one agent process only (it is locked). Created with "
            "mode 0700 and tightened to 0700 if it exists. Local disk only, not NFS."
        ),
        json_schema_extra={"reload": "restart"},
    )
    max_size_bytes: int = Field(
        default=1 * _GIB,
        gt=0,
        description=(
            "Limit on the encoded size of the blocks in the spool. The SQLite files on disk are "
            "somewhat larger (page overhead, write-ahead log): leave about 10% headroom."
        ),
        json_schema_extra={"reload": "live"},
    )
    max_age_secs: float = Field(
        default=7 * _DAY_SECS,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Blocks older than this are dropped with reason 'expired' on read and whenever the "
            "agent calls expire(); 0 disables the age limit."
        ),
        json_schema_extra={"reload": "live"},
    )
    overflow_policy: OverflowPolicy = Field(
        default="block",
        description=(
            "What an append does when the spool is full. 'block': wait until the forwarder frees "
            "space, so MQTT messages stay unacknowledged and the broker keeps them. "
            "'drop_oldest': delete the oldest blocks until the new one fits. 'drop_newest': "
            "refuse the new block. Every drop is counted with its reason."
        ),
        json_schema_extra={"reload": "live"},
    )
    durability: Durability = Field(
        default="fsync",
        description=(
            "'fsync': every commit is synced to the device (SQLite synchronous=FULL) and survives "
            "power loss. 'normal': WAL with synchronous=NORMAL, survives a process crash but "
            "power loss may roll back the last commits; fewer flash writes and faster."
        ),
        json_schema_extra={"reload": "restart"},
    )
    max_quarantine_bytes: int = Field(
        default=64 * _MIB,
        ge=0,
        description=(
            "Limit on the raw bytes of corrupt blocks kept under <directory>/quarantine/ for "
            "forensics. Beyond it corrupt blocks are still removed and reported, but not kept."
        ),
        json_schema_extra={"reload": "restart"},
    )
    reserve_bytes: int = Field(
        default=4 * _MIB,
        ge=0,
        description=(
            "Size of <directory>/reserve, a pre-allocated file the spool deletes when the disk is "
            "full, so that it can still remove delivered blocks and open again (SQLite needs "
            "space even to delete). Re-created once the disk has twice this much free. 0 "
            "disables it."
        ),
        json_schema_extra={"reload": "restart"},
    )

"""The in-flight state of one spool block: one slot per record.

A slot moves ``PENDING → SENT → DELIVERED``, or, when Kafka refuses the record for good,
``→ SETTLE_PENDING → SETTLE_SENT → SETTLED`` (its dead-letter copy was acknowledged) or
``→ DROPPED`` (no dead-letter copy could be delivered). A retriable failure, or a producer reset,
moves a sent slot back to its pending state. A block is complete, and may leave the spool, when
every slot is DELIVERED, SETTLED or DROPPED: every record ends in exactly one of delivered,
DLQ, counted drop.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from agent.model import Record, SpoolBlock


class SlotState(enum.Enum):
    """Where one record of a block stands."""

    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    SETTLE_PENDING = "settle_pending"
    SETTLE_SENT = "settle_sent"
    SETTLED = "settled"
    DROPPED = "dropped"


_PENDING = SlotState.PENDING
_SENT = SlotState.SENT
_DELIVERED = SlotState.DELIVERED
_SETTLE_PENDING = SlotState.SETTLE_PENDING
_SETTLE_SENT = SlotState.SETTLE_SENT
_SETTLED = SlotState.SETTLED
_DROPPED = SlotState.DROPPED


@dataclass(slots=True)
class Slot:
    """One record of a block and what became of it.

    Attributes:
        record: The record as spooled.
        state: Where it stands.
        future: The future of the last send (the record or its dead-letter copy): its batch's,
            shared with the other records of that batch, or its own for a record sent alone.
        sent: The record exactly as last sent (timestamp corrected).
        clock_generation: The clock correction generation it was last sent under.
        solo: Send it alone in a batch (a batch-level refusal hit it in a shared batch).
        sent_solo: The last send was alone in its batch.
        partition: The partition of the last send (None: the producer picked it).
        timestamp_refusals: How often Kafka refused its timestamp.
        copy: The dead-letter copy, once the record is being settled.
        reason: Why it is being settled (a ``SettleReason`` value).
        detail: The error that settled it, one line.
    """

    record: Record
    state: SlotState = SlotState.PENDING
    future: asyncio.Future[Any] | None = None
    sent: Record | None = None
    clock_generation: int = 0
    solo: bool = False
    sent_solo: bool = False
    partition: int | None = None
    timestamp_refusals: int = 0
    copy: Record | None = None
    reason: str = ""
    detail: str = ""

    # Identity tests, not set membership: these run for every record (an enum hash is slow).
    @property
    def final(self) -> bool:
        """Delivered, settled or dropped."""
        state = self.state
        return state is _DELIVERED or state is _SETTLED or state is _DROPPED

    @property
    def to_send(self) -> bool:
        """Waiting to be handed to the producer (the record or its copy)."""
        state = self.state
        return state is _PENDING or state is _SETTLE_PENDING

    @property
    def in_flight(self) -> bool:
        """In the producer, waiting for its outcome."""
        state = self.state
        return state is _SENT or state is _SETTLE_SENT

    def outgoing(self) -> Record:
        """The record the next send hands over: the original or its dead-letter copy."""
        if self.state is SlotState.SETTLE_PENDING and self.copy is not None:
            return self.copy
        return self.record

    def mark_sent(self, future: asyncio.Future[Any], sent: Record, generation: int) -> None:
        """The producer took it."""
        self.future = future
        self.sent = sent
        self.clock_generation = generation
        self.sent_solo = self.solo
        self.state = _SETTLE_SENT if self.state is _SETTLE_PENDING else _SENT

    def back_to_pending(self) -> None:
        """Send it again (a retriable failure, a reset, a split)."""
        self.future = None
        if self.state is SlotState.SENT:
            self.state = SlotState.PENDING
        elif self.state is SlotState.SETTLE_SENT:
            self.state = SlotState.SETTLE_PENDING


@dataclass(slots=True)
class Delivery:
    """The in-flight state of one spool block.

    Attributes:
        block: The block whose records are being delivered.
        slots: One per record, in record order.
        enqueued_at: Monotonic time the first record was enqueued (for latency).
        resets: Producer resets this block's failures caused (bounded by the forwarder).
        needs_send: Some slot may wait to be sent (cleared once all were handed over).
    """

    block: SpoolBlock
    slots: list[Slot] = field(default_factory=list)
    enqueued_at: float = 0.0
    resets: int = 0
    needs_send: bool = True

    def __post_init__(self) -> None:
        """Make one slot per record."""
        if not self.slots:
            self.slots = [Slot(record) for record in self.block.records]

    @property
    def complete(self) -> bool:
        """Every record delivered, settled or dropped."""
        for slot in self.slots:
            state = slot.state
            if not (state is _DELIVERED or state is _SETTLED or state is _DROPPED):
                return False
        return True

    @property
    def fully_enqueued(self) -> bool:
        """Nothing waits to be handed to the producer."""
        return not any(slot.to_send for slot in self.slots)

    def started(self) -> None:
        """Note when the first record of the block went out."""
        if not self.enqueued_at:
            self.enqueued_at = time.monotonic()

    def pending_futures(self) -> list[asyncio.Future[Any]]:
        """Futures of in-flight slots that have no outcome yet (a batch's future once)."""
        pending: list[asyncio.Future[Any]] = []
        last = None
        for slot in self.slots:
            fut = slot.future
            if fut is None or fut is last:
                continue
            state = slot.state
            if (state is _SENT or state is _SETTLE_SENT) and not fut.done():
                pending.append(fut)
                last = fut
        return pending

    def abandon(self) -> None:
        """The producer is gone: every slot still in flight is sent again.

        The caller first processes the outcomes that are already in (successes and refusals):
        what is left has no outcome yet, or failed in a way that only needs a resend.
        """
        self.needs_send = True
        for slot in self.slots:
            fut = slot.future
            if not slot.in_flight or fut is None:
                continue
            if fut.done():
                _retrieve(fut)
            else:
                fut.add_done_callback(_retrieve)
            slot.back_to_pending()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()

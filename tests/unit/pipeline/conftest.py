"""Fixtures of the pipeline unit tests: run one payload through a freshly configured pipeline."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from agent.model import ReceivedMessage
from agent.pipeline import Pipeline, PipelineSettings

if TYPE_CHECKING:
    from agent.pipeline import Processed

RECEIVED_AT_MS = 1_700_000_000_000
"""Receive time of every message: 2023-11-14T22:13:20Z."""
MESSAGE_ID = "0123456789abcdef0000000000000007"
"""Message id of every message built here."""


class Run(Protocol):
    """Process one payload with settings given as keyword arguments."""

    def __call__(
        self,
        payload: bytes | dict[str, Any],
        *,
        topic: str = ...,
        received_at_ms: int = ...,
        **settings: Any,
    ) -> Processed: ...


def message(
    payload: bytes | dict[str, Any],
    topic: str = "sensors/line-1/reading",
    received_at_ms: int = RECEIVED_AT_MS,
) -> ReceivedMessage:
    """Build a received message; a dict payload is encoded as JSON."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return ReceivedMessage(topic, body, 1, False, received_at_ms, message_id=MESSAGE_ID)


@pytest.fixture
def run() -> Run:
    """Return a function that processes one payload with the given settings."""

    def _run(
        payload: bytes | dict[str, Any],
        *,
        topic: str = "sensors/line-1/reading",
        received_at_ms: int = RECEIVED_AT_MS,
        **settings: Any,
    ) -> Processed:
        pipeline = Pipeline(PipelineSettings.model_validate(settings), "gw-1")
        return pipeline.process(message(payload, topic, received_at_ms))

    return _run

"""Fixtures shared by the integration tests (the services themselves are in tests/conftest.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def unreachable_kafka() -> Iterator[str]:
    """A bootstrap address where nothing will ever accept a connection, for the test's duration.

    The port stays bound (not listening) until the test ends, so a connection is refused at
    once and no other process (another test run's broker, a service started meanwhile) can take
    it. A port that was merely free a moment ago (``free_port()``) or a well-known one can be.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"

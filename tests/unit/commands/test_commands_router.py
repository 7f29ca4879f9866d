"""Routing: which commands are this gateway's; the allow-list gives their topics."""

from __future__ import annotations

import pytest

from agent.commands import CommandsSettings
from agent.commands.router import Route, Router
from agent.commands.schema import Peek


def _peek(device_id: str | None, gateway_id: str | None = None) -> Peek:
    return Peek({}, "c", device_id, gateway_id)


def _router(seen: set[str] | None = None, **settings: object) -> Router:
    return Router(
        CommandsSettings(enabled=True, **settings),  # type: ignore[arg-type]
        "gw-1",
        (seen or set()).__contains__,
    )


@pytest.mark.parametrize(
    ("device", "gateway", "route"),
    [
        ("press-1", None, Route.OURS),
        ("press-1", "gw-1", Route.OURS),
        ("press-1", "gw-2", Route.SKIP_OTHER_GATEWAY),
        ("pump-1", None, Route.SKIP_NOT_SERVED),
        ("pump-1", "gw-1", Route.NOT_SERVED_HERE),
        ("seen-dev", None, Route.OURS),
        (None, None, Route.SKIP_UNREADABLE),
        (None, "gw-1", Route.OURS),
    ],
)
def test_router_routes_by_target_gateway_and_served_devices(device, gateway, route):
    """Another gateway's command is skipped; a targeted unserved device is ours to refuse."""
    router = _router({"seen-dev"}, devices=("press-*",))
    assert router.route(_peek(device, gateway)) is route


def test_router_seen_devices_are_not_served_when_turned_off():
    """serve_seen_devices=false: only the globs count."""
    router = _router({"seen-dev"}, serve_seen_devices=False)
    assert router.route(_peek("seen-dev")) is Route.SKIP_NOT_SERVED


def test_router_allow_list_gives_topic_or_none():
    """An allowed name gets its filled template; any other name gets no topic."""
    router = _router(allowed={"reset": "cmd/{gateway_id}/{device_id}/{name}"})
    assert router.topic("reset", "d-1") == "cmd/gw-1/d-1/reset"
    assert router.topic("format_disk", "d-1") is None


def test_router_response_topic_names_the_gateway():
    """The default response topic carries the gateway id; None turns responses off."""
    assert _router().response_topic() == "cmd-response/gw-1"
    assert _router(response_topic=None).response_topic() is None

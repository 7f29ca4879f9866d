"""Checks of values that pass their type but would break the agent at run time."""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePath
from typing import Final

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_HOST_NAME: Final = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def is_host(host: str) -> bool:
    """Whether ``host`` is an IP address (v4 or v6) or a DNS host name (RFC 1123 labels)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOST_NAME.fullmatch(host) is not None
    return True


def control_character(value: object) -> str | None:
    """The first control character (C0, DEL or C1) in a text, path or collection of them."""
    if isinstance(value, str | PurePath):
        found = _CONTROL.search(str(value))
        return None if found is None else found.group()
    if isinstance(value, tuple | list | frozenset | set):
        for item in value:
            if (char := control_character(item)) is not None:
                return char
    if isinstance(value, dict):
        for key, item in value.items():
            if (char := control_character(key) or control_character(item)) is not None:
                return char
    return None

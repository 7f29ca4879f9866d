"""Spool settings: safe defaults, and bad values rejected at load with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.spool import SpoolSettings


def test_settings_defaults_are_bounded_and_durable() -> None:
    """Defaults: 1 GiB, 7 days, block when full, fsync every commit."""
    settings = SpoolSettings()
    assert settings.max_size_bytes == 1024**3
    assert settings.max_age_secs == 7 * 86_400
    assert settings.overflow_policy == "block"
    assert settings.durability == "fsync"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_size_bytes", 0),
        ("max_age_secs", -1),
        ("max_age_secs", float("inf")),
        ("overflow_policy", "drop_random"),
        ("durability", "none"),
        ("max_quarantine_bytes", -1),
        ("max_size", 10),
    ],
)
def test_settings_bad_value_is_rejected_with_its_field(field: str, value: object) -> None:
    """An invalid value or an unknown option fails validation and names the field."""
    with pytest.raises(ValidationError) as raised:
        SpoolSettings.model_validate({"directory": "spool", field: value})
    assert [error["loc"] for error in raised.value.errors()] == [(field,)]


def test_settings_are_frozen() -> None:
    """Settings cannot change after load; a change needs a restart."""
    settings = SpoolSettings(directory=Path("spool"))
    with pytest.raises(ValidationError):
        settings.max_size_bytes = 1  # type: ignore[misc]


def test_settings_every_field_is_described() -> None:
    """Every option carries a description for the reference docs."""
    assert all(field.description for field in SpoolSettings.model_fields.values())

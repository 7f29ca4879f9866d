"""RemoteConfigSettings: documented defaults, bad values refused with their field, the factory."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.remote import (
    ConfigMapWatcher,
    DirectoryWatcher,
    RemoteConfigSettings,
    make_source,
)


def test_settings_defaults_are_off_and_documented() -> None:
    """Remote configuration is off by default; the defaults are those in the reference."""
    settings = RemoteConfigSettings()
    assert settings.mode == "none"
    assert settings.directory == Path("/etc/edge-agent")
    assert settings.config_key == "agent.yaml"
    assert settings.debounce_secs == 1.0
    assert settings.poll_interval_secs == 10.0
    assert settings.namespace is None
    assert settings.configmap_name is None
    assert settings.request_timeout_secs == 10.0
    assert settings.watch_timeout_secs == 300
    assert settings.backoff_initial_secs == 1.0
    assert settings.backoff_max_secs == 60.0
    assert settings.restart_on_restart_only_change is False


def test_settings_every_field_is_described() -> None:
    """Every option carries a description (the reference documentation is generated from it)."""
    undescribed = [
        name for name, info in RemoteConfigSettings.model_fields.items() if not info.description
    ]
    assert undescribed == []


def test_settings_api_mode_needs_a_configmap_name() -> None:
    """mode 'api' without configmap_name is refused at load, naming the missing option."""
    with pytest.raises(ValidationError, match="mode 'api' needs configmap_name"):
        RemoteConfigSettings(mode="api")
    assert RemoteConfigSettings(mode="api", configmap_name="edge-agent").namespace is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mode", "etcd"),
        ("debounce_secs", -0.5),
        ("poll_interval_secs", 0),
        ("poll_interval_secs", float("inf")),
        ("request_timeout_secs", 0),
        ("watch_timeout_secs", 0),
        ("watch_timeout_secs", 1.5),
        ("configmap_name", "Edge_Agent"),
        ("namespace", "Edge"),
        ("config_key", "conf/agent.yaml"),
        ("backoff_initial_secs", 0),
        ("poll_interval", 5),
    ],
)
def test_settings_bad_value_is_rejected_with_its_field(field: str, value: object) -> None:
    """An invalid value or an unknown option fails validation and names the field."""
    with pytest.raises(ValidationError) as raised:
        RemoteConfigSettings.model_validate({field: value})
    assert [error["loc"] for error in raised.value.errors()] == [(field,)]


def test_settings_backoff_cap_below_start_is_refused() -> None:
    """backoff_max_secs below backoff_initial_secs is a contradiction, refused at load."""
    with pytest.raises(ValidationError, match="backoff_max_secs"):
        RemoteConfigSettings(backoff_initial_secs=5, backoff_max_secs=1)


def test_settings_are_frozen() -> None:
    """Settings cannot change after load."""
    settings = RemoteConfigSettings()
    with pytest.raises(ValidationError):
        settings.mode = "directory"  # type: ignore[misc]


def test_make_source_builds_the_chosen_watcher(tmp_path: Path) -> None:
    """'none' gives no source, 'directory' a DirectoryWatcher, 'api' a ConfigMapWatcher."""
    assert make_source(RemoteConfigSettings()) is None
    directory = make_source(RemoteConfigSettings(mode="directory", directory=tmp_path))
    assert isinstance(directory, DirectoryWatcher)
    assert directory.source == f"directory:{tmp_path}"
    api = make_source(RemoteConfigSettings(mode="api", configmap_name="edge-agent"))
    assert isinstance(api, ConfigMapWatcher)

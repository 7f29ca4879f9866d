"""docs/reference/configuration.md is generated from the models and must be current."""

from __future__ import annotations

from agent._config.schema import options
from agent.config import AgentSettings
from scripts.gen_config_docs import COMMAND, TARGET, render


def test_config_docs_reference_is_current():
    """The committed reference equals what scripts/gen_config_docs.py writes now."""
    current = TARGET.read_text(encoding="utf-8") if TARGET.is_file() else ""
    assert current == render(), f"{TARGET.name} is out of date: run {COMMAND}"


def test_config_docs_every_option_is_described_and_listed():
    """Every option has a description and appears with its env var and reload class."""
    text = render()
    for option in options(AgentSettings):
        assert option.field.description, option.path
        assert f"#### `{option.path}`" in text
        assert f"`{option.env_name}`" in text

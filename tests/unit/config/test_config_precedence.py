"""Precedence: defaults < file < environment < flags, option by option, sections merged."""

from __future__ import annotations

import itertools

import pytest

from agent.config import AgentSettings, Override, load_config, load_settings

LAYERS = ("file", "env", "flag")
VALUES = {"file": 11, "env": 22, "flag": 33}


def _load(write_config, layers, path="kafka.linger_ms"):
    section, _, name = path.rpartition(".")
    file_text = ""
    if "file" in layers:
        file_text = f"{section}:\n  {name}: {VALUES['file']}\n" if section else f"{name}: 11\n"
    env = {}
    if "env" in layers:
        env["EDGE_AGENT_" + path.upper().replace(".", "__")] = str(VALUES["env"])
    overrides = [Override.parse(f"{path}={VALUES['flag']}")] if "flag" in layers else []
    return load_config(write_config(file_text), overrides, environ=env)


@pytest.mark.parametrize(
    "layers",
    [combo for n in range(len(LAYERS) + 1) for combo in itertools.combinations(LAYERS, n)],
    ids=lambda combo: "+".join(combo) or "defaults",
)
@pytest.mark.parametrize("path", ["kafka.linger_ms", "pipeline.min_quality"])
def test_load_config_highest_source_wins_for_every_combination(write_config, layers, path):
    """Every subset of file/env/flag: the highest one present sets the value and is named."""
    loaded = _load(write_config, layers, path)
    section, _, name = path.rpartition(".")
    value = getattr(getattr(loaded.settings, section), name)
    if not layers:
        assert value == getattr(AgentSettings.model_fields[section].default_factory(), name)
        assert loaded.source_of(path).kind == "default"
        assert path not in loaded.sources
    else:
        top = max(layers, key=LAYERS.index)
        assert value == VALUES[top]
        assert loaded.source_of(path).kind == top


@pytest.mark.parametrize(
    ("low", "high"), list(itertools.combinations(("default", *LAYERS), 2)), ids=str
)
def test_load_config_each_pair_of_sources_is_ordered(write_config, low, high):
    """For each pair of sources, the higher one wins on a top-level option too."""
    layers = tuple(layer for layer in (low, high) if layer != "default")
    file_text = "report_interval_secs: 11\n" if "file" in layers else ""
    env = {"EDGE_AGENT_REPORT_INTERVAL_SECS": "22"} if "env" in layers else {}
    overrides = {"report_interval_secs": 33} if "flag" in layers else {}
    loaded = load_config(write_config(file_text), overrides, environ=env)
    expected = {"file": 11, "env": 22, "flag": 33}[high]
    assert loaded.settings.report_interval_secs == expected
    assert loaded.source_of("report_interval_secs").kind == high


def test_load_config_env_overrides_one_nested_option_and_keeps_file_siblings(write_config):
    """An env var for kafka.linger_ms leaves the file's other kafka options in place."""
    path = write_config(
        "kafka:\n  bootstrap_servers: 'k1:9092,k2:9092'\n  linger_ms: 50\n  client_id: line-3\n"
    )
    loaded = load_config(path, environ={"EDGE_AGENT_KAFKA__LINGER_MS": "5"})
    kafka = loaded.settings.kafka
    assert (kafka.bootstrap_servers, kafka.linger_ms, kafka.client_id) == (
        "k1:9092,k2:9092",
        5,
        "line-3",
    )
    assert loaded.source_of("kafka.linger_ms").label == "env EDGE_AGENT_KAFKA__LINGER_MS"
    assert loaded.source_of("kafka.client_id").label == f"file {path}, line 4"


def test_load_config_flag_overrides_one_deeply_nested_option(write_config):
    """--set pipeline.topics.dlq keeps the file's other topics and the env's siblings."""
    path = write_config("pipeline:\n  topics:\n    normalized: n\n    raw: r\n    dlq: d\n")
    loaded = load_config(
        path,
        [Override.parse("pipeline.topics.dlq=dead")],
        environ={"EDGE_AGENT_PIPELINE__TOPICS__RAW": "raw-env"},
    )
    topics = loaded.settings.pipeline.topics
    assert (topics.normalized, topics.raw, topics.dlq) == ("n", "raw-env", "dead")
    assert loaded.source_of("pipeline.topics.dlq").label == "flag --set pipeline.topics.dlq"


def test_load_config_env_option_beats_env_section_json(write_config):
    """EDGE_AGENT_KAFKA__LINGER_MS wins over linger_ms inside EDGE_AGENT_KAFKA's JSON."""
    env = {
        "EDGE_AGENT_KAFKA": '{"linger_ms": 1, "client_id": "from-json"}',
        "EDGE_AGENT_KAFKA__LINGER_MS": "2",
    }
    loaded = load_config(write_config("kafka:\n  compression: lz4\n"), environ=env)
    kafka = loaded.settings.kafka
    assert (kafka.linger_ms, kafka.client_id, kafka.compression) == (2, "from-json", "lz4")
    assert loaded.source_of("kafka.client_id").label == "env EDGE_AGENT_KAFKA"


def test_load_config_option_value_is_replaced_whole(write_config):
    """A list or mapping option from a higher source replaces the lower one, not merged."""
    path = write_config(
        "pipeline:\n  field_map: {value: v, ts: t}\nmqtt:\n  subscriptions: [a/#]\n"
    )
    loaded = load_config(
        path,
        environ={
            "EDGE_AGENT_PIPELINE__FIELD_MAP": '{"unit": "u"}',
            "EDGE_AGENT_MQTT__SUBSCRIPTIONS": '["b/#", "c/#"]',
        },
    )
    assert loaded.settings.pipeline.field_map == {"unit": "u"}
    assert loaded.settings.mqtt.subscriptions == ("b/#", "c/#")


def test_load_config_later_flag_wins_and_shortcut_beats_set(write_config):
    """Repeated --set: the last wins; overrides are applied in the order given."""
    loaded = load_config(
        write_config(""),
        [
            Override.parse("gateway_id=first"),
            Override.parse("gateway_id=second"),
            Override("gateway_id", "shortcut", "--gateway-id"),
        ],
        environ={},
    )
    assert loaded.settings.gateway_id == "shortcut"
    assert loaded.source_of("gateway_id").label == "flag --gateway-id"


def test_load_config_env_number_literal_is_decoded(write_config):
    """EDGE_AGENT_MQTT__QOS=0 means the number 0 (text from the environment is coerced)."""
    loaded = load_config(write_config(""), environ={"EDGE_AGENT_MQTT__QOS": "0"})
    assert loaded.settings.mqtt.qos == 0


def test_load_config_env_names_are_case_insensitive(write_config):
    """edge_agent_log_level works like EDGE_AGENT_LOG_LEVEL, as pydantic-settings reads it."""
    loaded = load_config(write_config(""), environ={"edge_agent_log_level": "DEBUG"})
    assert loaded.settings.log_level == "DEBUG"
    assert loaded.source_of("log_level").label == "env edge_agent_log_level"


def test_load_config_empty_section_means_defaults(write_config):
    """`mqtt:` with everything under it commented out is the defaults, not an error."""
    loaded = load_config(write_config("mqtt:\n#  host: x\n"), environ={})
    assert loaded.settings.mqtt.host == "127.0.0.1"


def test_load_config_reads_yaml_text_with_named_origin():
    """text= (a ConfigMap's agent.yaml) is a file source named by origin in messages."""
    loaded = load_config(text="kafka:\n  linger_ms: 7\n", origin="configmap:edge/x@5", environ={})
    assert loaded.settings.kafka.linger_ms == 7
    assert loaded.source_of("kafka.linger_ms").label == "file configmap:edge/x@5, line 2"


def test_load_settings_accepts_mapping_overrides_with_dotted_paths(write_config):
    """load_settings(path, {...}) keeps working for callers; keys may be dotted or sections."""
    settings = load_settings(
        write_config("kafka:\n  linger_ms: 7\n"),
        {"gateway_id": "gw-1", "kafka.client_id": "c", "spool": {"max_size_bytes": 4096}},
        environ={},
    )
    assert (settings.gateway_id, settings.kafka.client_id, settings.kafka.linger_ms) == (
        "gw-1",
        "c",
        7,
    )
    assert settings.spool.max_size_bytes == 4096


def test_load_settings_reads_os_environ_by_default(write_config, monkeypatch):
    """Without environ=, the process environment is read."""
    monkeypatch.setenv("EDGE_AGENT_GATEWAY_ID", "from-os-env")
    assert load_settings(write_config("")).gateway_id == "from-os-env"


def test_agent_settings_direct_construction_matches_load_for_env(monkeypatch, tmp_path):
    """AgentSettings() (pydantic-settings alone) and load_settings agree on the environment."""
    env = {
        "EDGE_AGENT_GATEWAY_ID": "gw-env",
        "EDGE_AGENT_KAFKA__LINGER_MS": "25",
        "EDGE_AGENT_MQTT__SUBSCRIPTIONS": '["x/#"]',
        "EDGE_AGENT_PIPELINE__FIELD_MAP": '{"value": "v"}',
        "EDGE_AGENT_SPOOL__DIRECTORY": str(tmp_path / "spool"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert AgentSettings() == load_settings(environ=env)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kafka.linger_ms=20", 20),
        ("mqtt.subscriptions=[a/#, b/#]", ["a/#", "b/#"]),
        ("mqtt.client_id=", None),
        ('gateway_id="007"', "007"),
        ("gateway_id=line 3", "line 3"),
        ("kafka.bootstrap_servers=k1:9092,k2:9092", "k1:9092,k2:9092"),
        ("pipeline.field_map={value: v}", {"value": "v"}),
        ("mqtt.password=a=b", "a=b"),
    ],
)
def test_override_parse_reads_value_as_yaml(text, expected):
    """--set VALUE is YAML: numbers, lists, null and quoted strings as in the file."""
    override = Override.parse(text)
    assert override.value == expected
    assert override.flag == f"--set {override.path}"


@pytest.mark.parametrize("text", ["kafka.linger_ms", "=5", "kafka..linger_ms=5", "1a=2", "a b=1"])
def test_override_parse_rejects_malformed_flag(text):
    """Not PATH=VALUE with a dotted path of names: ValueError (a usage error)."""
    with pytest.raises(ValueError, match="expected PATH=VALUE"):
        Override.parse(text)

"""The systemd unit is valid, as hardened as promised, and its sandbox still runs the agent.

``systemd-analyze`` (Debian package ``systemd``, installed by ``scripts/setup``) checks the unit
offline; without it the tests fail, never skip. There is no systemd as PID 1 here, so:

* ``verify`` runs on a copy whose ``/opt/edge-agent/bin/edge-agent`` is this virtualenv's
  ``edge-agent``: verify insists that every ``Exec*=`` program exists, and nothing is installed
  in /opt on a development machine. Nothing else in the copy differs.
* the sandbox is checked by running the agent under ``_sandbox.py``, which applies the unit's
  ``MemoryDenyWriteExecute``, ``SystemCallFilter`` and ``RestrictAddressFamilies`` with the same
  kernel mechanisms systemd uses.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from agent.app import SHUTDOWN_MARGIN_SECS
from agent.config import AgentSettings
from agent.spool import SpoolSettings

ROOT = Path(__file__).resolve().parents[3]
UNIT = ROOT / "systemd" / "edge-agent.service"
EXAMPLE = ROOT / "systemd" / "agent.yaml.example"
DEFAULTS = ROOT / "systemd" / "edge-agent.default"
HERE = Path(__file__).parent
INSTALLED = "/opt/edge-agent/bin/edge-agent"
CONFIG = "/etc/edge-agent/agent.yaml"

MAX_EXPOSURE = 1.1
"""`systemd-analyze security` score reached on systemd 252 ("OK"); it may only go down."""


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze; fail with the set-up hint when it is missing."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail(
            "systemd-analyze is missing: run scripts/setup (it installs the Debian package "
            "`systemd`, which ships it); the systemd unit tests never skip",
            pytrace=False,
        )
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, check=False, timeout=120
    )


def unit_settings() -> dict[str, list[str]]:
    """Key -> every value it is given in the unit, in order (systemd keys may repeat)."""
    settings: dict[str, list[str]] = defaultdict(list)
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings[key].append(value)
    return settings


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)\s*(s|min)?", value)
    assert match, f"not a simple time span: {value}"
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    """A copy of the unit whose Exec paths point at this virtualenv's edge-agent."""
    edge_agent = Path(sys.executable).parent / "edge-agent"
    assert edge_agent.is_file(), "edge-agent is not installed in this virtualenv (pip install -e .)"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED, str(edge_agent)))
    return copy


# ---------------------------------------------------------------- systemd-analyze
def test_systemd_unit_verifies(verifiable_unit):
    """`systemd-analyze verify` accepts the unit without a single warning."""
    proc = systemd_analyze("verify", "--man=no", str(verifiable_unit))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_systemd_unit_verify_catches_mistakes(tmp_path, verifiable_unit):
    """The verify check has teeth: a misspelt key in the unit makes it complain."""
    broken = tmp_path / "broken" / UNIT.name
    broken.parent.mkdir()
    broken.write_text(verifiable_unit.read_text().replace("KillMode=", "KilMode="))
    proc = systemd_analyze("verify", "--man=no", str(broken))
    assert "Unknown key 'KilMode'" in proc.stderr


def test_systemd_unit_security_exposure_stays_ok(verifiable_unit):
    """`systemd-analyze security --offline` rates the unit at most 1.1 ("OK")."""
    proc = systemd_analyze(
        "security",
        "--offline=yes",
        f"--threshold={round(MAX_EXPOSURE * 10)}",
        "--no-pager",
        str(verifiable_unit),
    )
    match = re.search(
        r"Overall exposure level for edge-agent\.service: (\d+\.\d+) (\w+)", proc.stdout
    )
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, match.group(0)
    assert proc.returncode == 0, match.group(0)


# ---------------------------------------------------------------- the unit's contents
def test_systemd_unit_runs_agent_as_notify_service_with_watchdog():
    """Type=notify with a watchdog; config checked before start and before every reload."""
    unit = unit_settings()
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert unit["WatchdogSec"] == ["30"]
    check = f"{INSTALLED} check-config --quiet --config {CONFIG}"
    assert unit["ExecStartPre"] == [check]
    assert unit["ExecStart"] == [f"{INSTALLED} run --config {CONFIG}"]
    assert unit["ExecReload"] == [check, "/bin/kill -HUP $MAINPID"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["EnvironmentFile"] == ["-/etc/default/edge-agent"]


def test_systemd_unit_stop_timeout_outlasts_drain():
    """SIGTERM to the agent alone, and SIGKILL only after the agent's whole bounded shutdown."""
    unit = unit_settings()
    assert unit["KillSignal"] == ["SIGTERM"]
    assert unit["KillMode"] == ["mixed"]
    drain = AgentSettings.model_fields["drain_timeout_secs"].default
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert example["drain_timeout_secs"] == drain
    assert seconds(unit["TimeoutStopSec"][0]) > drain + SHUTDOWN_MARGIN_SECS


def test_systemd_unit_keeps_spool_in_state_directory():
    """The spool lives in StateDirectory (kept across restarts), the only writable path."""
    unit = unit_settings()
    assert unit["User"] == ["edge-agent"]
    assert "DynamicUser" not in unit
    assert unit["StateDirectory"] == ["edge-agent"]
    assert unit["ConfigurationDirectory"] == ["edge-agent"]
    assert unit["ReadWritePaths"] == ["/var/lib/edge-agent"]
    spool = SpoolSettings().directory
    assert str(spool).startswith("/var/lib/edge-agent/")
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert example["spool"]["directory"] == str(spool)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("UMask", "077"),
    ],
)
def test_systemd_unit_hardening(key, value):
    """Each hardening setting is present exactly once with the promised value."""
    assert unit_settings()[key] == [value]


def test_systemd_unit_system_call_filter():
    """@system-service minus @privileged and @resources, failing with EPERM."""
    unit = unit_settings()
    assert unit["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert unit["SystemCallErrorNumber"] == ["EPERM"]


# ---------------------------------------------------------------- the sandbox runs the agent
def _syscall_groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    text = systemd_analyze("syscall-filter", "--no-pager").stdout
    for line in text.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith(" ") and not line.strip().startswith("#") and line.strip():
            current.append(line.strip())
    return groups


def allowed_syscalls() -> list[str]:
    """The unit's SystemCallFilter expanded to names, as systemd does (@default always in)."""
    groups = _syscall_groups()

    def expand(items: list[str]) -> set[str]:
        names: set[str] = set()
        for item in items:
            names |= expand(groups[item]) if item.startswith("@") else {item}
        return names

    allow, deny = {"@default"}, set()
    for entry in unit_settings()["SystemCallFilter"]:
        if entry.startswith("~"):
            deny |= set(entry[1:].split())
        else:
            allow |= set(entry.split())
    return sorted(expand(sorted(allow)) - expand(sorted(deny)))


def _smoke(tmp_path: Path, *, sandboxed: bool) -> dict[str, object]:
    config = tmp_path / ("sandboxed" if sandboxed else "plain")
    config.mkdir()
    (config / "agent.yaml").write_text(
        yaml.safe_dump(
            {
                "gateway_id": "smoke",
                # Nothing listens on these ports: the agent retries while it runs.
                "mqtt": {"host": "localhost", "port": 1, "reconnect_max_secs": 1},
                "kafka": {"bootstrap_servers": "localhost:2"},
                "spool": {"directory": str(config / "spool")},
                # Port 0: the default 9810 may be taken by another agent on this machine.
                "http": {"listen_host": "127.0.0.1", "port": 0},
            }
        )
    )
    command = [sys.executable, str(HERE / "_agent_smoke.py"), str(config / "agent.yaml"), "2"]
    if sandboxed:
        allowed = tmp_path / "allowed-syscalls.txt"
        allowed.write_text("\n".join(allowed_syscalls()))
        command = [sys.executable, str(HERE / "_sandbox.py"), str(allowed), *command]
    proc = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=60, cwd=ROOT
    )
    if proc.returncode == 3 and "PR_SET_MDWE" in proc.stderr:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+) to emulate MemoryDenyWriteExecute")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (config / "spool").is_dir(), "the agent did not open its spool"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_systemd_sandbox_still_runs_agent_on_uvloop(tmp_path):
    """Under MemoryDenyWriteExecute and the unit's filters the agent starts, spools and drains."""
    plain = _smoke(tmp_path, sandboxed=False)
    assert plain == {
        "write_execute_mapping": "allowed",
        "sched_setaffinity": "allowed",
        "netlink_socket": "allowed",
        "native_extensions": "ok",
        "agent_exit": 0,
    }
    sandboxed = _smoke(tmp_path, sandboxed=True)
    # The sandbox bites (so the run below proves something) ...
    assert sandboxed["write_execute_mapping"] in {"EACCES", "EPERM"}
    assert sandboxed["sched_setaffinity"] == "EPERM"
    assert sandboxed["netlink_socket"] == "EPERM"
    # ... and CPython, uvloop, SQLite, paho, aiokafka still work inside it.
    assert sandboxed["native_extensions"] == "ok"
    assert sandboxed["agent_exit"] == 0


def test_systemd_sysusers_creates_service_user(tmp_path):
    """systemd/edge-agent.sysusers makes the system user the unit runs as, without a login."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\n")
    if shutil.which("systemd-sysusers") is None:
        pytest.fail("systemd-sysusers is missing: run scripts/setup (Debian package `systemd`)")
    proc = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(ROOT / "systemd" / "edge-agent.sysusers")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    users = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
    }
    _, _, uid, gid, _, home, shell = users[unit_settings()["User"][0]]
    assert (home, shell) == ("/var/lib/edge-agent", "/usr/sbin/nologin")
    assert 0 < int(uid) < 1000
    assert uid == gid


# ---------------------------------------------------------------- example files
def test_systemd_example_config_passes_check_config(check_config):
    """systemd/agent.yaml.example is accepted by `edge-agent check-config`."""
    proc, effective = check_config(EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    assert effective["spool"]["directory"] == "/var/lib/edge-agent/spool"


_COMMENTED_OPTION = re.compile(r"^(\s*)# ([a-z_]+:(?: |$).*)$")


def _option_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            paths |= _option_paths(kind, f"{prefix}{name}.")
        else:
            paths.add(f"{prefix}{name}")
    return paths


def _yaml_paths(node: object, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            paths.add(f"{prefix}{key}")
            paths |= _yaml_paths(value, f"{prefix}{key}.")
    return paths


def test_systemd_example_config_shows_every_option():
    """Every option of the agent appears in the example, set or as a `# key: value` line."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    uncommented = [_COMMENTED_OPTION.sub(r"\1\2", line) for line in lines]
    shown = _yaml_paths(yaml.safe_load("\n".join(uncommented)))
    secrets_inline = {"mqtt.password", "kafka.sasl_password"}  # named in prose: use the *_file
    missing = _option_paths(AgentSettings) - shown - secrets_inline
    assert missing == set()


def test_systemd_default_file_names_only_real_options(check_config):
    """Every EDGE_AGENT_* line of edge-agent.default names an option (typos would be ignored)."""
    env: dict[str, str] = {}
    for line in DEFAULTS.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"#?(EDGE_AGENT_[A-Z0-9_]+)=(.*)", line.strip())
        if match:
            env[match.group(1)] = match.group(2)
    assert env, "no EDGE_AGENT_ variables in the example environment file"
    options = _option_paths(AgentSettings)
    for name in env:
        path = name.removeprefix("EDGE_AGENT_").lower().replace("__", ".")
        assert path in options, f"{name} is not an option ({path})"
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    # The example's username: the password files in the env file need one.
    config["mqtt"]["username"] = "edge-agent"
    config["kafka"].update(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u")
    proc, effective = check_config(config, env)
    assert proc.returncode == 0, proc.stderr
    assert effective["gateway_id"] == env["EDGE_AGENT_GATEWAY_ID"]

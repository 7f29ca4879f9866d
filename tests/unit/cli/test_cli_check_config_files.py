"""`check-config` checks every file the configuration names and fails with the option's name."""

from __future__ import annotations

import json
import subprocess

import pytest

from agent._config.files import file_options
from agent._config.schema import options
from agent.cli import EX_NOINPUT, main
from agent.config import AgentSettings


def check(capsys, *args):
    code = main(["check-config", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return code, out, err


def test_file_options_are_every_file_path_option():
    """The check covers every *_file option, including ones added later, and only those."""
    named_file = {o.path for o in options(AgentSettings) if o.name.endswith("_file")}
    assert set(file_options(AgentSettings)) == named_file
    assert named_file >= {
        "mqtt.password_file",
        "mqtt.ca_file",
        "mqtt.cert_file",
        "mqtt.key_file",
        "kafka.sasl_password_file",
        "kafka.ssl_ca_file",
        "kafka.ssl_cert_file",
        "kafka.ssl_key_file",
    }


def test_check_config_quiet_prints_nothing_when_valid(cli, config_file):
    """--quiet (what the systemd unit runs): exit 0, no output at all."""
    proc = cli("check-config", "--quiet", "--config", config_file())
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_check_config_quiet_still_reports_problems(cli, config_file, tmp_path):
    """--quiet hides the effective configuration, never a problem."""
    path = config_file(mqtt={"username": "u", "password_file": str(tmp_path / "nope")})
    proc = cli("check-config", "--quiet", "--config", path)
    assert proc.returncode == EX_NOINPUT
    assert proc.stdout == ""
    assert "mqtt.password_file" in proc.stderr


def test_check_config_missing_password_file_exits_66_naming_field(capsys, config_file, tmp_path):
    """A missing mqtt.password_file (the unit's start gate): 66, field, path, source, fix."""
    missing = tmp_path / "mqtt-password"
    path = config_file(mqtt={"username": "u", "password_file": str(missing)})
    code, out, err = check(capsys, "--config", path)
    assert (code, out) == (EX_NOINPUT, "")
    assert err.startswith(f"edge-agent: mqtt.password_file = {missing} (from file {path}, line ")
    assert err.endswith("does not exist; check the path, or create the file\n")


def test_check_config_reports_every_bad_file_at_once(capsys, config_file, tmp_path):
    """Several bad files: one line each, all of them."""
    path = config_file(
        mqtt={"username": "u", "password_file": str(tmp_path / "a"), "tls": True,
              "ca_file": str(tmp_path)},
        kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u",
               "sasl_password_file": str(tmp_path / "b")},
    )  # fmt: skip
    code, _, err = check(capsys, "--config", path)
    assert code == EX_NOINPUT
    fields = [line.split()[1] for line in err.splitlines()]
    assert fields == ["mqtt.password_file", "mqtt.ca_file", "kafka.sasl_password_file"]
    assert f"mqtt.ca_file = {tmp_path}" in err
    assert "is a directory, not a file; name the file in it" in err


def test_check_config_unreadable_file_exits_66(capsys, config_file, tmp_path, monkeypatch):
    """Permission denied (faked: the tests may run as root): 66 and who must be able to read."""
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    path = config_file(mqtt={"username": "u", "password_file": str(secret)})
    real_open = type(secret).open

    def denied(self, *args, **kwargs):
        if self == secret:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(type(secret), "open", denied)
    code, _, err = check(capsys, "--config", path)
    assert code == EX_NOINPUT
    assert "mqtt.password_file" in err
    assert "cannot be read by user id" in err
    assert "make it readable by the user the agent runs as" in err


def test_check_config_accepts_real_certificates(capsys, config_file, tls):
    """A CA bundle, a client certificate and its key made by openssl: valid."""
    path = config_file(
        mqtt={"tls": True, "ca_file": str(tls.ca), "cert_file": str(tls.client_cert),
              "key_file": str(tls.client_key)},
        kafka={"security_protocol": "SSL", "ssl_ca_file": str(tls.ca),
               "ssl_cert_file": str(tls.client_cert), "ssl_key_file": str(tls.client_key)},
    )  # fmt: skip
    code, _, err = check(capsys, "--quiet", "--config", path)
    assert (code, err) == (0, "")


def test_check_config_certificate_with_the_wrong_key_exits_66(capsys, config_file, tls):
    """A client certificate with another certificate's key: 66, the certificate option named."""
    path = config_file(
        mqtt={"tls": True, "ca_file": str(tls.ca), "cert_file": str(tls.client_cert),
              "key_file": str(tls.server_key)},
    )  # fmt: skip
    code, _, err = check(capsys, "--config", path)
    assert code == EX_NOINPUT
    assert err.startswith(f"edge-agent: mqtt.cert_file = {tls.client_cert}")
    assert "does not load with its key" in err


def test_check_config_encrypted_key_exits_66_without_prompting(capsys, config_file, tls, tmp_path):
    """An encrypted key: refused (the agent has no passphrase), never a terminal prompt."""
    encrypted = tmp_path / "client-encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(tls.client_key), "-aes256", "-passout", "pass:x",
         "-out", str(encrypted)],
        check=True, capture_output=True,
    )  # fmt: skip
    path = config_file(
        mqtt={"tls": True, "cert_file": str(tls.client_cert), "key_file": str(encrypted)}
    )
    code, _, err = check(capsys, "--config", path)
    assert code == EX_NOINPUT
    assert "mqtt.cert_file" in err
    assert "encrypted key" in err


def test_check_config_remote_config_directory_must_exist_in_directory_mode(
    capsys, config_file, tmp_path
):
    """remote_config.mode=directory with a directory that is not there: 66, naming it."""
    missing = tmp_path / "configmap"
    path = config_file(remote_config={"mode": "directory", "directory": str(missing)})
    code, _, err = check(capsys, "--config", path)
    assert code == EX_NOINPUT
    assert f"remote_config.directory = {missing}" in err
    missing.mkdir()
    assert check(capsys, "--quiet", "--config", path)[:2] == (0, "")


def test_check_config_file_problems_as_json(capsys, config_file, tmp_path):
    """--format json: file problems in the same document as configuration problems."""
    missing = tmp_path / "ca.pem"
    path = config_file(kafka={"security_protocol": "SSL", "ssl_ca_file": str(missing)})
    code, out, _ = check(capsys, "--format", "json", "--config", path)
    assert code == EX_NOINPUT
    document = json.loads(out)
    assert document["valid"] is False
    assert [(e["path"], e["message"]) for e in document["errors"]] == [
        ("kafka.ssl_ca_file", "does not exist")
    ]


@pytest.mark.parametrize("flag", ["--no-check-files"])
def test_check_config_can_skip_the_file_checks(capsys, config_file, tmp_path, flag):
    """--no-check-files (CI, away from the machine with the files): configuration only."""
    path = config_file(mqtt={"username": "u", "password_file": str(tmp_path / "nope")})
    assert check(capsys, flag, "--quiet", "--config", path)[:3] == (0, "", "")

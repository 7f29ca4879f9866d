"""`edge-agent run` start-up failures: one line on stderr, a distinct exit code, no traceback."""

from __future__ import annotations

import gc
import socket
import warnings

from agent.cli import EX_CANTCREAT, EX_CONFIG, EX_NOINPUT, EX_UNAVAILABLE, main
from agent.errors import PermanentError
from agent.spool import Spool


def assert_one_line(stderr: str) -> str:
    """Exactly one line, prefixed `edge-agent: `, and no Python traceback or warning."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("edge-agent: ")
    assert "Traceback" not in stderr
    assert "never awaited" not in stderr
    return lines[0]


def test_run_spool_directory_that_cannot_be_created_exits_73(cli, config_file, tmp_path):
    """A spool path below a regular file: exit 73 (EX_CANTCREAT), the path and the fix."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    path = config_file(spool={"directory": str(blocker / "spool")})
    proc = cli("run", "--config", path)
    assert proc.returncode == EX_CANTCREAT
    line = assert_one_line(proc.stderr)
    assert f"Cannot create the spool directory {blocker / 'spool'} (Not a directory" in line
    assert "set spool.directory" in line


def test_run_spool_directory_without_permission_exits_73(config_file, monkeypatch, capsys):
    """Permission denied creating the spool (faked: tests may run as root): 73 and the fix."""
    path = config_file()

    def denied(self, *_args, **_kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr("pathlib.Path.mkdir", denied)
    assert main(["run", "--config", str(path)]) == EX_CANTCREAT
    line = assert_one_line(capsys.readouterr().err)
    assert "(Permission denied)" in line
    assert "StateDirectory=" in line


def test_run_http_port_in_use_exits_69_naming_the_port(cli, config_file):
    """Another process listens on http.port: exit 69 (EX_UNAVAILABLE), address and fix."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = config_file(http={"enabled": True, "listen_host": "127.0.0.1", "port": port})
        proc = cli("run", "--config", path)
    assert proc.returncode == EX_UNAVAILABLE
    line = assert_one_line(proc.stderr)
    assert f"Cannot listen on 127.0.0.1:{port} for /metrics and health" in line
    assert "set http.port to a free port" in line


def test_run_missing_ca_file_exits_66_naming_the_option(cli, config_file, tmp_path):
    """mqtt.ca_file that does not exist: exit 66 (EX_NOINPUT), option, path and source."""
    missing = tmp_path / "ca.pem"
    path = config_file(mqtt={"tls": True, "ca_file": str(missing)})
    proc = cli("run", "--config", path)
    assert proc.returncode == EX_NOINPUT
    line = assert_one_line(proc.stderr)
    assert line.startswith(f"edge-agent: mqtt.ca_file = {missing} (from file {path}, line ")
    assert line.endswith("does not exist; check the path, or create the file")


def test_run_ca_file_that_is_not_pem_exits_66(cli, config_file, tmp_path):
    """A CA bundle with no certificate in it is a bad TLS file: exit 66 before connecting."""
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    path = config_file(kafka={"security_protocol": "SSL", "ssl_ca_file": str(bogus)})
    proc = cli("run", "--config", path)
    assert proc.returncode == EX_NOINPUT
    assert "kafka.ssl_ca_file" in assert_one_line(proc.stderr)
    assert "is not a PEM CA bundle" in proc.stderr


def test_run_without_kafka_address_exits_78(cli, tmp_path):
    """No kafka.bootstrap_servers anywhere: a configuration error, not 127.0.0.1:9092."""
    path = tmp_path / "agent.yaml"
    path.write_text(f"spool:\n  directory: {tmp_path / 'spool'}\n")
    proc = cli("run", "--config", path)
    assert proc.returncode == EX_CONFIG
    line = assert_one_line(proc.stderr)
    assert line.startswith("edge-agent: kafka.bootstrap_servers: is required and not set")
    assert "EDGE_AGENT_KAFKA__BOOTSTRAP_SERVERS" in line
    assert not (tmp_path / "spool").exists()  # refused before anything started


def test_run_component_failing_for_good_is_one_line_and_exit_1(config_file, monkeypatch, capsys):
    """A PermanentError once running: its sentence on one line, exit 1, no coroutine left
    un-awaited (the shutdown trigger of a task group that failed at once)."""

    async def damaged(_self):
        raise PermanentError("The spool database is damaged; move it aside.")

    monkeypatch.setattr(Spool, "open", damaged)
    monkeypatch.setattr("agent.logs.configure_logging", lambda *_: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["run", "--config", str(config_file())]) == 1
        gc.collect()
    assert assert_one_line(capsys.readouterr().err) == (
        "edge-agent: The spool database is damaged; move it aside."
    )
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_run_unexpected_error_is_one_line_with_a_pointer_to_debug(config_file, monkeypatch, capsys):
    """An error that is not the agent's own (a bug): type and message, exit 1, --debug hint."""

    async def broken(_self):
        raise KeyError("index")

    monkeypatch.setattr(Spool, "open", broken)
    monkeypatch.setattr("agent.logs.configure_logging", lambda *_: None)
    assert main(["run", "--config", str(config_file())]) == 1
    line = assert_one_line(capsys.readouterr().err)
    assert line == "edge-agent: KeyError: 'index' (run with --debug for the traceback)"


def test_run_with_debug_prints_the_traceback_and_keeps_the_exit_code(cli, config_file, tmp_path):
    """--debug on a start-up failure: the traceback, then the same line and exit code."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = config_file(spool={"directory": str(blocker / "spool")})
    proc = cli("--debug", "run", "--config", path)
    assert proc.returncode == EX_CANTCREAT
    assert "Traceback (most recent call last)" in proc.stderr
    assert "NotADirectoryError" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("edge-agent: Cannot create the spool directory")


def test_run_unexpected_error_with_debug_prints_its_traceback(config_file, monkeypatch, capsys):
    """--debug on an unexpected error: the traceback names it; exit 1."""

    async def broken(_self):
        raise KeyError("index")

    monkeypatch.setattr(Spool, "open", broken)
    monkeypatch.setattr("agent.logs.configure_logging", lambda *_: None)
    assert main(["run", "--debug", "--config", str(config_file())]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == "edge-agent: KeyError: 'index'"

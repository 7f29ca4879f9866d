"""Usage: no command or a wrong flag exits 2; every config-taking command takes --config."""

from __future__ import annotations

import pytest

from agent.cli import EX_USAGE, main


def test_cli_without_command_prints_usage_on_stderr_and_exits_2(cli):
    """Bare `edge-agent` is a usage error: the usage line and what to give, exit 2."""
    proc = cli()
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("usage: edge-agent ")
    assert "give a command: run, check-config or simulate" in proc.stderr


@pytest.mark.parametrize(
    "args", [["bogus"], ["run", "--no-such-flag"], ["check-config", "--format", "xml"]]
)
def test_cli_usage_error_exits_2(cli, args):
    """An unknown command, flag or choice exits 2 with argparse's one-line reason."""
    proc = cli(*args)
    assert proc.returncode == 2
    assert "error:" in proc.stderr.splitlines()[-1]


@pytest.mark.parametrize("position", ["before", "after"])
def test_cli_debug_flag_is_accepted_before_and_after_the_command(config_file, capsys, position):
    """--debug is global: `edge-agent --debug check-config` and `check-config --debug`."""
    path = config_file()
    args = ["check-config", "--quiet", "--config", str(path)]
    argv = ["--debug", *args] if position == "before" else [*args, "--debug"]
    assert main(argv) == 0
    assert capsys.readouterr() == ("", "")


def test_check_config_takes_the_file_as_config_flag_or_positional(config_file, capsys):
    """`check-config --config FILE` and the older `check-config FILE` check the same file."""
    path = config_file(log_level="DEBUG")
    assert main(["check-config", "--config", str(path)]) == 0
    with_flag = capsys.readouterr().out
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out == with_flag
    assert "log_level: DEBUG  # from file" in with_flag


def test_check_config_with_two_different_files_is_a_usage_error(config_file, tmp_path, capsys):
    """A positional FILE and a different --config FILE: exit 2, naming both."""
    path = config_file()
    other = tmp_path / "other.yaml"
    assert main(["check-config", str(path), "--config", str(other)]) == EX_USAGE
    err = capsys.readouterr().err
    assert err == (
        f"edge-agent: check-config got two files ({path} and --config {other}); give one\n"
    )

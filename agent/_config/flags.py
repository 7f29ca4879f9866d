"""The command-line flags that set options (``--set``, ``--gateway-id``, ``--log-level``, ...).

Shared by every sub-command that loads a configuration (``run``, ``check-config``,
``dry-run``), so each takes the same flags with the same meaning: they win over the file and
the environment, and the shortcuts win over ``--set``. This module imports nothing heavy, so
``--help`` stays fast; the YAML parsing happens in :func:`overrides`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from agent._config.sources import Override


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--set``, ``--gateway-id``, ``--log-level`` and ``--log-format`` to ``parser``."""
    parser.add_argument(
        "--set",
        dest="set_options",
        action="append",
        default=[],
        type=_set_flag,
        metavar="PATH=VALUE",
        help=(
            "set an option, e.g. --set kafka.linger_ms=20 or --set 'mqtt.subscriptions=[a/#]'; "
            "VALUE is read as YAML, as in the file; repeatable, the last one wins"
        ),
    )
    parser.add_argument("--gateway-id", help="set gateway_id (wins over --set)")
    parser.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="set log_level"
    )
    parser.add_argument("--log-format", choices=["json", "text"], help="set log_format")


def _set_flag(text: str) -> str:
    import argparse  # noqa: PLC0415 - only for the error type

    from agent._config.sources import split_set_flag  # noqa: PLC0415 - keep `--help` fast

    try:
        split_set_flag(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def overrides(args: argparse.Namespace) -> list[Override]:
    """The ``--set`` flags in order, then the shortcuts (which therefore win).

    Raises:
        InvalidConfigError: A --set VALUE is not YAML.
    """
    from agent._config.sources import Override  # noqa: PLC0415 - keep `--help` fast

    result = [Override.parse(text) for text in args.set_options]
    shortcuts = {
        "gateway_id": ("--gateway-id", args.gateway_id),
        "log_level": ("--log-level", args.log_level),
        "log_format": ("--log-format", args.log_format),
    }
    result.extend(
        Override(path, value, flag)
        for path, (flag, value) in shortcuts.items()
        if value is not None
    )
    return result

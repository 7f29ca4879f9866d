"""Operator commands: look into a spool, ask a running agent how it is doing.

- ``edge-agent spool stats|inspect|export``: a spool directory, read-only and safe while the
  agent runs (:mod:`agent.ops.spool_cmd`, :mod:`agent.ops._reader`).
- ``edge-agent status`` and ``edge-agent top``: the agent's ``/status`` endpoint in plain words
  (:mod:`agent.ops.status_cmd`).

``agent.cli`` registers them with :func:`add_parsers` and runs them with :func:`dispatch`; the
how-to is ``docs/how-to/operate.md``.

Exit codes: 0 success; 1 the spool or the agent cannot be read (one line on stderr); 2 usage
error; 3 and 4 from ``status`` (unhealthy; uplink down, see :mod:`agent.ops.status_cmd`); 78 the
configuration given with ``--config`` is invalid.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

COMMANDS: Final = frozenset({"spool", "status", "top"})
EXIT_FAILED: Final = 1
EX_CONFIG: Final = 78


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``spool``, ``status`` and ``top`` to the ``edge-agent`` sub-command parser."""
    spool = sub.add_parser(
        "spool",
        help="look into a spool directory (read-only, safe while the agent runs)",
        description=(
            "Read a spool directory without locking or changing it: safe while the agent runs. "
            "Give the directory with --spool-dir, or the agent's configuration with --config."
        ),
    )
    actions = spool.add_subparsers(dest="spool_command", metavar="ACTION", required=True)
    stats = actions.add_parser(
        "stats", help="size, records, ages, per-topic counts, quarantine, limits"
    )
    _add_spool_source(stats)
    _add_format(stats)
    inspect = actions.add_parser("inspect", help="list blocks (oldest first) and the quarantine")
    _add_spool_source(inspect)
    _add_format(inspect)
    inspect.add_argument(
        "--limit", type=_non_negative, default=50, metavar="N", help="blocks listed (0 = all)"
    )
    export = actions.add_parser("export", help="write the spooled records as JSON lines")
    _add_spool_source(export)
    export.add_argument(
        "--output", type=Path, metavar="FILE", help="write to FILE instead of stdout"
    )
    export.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="TOPIC",
        help="only records of this Kafka topic (repeatable)",
    )
    export.add_argument(
        "--limit", type=_non_negative, default=0, metavar="N", help="at most N records (0 = all)"
    )

    for name, text in (
        (
            "status",
            "ask a running agent how it is doing (exit 0 healthy, 3 unhealthy, 4 uplink down)",
        ),
        ("top", "a live view of a running agent's status; Ctrl-C quits"),
    ):
        parser = sub.add_parser(name, help=text, description=text)
        parser.add_argument(
            "--url",
            metavar="URL",
            help="the agent's HTTP endpoint (default: from --config, else http://127.0.0.1:9810)",
        )
        parser.add_argument(
            "--config", type=Path, metavar="FILE", help="the agent's YAML configuration file"
        )
        if name == "status":
            _add_format(parser)
        else:
            parser.add_argument(
                "--interval-secs",
                type=_positive,
                default=2.0,
                metavar="SECS",
                help="refresh period",
            )
            parser.add_argument(
                "--iterations",
                type=_non_negative,
                default=0,
                metavar="N",
                help="stop after N refreshes (0 = until Ctrl-C)",
            )


def _add_spool_source(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--spool-dir", type=Path, metavar="DIR", help="the spool directory")
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the agent's YAML configuration: its spool.directory, and limits to compare with",
    )


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=["text", "json"], default="text", help="text (default) or json"
    )


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def dispatch(args: argparse.Namespace) -> int | None:
    """Run the operator command ``args`` names; None when it is not one of them."""
    if args.command not in COMMANDS:
        return None
    from agent.ops import _run  # noqa: PLC0415 - keep `edge-agent --help` fast

    return _run.run(args)


__all__ = ["COMMANDS", "add_parsers", "dispatch"]

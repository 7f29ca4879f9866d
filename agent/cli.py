"""The ``edge-agent`` command line."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agent import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Forward MQTT telemetry to Kafka through a durable disk spool.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0

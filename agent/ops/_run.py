"""Run a parsed operator command: load the config when given, call the command, map errors."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from agent.ops import EX_CONFIG, EXIT_FAILED, spool_cmd, status_cmd
from agent.ops._reader import SpoolReadError

if TYPE_CHECKING:
    import argparse
    from pathlib import Path


class _ConfigProblemError(Exception):
    """The --config file is invalid; the problems were printed."""


EXIT_INTERRUPTED = 130


def run(args: argparse.Namespace) -> int:
    """Run ``args.command`` (``spool``, ``status`` or ``top``) and return the exit code.

    A reader that stops reading (``| head``) ends the command quietly with 0; Ctrl-C outside
    ``top`` ends it with 130, without a traceback.
    """
    try:
        return _run(args)
    except BrokenPipeError:
        # Python would complain again while flushing stdout at exit: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args.config)
    except _ConfigProblemError:
        return EX_CONFIG
    if args.command == "spool":
        return _spool(args, settings)
    target = status_cmd.target_for(args.url, settings)
    if args.command == "status":
        return status_cmd.run_status(
            target, output_format=args.format, out=sys.stdout, err=sys.stderr
        )
    return status_cmd.run_top(
        target, interval_secs=args.interval_secs, iterations=args.iterations, out=sys.stdout
    )


def _settings(path: Path | None) -> Any:  # noqa: ANN401 - AgentSettings, imported lazily
    if path is None:
        return None
    from agent.config import InvalidConfigError, load_config  # noqa: PLC0415 - slow import

    try:
        return load_config(path).settings
    except InvalidConfigError as exc:
        for problem in exc.problems:
            print(f"edge-agent: {problem}", file=sys.stderr)  # noqa: T201
        raise _ConfigProblemError from None


def _spool(args: argparse.Namespace, settings: Any) -> int:  # noqa: ANN401 - see _settings
    directory = args.spool_dir if settings is None else settings.spool.directory
    limits = None if settings is None else settings.spool
    try:
        if args.spool_command == "stats":
            summary = spool_cmd.collect_stats(directory, limits=limits)
            _emit(args.format, summary.to_json(), lambda: spool_cmd.render_stats(summary))
        elif args.spool_command == "inspect":
            inspection = spool_cmd.collect_inspection(directory, limit=args.limit)
            _emit(
                args.format, inspection.to_json(), lambda: spool_cmd.render_inspection(inspection)
            )
        else:
            return _export(args, directory)
    except SpoolReadError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_FAILED
    return 0


def _export(args: argparse.Namespace, directory: Path) -> int:
    output: Path | None = args.output
    if output is not None and output.resolve().is_relative_to(directory.resolve()):
        print(  # noqa: T201
            f"edge-agent: {output} is inside the spool directory; write the export elsewhere.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        with spool_cmd.open_output(output) as out:
            result = spool_cmd.export_records(directory, out, topics=args.topic, limit=args.limit)
    except BrokenPipeError:
        raise  # the reader stopped reading: see run()
    except OSError as exc:
        print(f"edge-agent: Cannot write the export: {exc}.", file=sys.stderr)  # noqa: T201
        return EXIT_FAILED
    skipped = []
    if result.vanished_blocks:
        skipped.append(f"{result.vanished_blocks} blocks delivered while reading")
    if result.unreadable_blocks:
        skipped.append(f"{result.unreadable_blocks} unreadable blocks")
    note = f" (skipped: {', '.join(skipped)})" if skipped else ""
    print(  # noqa: T201
        f"exported {result.records:,} records from {result.blocks:,} blocks{note}",
        file=sys.stderr,
    )
    return 0


def _emit(output_format: str, document: dict[str, Any], text: Any) -> None:  # noqa: ANN401
    import json  # noqa: PLC0415

    if output_format == "json":
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write(text())

"""The ``edge-agent`` command line: ``run``, ``check-config`` and ``simulate``.

Exit codes: 0 success, 1 failure at run time, 2 usage error, 78 bad configuration (EX_CONFIG).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

EX_CONFIG = 78
_log = logging.getLogger("agent.cli")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Forward MQTT telemetry to Kafka through a durable disk spool.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent until SIGTERM/SIGINT")
    run.add_argument("--config", type=Path, help="YAML configuration file")
    run.add_argument("--gateway-id", help="override gateway_id")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--log-format", choices=["json", "text"])

    check = sub.add_parser("check-config", help="validate a configuration and print it")
    check.add_argument("config", type=Path, nargs="?", help="YAML configuration file")

    sim = sub.add_parser("simulate", help="publish simulated sensor readings to MQTT")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=1883)
    sim.add_argument("--devices", type=int, default=10)
    sim.add_argument("--messages-per-device", type=int, default=100, help="0 = forever")
    sim.add_argument("--rate-per-device-hz", type=float, default=1.0, help="0 = flat out")
    sim.add_argument("--topic-prefix", default="plant/sim")
    sim.add_argument("--payload-bytes", type=int, default=256)
    sim.add_argument("--bad-every", type=int, default=0, help="every n-th message malformed")
    sim.add_argument("--device-offset", type=int, default=0)
    sim.add_argument("--connections", type=int, default=4)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "simulate":
        return _simulate(args)
    parser.print_help()
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {
        "gateway_id": args.gateway_id,
        "log_level": args.log_level,
        "log_format": args.log_format,
    }
    return {k: v for k, v in pairs.items() if v is not None}


def _run(args: argparse.Namespace) -> int:
    from agent.app import Agent  # noqa: PLC0415 - keep `--help` and check-config fast
    from agent.config import load_settings  # noqa: PLC0415
    from agent.logs import configure_logging  # noqa: PLC0415

    try:
        settings = load_settings(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)  # noqa: T201
        return EX_CONFIG
    configure_logging(settings.log_level, settings.log_format)

    async def main_task() -> int:
        shutdown = asyncio.Event()
        _install_signal_handlers(shutdown)
        return await Agent(settings).run(shutdown.wait())

    return _run_loop(main_task())


def _install_signal_handlers(shutdown: asyncio.Event) -> None:
    """First SIGTERM/SIGINT drains; a second one exits at once (what was acked is on disk)."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if shutdown.is_set():
            _log.warning("Second signal: exiting without draining.", extra={"signal": signum})
            logging.shutdown()
            os._exit(128 + signum)
        _log.info("Signal received: draining.", extra={"signal": signum})
        shutdown.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _check_config(args: argparse.Namespace) -> int:
    from agent.config import load_settings  # noqa: PLC0415

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)  # noqa: T201
        return EX_CONFIG
    print(settings.model_dump_json(indent=2))  # noqa: T201 - SecretStr prints masked
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from agent.simulate import SimulationSettings, Simulator  # noqa: PLC0415

    sim = Simulator(
        SimulationSettings(
            host=args.host,
            port=args.port,
            devices=args.devices,
            messages_per_device=args.messages_per_device,
            rate_per_device_hz=args.rate_per_device_hz,
            topic_prefix=args.topic_prefix,
            payload_bytes=args.payload_bytes,
            bad_every=args.bad_every,
            device_offset=args.device_offset,
            connections=args.connections,
        )
    )

    async def main_task() -> int:
        started = time.monotonic()
        try:
            await sim.run()
        finally:
            elapsed = time.monotonic() - started
            print(  # noqa: T201
                f"published {sim.published} messages ({sim.published_bad} malformed) in "
                f"{elapsed:.1f} s = {sim.published / max(elapsed, 1e-9):.0f} msg/s",
                file=sys.stderr,
            )
        return 0

    try:
        return _run_loop(main_task())
    except KeyboardInterrupt:
        return 130

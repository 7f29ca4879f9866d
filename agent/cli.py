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

from agent import __version__, dryrun, ops

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

    from agent.config import LoadedConfig, Override

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
    run.add_argument("--config", type=Path, metavar="FILE", help="YAML configuration file")
    _add_config_flags(run)

    check = sub.add_parser(
        "check-config",
        help="validate a configuration and print it (exit 0) or what is wrong (exit 78)",
        description=(
            "Validate the configuration exactly as `run` would load it (file, environment, "
            "flags) and print the effective configuration with secrets masked; each value not "
            "at its default is annotated with where it came from. Exit 0 when valid, 78 "
            "(EX_CONFIG) with every problem on stderr when not."
        ),
    )
    check.add_argument(
        "config", type=Path, nargs="?", metavar="FILE", help="YAML configuration file"
    )
    _add_config_flags(check)
    check.add_argument(
        "--format",
        choices=["yaml", "json"],
        default="yaml",
        help="yaml (commented, for people; default) or json (for machines, also on errors)",
    )

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
    ops.add_parsers(sub)  # spool, status, top: agent/ops
    dryrun.add_parser(sub)  # dry-run: agent/dryrun.py
    return parser


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that set options; they win over the file and the environment."""
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
    from agent._config.sources import split_set_flag  # noqa: PLC0415 - keep `--help` fast

    try:
        split_set_flag(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


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
    if (code := ops.dispatch(args)) is not None:
        return code
    if (code := dryrun.dispatch(args)) is not None:
        return code
    parser.print_help()
    return 0


def _overrides(args: argparse.Namespace) -> list[Override]:
    """--set flags in order, then the shortcuts (which therefore win).

    Raises:
        InvalidConfigError: A --set VALUE is not YAML.
    """
    from agent.config import Override  # noqa: PLC0415

    overrides = [Override.parse(text) for text in args.set_options]
    shortcuts = {
        "gateway_id": ("--gateway-id", args.gateway_id),
        "log_level": ("--log-level", args.log_level),
        "log_format": ("--log-format", args.log_format),
    }
    overrides.extend(
        Override(path, value, flag)
        for path, (flag, value) in shortcuts.items()
        if value is not None
    )
    return overrides


def _load(args: argparse.Namespace, *, json_errors: bool = False) -> LoadedConfig | None:
    """The configuration the flags name, or None after printing why it is invalid."""
    from agent.config import InvalidConfigError, load_config  # noqa: PLC0415

    try:
        return load_config(args.config, _overrides(args))
    except InvalidConfigError as exc:
        if json_errors:
            from agent._config.render import render_problems_json  # noqa: PLC0415

            print(render_problems_json(exc.problems))  # noqa: T201
        else:
            for problem in exc.problems:
                print(f"edge-agent: {problem}", file=sys.stderr)  # noqa: T201
        return None


def _run(args: argparse.Namespace) -> int:
    from agent._gc import tune_for_throughput  # noqa: PLC0415
    from agent.app import Agent  # noqa: PLC0415 - keep `--help` and check-config fast
    from agent.errors import AgentError, ConfigError  # noqa: PLC0415
    from agent.logs import configure_logging  # noqa: PLC0415

    loaded = _load(args)
    if loaded is None:
        return EX_CONFIG
    settings = loaded.settings
    configure_logging(settings.log_level, settings.log_format)
    tune_for_throughput()

    async def main_task() -> int:
        shutdown = asyncio.Event()
        agent = Agent(settings, config_path=args.config, overrides=_overrides(args))
        _install_signal_handlers(shutdown)
        # SIGHUP: re-read the file; a bad one is rejected and the running config kept.
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, agent.request_reload)
        return await agent.run(shutdown.wait())

    try:
        return _run_loop(main_task())
    except ConfigError as exc:
        _log.error(
            "The configuration cannot be used; fix it and start again.", extra={"error": str(exc)}
        )
        return EX_CONFIG
    except AgentError as exc:  # PermanentError: retrying the same start will not help
        _log.error("The agent cannot run; see the error.", extra={"error": str(exc)})
        return 1


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
    from agent._config.render import render_json, render_yaml  # noqa: PLC0415
    from agent.config import config_hash  # noqa: PLC0415

    loaded = _load(args, json_errors=args.format == "json")
    if loaded is None:
        return EX_CONFIG
    render = render_json if args.format == "json" else render_yaml
    text = render(loaded.settings, loaded.sources, digest=config_hash(loaded.settings))
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
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

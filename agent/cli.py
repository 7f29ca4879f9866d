"""The ``edge-agent`` command line: ``run``, ``check-config`` and ``simulate``.

Every command that reads a configuration takes it as ``--config FILE`` (``check-config`` also
accepts the file as its argument, as before). A failure to start is one line on stderr, starting
with ``edge-agent:``, that names what failed (the option, path or port) and what to do; the
global ``--debug`` flag adds the traceback. Exit codes (``sysexits.h`` where one fits;
``docs/reference/cli.md`` has the same table):

- 0: success (``run``: stopped by SIGTERM/SIGINT after draining);
- 1: failed while running; the line says why;
- 2: usage error: unknown command or flag, or no command at all;
- 66 (EX_NOINPUT): a file the configuration names is missing, unreadable or unusable
  (``mqtt.password_file``, ``kafka.ssl_ca_file``, a certificate and its key, ...);
- 69 (EX_UNAVAILABLE): the HTTP endpoint cannot listen (``http.port`` in use,
  ``http.listen_host`` not an address of this host);
- 73 (EX_CANTCREAT): the spool directory cannot be created or written;
- 75 (EX_TEMPFAIL): ``run`` only; a configuration change needs a restart, so the agent drained
  and exited for its supervisor to start it again;
- 78 (EX_CONFIG): the configuration is invalid (one line per problem);
- 128+n: ``run`` only; a second SIGTERM/SIGINT (signal n) ended it without draining.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__, dryrun, ops
from agent._config.flags import add_config_flags, overrides

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

    from agent.config import AgentSettings, LoadedConfig

EX_USAGE = 2
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_CONFIG = 78
_log = logging.getLogger("agent.cli")
_PROG = "edge-agent"


class _Failure(Exception):  # noqa: N818 - a verdict carried to main(), not an agent error
    """Printed as one ``edge-agent: ...`` line; :attr:`exit_code` is the process's."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Forward MQTT telemetry to Kafka through a durable disk spool.",
        epilog=(
            "exit codes: 0 ok, 1 failed while running, 2 usage, 66 a named file is missing or "
            "unreadable, 69 the HTTP port cannot be listened on, 73 the spool directory cannot "
            "be created, 75 restart for a new configuration, 78 invalid configuration"
        ),
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: `edge-agent --debug run` is not undone by the sub-command's default.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        parents=[common],
        help="run the agent until SIGTERM/SIGINT",
        description=(
            "Run the agent. Before anything starts it checks the configuration (exit 78), the "
            "files it names (66), that the HTTP endpoint can listen (69) and that the spool "
            "directory can be created and written (73)."
        ),
    )
    run.add_argument("--config", type=Path, metavar="FILE", help="YAML configuration file")
    add_config_flags(run)

    check = sub.add_parser(
        "check-config",
        parents=[common],
        help="validate a configuration and print it (exit 0) or what is wrong (exit 78 or 66)",
        description=(
            "Validate the configuration exactly as `run` would load it (file, environment, "
            "flags) and print the effective configuration with secrets masked; each value not "
            "at its default is annotated with where it came from. Files it names (passwords, "
            "CA bundles, certificates and keys) must exist and be readable by this user. Exit 0 "
            "when valid; 78 (EX_CONFIG) with every problem on stderr when not; 66 (EX_NOINPUT) "
            "when a file it names is missing, unreadable or not a usable certificate or key."
        ),
    )
    check.add_argument("--config", type=Path, metavar="FILE", help="YAML configuration file")
    check.add_argument(
        "config_positional",
        type=Path,
        nargs="?",
        metavar="FILE",
        help="the same as --config FILE (kept for existing scripts)",
    )
    add_config_flags(check)
    check.add_argument(
        "--format",
        choices=["yaml", "json"],
        default="yaml",
        help="yaml (commented, for people; default) or json (for machines, also on errors)",
    )
    check.add_argument(
        "--no-check-files",
        dest="check_files",
        action="store_false",
        help=(
            "check the configuration only, not the files it names (e.g. in CI, away from the "
            "machine or pod that has them)"
        ),
    )
    check.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print nothing when valid (for ExecStartPre= and scripts); problems go to stderr",
    )

    sim = sub.add_parser(
        "simulate", parents=[common], help="publish simulated sensor readings to MQTT"
    )
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
    sim.add_argument(
        "--sparkplug", action="store_true", help="publish Sparkplug B (births, aliases, seq)"
    )
    sim.add_argument("--group-id", default="sim", help="Sparkplug group id")
    sim.add_argument("--edge-nodes", type=int, default=1, help="Sparkplug edge nodes")
    sim.add_argument("--rebirth-every", type=int, default=0, help="Sparkplug: rounds per session")
    sim.add_argument("--seq-gap-every", type=int, default=0, help="Sparkplug: skip a seq every n")
    ops.add_parsers(sub)  # spool, status, top: agent/ops
    dryrun.add_parser(sub)  # dry-run: agent/dryrun.py
    return parser


_DEBUG_HELP = "show the traceback of a failure (default: one line saying what failed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code (see the module doc)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # a usage error exits 2 here, with the usage line
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(  # noqa: T201
            f"{_PROG}: error: give a command: run, check-config or simulate "
            f"(`{_PROG} --help` explains them)",
            file=sys.stderr,
        )
        return EX_USAGE
    try:
        return _dispatch(args)
    except _Failure as exc:
        if args.debug:
            traceback.print_exc()
        _say(str(exc))
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the top of the program: one line, not a traceback
        if args.debug:
            traceback.print_exc()
            _say(_one_line(exc))
        else:
            _say(f"{_one_line(exc)} (run with --debug for the traceback)")
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command ``args`` names; its exit code."""
    commands = {"run": _run, "check-config": _check_config, "simulate": _simulate}
    if args.command in commands:
        return commands[args.command](args)
    if (code := ops.dispatch(args)) is not None:  # spool, status, top: agent/ops
        return code
    if (code := dryrun.dispatch(args)) is not None:  # dry-run: agent/dryrun.py
        return code
    raise _Failure(f"no handler for the command {args.command!r}", EX_USAGE)


def _say(line: str) -> None:
    """One line on stderr, prefixed like every message of the command."""
    print(f"{_PROG}: {line}", file=sys.stderr)  # noqa: T201


def _one_line(exc: BaseException) -> str:
    """The first error of an exception (group) as one line: what failed, not where."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = " ".join(str(exc).split())
    from agent.errors import AgentError  # noqa: PLC0415

    if isinstance(exc, AgentError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _config_path(args: argparse.Namespace) -> Path | None:
    """``--config FILE``, or check-config's positional FILE.

    Raises:
        _Failure: Both were given, and they differ (EX_USAGE).
    """
    positional: Path | None = getattr(args, "config_positional", None)
    if positional is not None and args.config is not None and positional != args.config:
        raise _Failure(
            f"check-config got two files ({positional} and --config {args.config}); give one",
            EX_USAGE,
        )
    config: Path | None = args.config or positional
    return config


def _load(args: argparse.Namespace, *, json_errors: bool = False) -> LoadedConfig | None:
    """The configuration the flags name, or None after printing why it is invalid."""
    from agent.config import REQUIRED_OPTIONS, InvalidConfigError, load_config  # noqa: PLC0415

    try:
        return load_config(_config_path(args), overrides(args), required=REQUIRED_OPTIONS)
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
    if _report_file_problems(loaded, json_errors=False):
        return EX_NOINPUT
    settings = loaded.settings
    _preflight(settings)
    configure_logging(settings.log_level, settings.log_format)
    _log_start(loaded, _config_path(args))
    tune_for_throughput()

    async def main_task() -> int:
        shutdown = asyncio.Event()
        agent = Agent(settings, config_path=args.config, overrides=overrides(args))
        _install_signal_handlers(shutdown)
        # SIGHUP: re-read the file; a bad one is rejected and the running config kept.
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, agent.request_reload)
        return await agent.run(shutdown.wait())

    try:
        return _run_loop(main_task())
    except ConfigError as exc:
        raise _Failure(_one_line(exc), EX_CONFIG) from exc
    except AgentError as exc:  # PermanentError: retrying the same start will not help
        raise _Failure(_one_line(exc), _exit_code_of(exc)) from exc


def _report_file_problems(loaded: LoadedConfig, *, json_errors: bool) -> bool:
    """Print every file the configuration names that cannot be used; whether there was one."""
    from agent._config.files import file_problems  # noqa: PLC0415

    problems = file_problems(loaded.settings, loaded.sources)
    if not problems:
        return False
    if json_errors:
        from agent._config.render import render_problems_json  # noqa: PLC0415

        print(render_problems_json(tuple(problems)))  # noqa: T201
    else:
        for problem in problems:
            _say(str(problem))
    return True


def _preflight(settings: AgentSettings) -> None:
    """What would stop the agent at once, checked before anything starts.

    Raises:
        _Failure: The spool directory cannot be created or written (73), or the HTTP endpoint
            cannot listen (69).
    """
    from agent._config.preflight import (  # noqa: PLC0415
        StartupFailure,
        check_listen,
        check_spool_directory,
    )

    try:
        check_spool_directory(settings.spool.directory)
        if settings.http.enabled:
            check_listen(settings.http.listen_host, settings.http.port)
    except StartupFailure as exc:
        raise _Failure(str(exc), exc.exit_code) from exc


def _exit_code_of(exc: BaseException) -> int:
    """69 when the cause is an address that cannot be listened on, else 1."""
    import errno  # noqa: PLC0415

    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.errno in {errno.EADDRINUSE, errno.EADDRNOTAVAIL}:
        return EX_UNAVAILABLE
    return 1


def _log_start(loaded: LoadedConfig, path: Path | None) -> None:
    """One line at start: what runs, from which configuration, against what."""
    from agent.config import config_hash  # noqa: PLC0415

    settings = loaded.settings
    sources = sorted({source.where for source in loaded.sources.values()})
    _log.info(
        "Starting.",
        extra={
            "version": __version__,
            "config": str(path) if path is not None else "environment and flags only",
            "config_sources": ", ".join(sources) or "defaults",
            "config_hash": config_hash(settings)[:16],
            "gateway_id": settings.gateway_id,
            "mqtt": f"{settings.mqtt.host}:{settings.mqtt.port}",
            "kafka": settings.kafka.bootstrap_servers,
            "spool_directory": str(settings.spool.directory),
            "http": f"{settings.http.listen_host}:{settings.http.port}"
            if settings.http.enabled
            else "disabled",
        },
    )


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

    json_errors = args.format == "json"
    loaded = _load(args, json_errors=json_errors)
    if loaded is None:
        return EX_CONFIG
    if args.check_files and _report_file_problems(loaded, json_errors=json_errors):
        return EX_NOINPUT
    if args.quiet:
        return 0
    render = render_json if args.format == "json" else render_yaml
    text = render(loaded.settings, loaded.sources, digest=config_hash(loaded.settings))
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from agent.simulate import SimulationSettings, Simulator, SparkplugSimulator  # noqa: PLC0415

    kind = SparkplugSimulator if args.sparkplug else Simulator
    sim = kind(
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
            sparkplug=args.sparkplug,
            group_id=args.group_id,
            edge_nodes=args.edge_nodes,
            rebirth_every=args.rebirth_every,
            seq_gap_every=args.seq_gap_every,
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

"""``edge-agent status`` and ``edge-agent top``: ask a running agent how it is doing.

Both read the agent's ``GET /status`` (the JSON document of
:class:`~agent.telemetry.health.StatusBoard`) and put it in plain words. ``status`` prints it
once and sets the exit code; ``top`` redraws it every ``--interval-secs`` until Ctrl-C.

Exit codes of ``status`` (also in ``docs/how-to/operate.md``):

- 0: healthy: ready (MQTT subscribed, spool writable), event loop turning, uplink up;
- 1: the agent cannot be reached, or its answer is not a status document (one line on stderr);
- 3: the agent answers but is unhealthy: not ready, or its event loop is stalled;
- 4: the agent is healthy but the uplink to Kafka is down (it is spooling).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TextIO, TypeAlias

from agent.ops import _fmt

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

DEFAULT_URL: Final = "http://127.0.0.1:9810"
TIMEOUT_SECS: Final = 5.0
EXIT_HEALTHY: Final = 0
EXIT_UNREACHABLE: Final = 1
EXIT_UNHEALTHY: Final = 3
EXIT_UPLINK_DOWN: Final = 4
ERRORS_SHOWN: Final = 5
_ANSI_CLEAR: Final = "\x1b[H\x1b[2J"
_ANSI_BOLD: Final = "\x1b[1m"
_ANSI_RED: Final = "\x1b[31m"
_ANSI_GREEN: Final = "\x1b[32m"
_ANSI_YELLOW: Final = "\x1b[33m"
_ANSI_RESET: Final = "\x1b[0m"


class StatusError(Exception):
    """The agent could not be asked; the message is one line saying why and what to check."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where the agent is and, from its config when given, what it talks to.

    Attributes:
        url: Base URL of the agent's HTTP endpoint.
        kafka: Kafka bootstrap servers, for the words ("connected to kafka HOST:PORT").
        mqtt: The MQTT broker as ``host:port``.
    """

    url: str
    kafka: str | None = None
    mqtt: str | None = None


def fetch(url: str, *, timeout_secs: float = TIMEOUT_SECS) -> dict[str, Any]:
    """``GET {url}/status`` and return the document.

    Raises:
        StatusError: Not reachable, not HTTP 200, or not a status document.
    """
    endpoint = url.rstrip("/") + "/status"
    if not endpoint.startswith(("http://", "https://")):
        raise StatusError(f"{url} is not an http:// URL; give e.g. --url {DEFAULT_URL}.")
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout_secs) as response:  # noqa: S310 - scheme checked
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise StatusError(
            f"The agent at {url} answered HTTP {exc.code} on /status; is it an edge-agent "
            "of this version or newer?"
        ) from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(
            f"Cannot reach the agent at {url} ({reason}); is it running, and is http.port right?"
        ) from exc
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise StatusError(f"The agent at {url} sent a /status that is not JSON.") from exc
    if not isinstance(document, dict) or "uplink" not in document:
        raise StatusError(f"The agent at {url} sent a /status this command does not understand.")
    return document


def exit_code(document: Mapping[str, Any]) -> int:
    """The exit code of ``status`` for a document (see the module docstring)."""
    if not document.get("healthy"):
        return EXIT_UNHEALTHY
    if not document.get("uplink", {}).get("up"):
        return EXIT_UPLINK_DOWN
    return EXIT_HEALTHY


def render(document: Mapping[str, Any], target: Target, *, color: bool = False) -> str:
    """The document in plain words, one part per line."""
    paint = _painter(enabled=color)
    lines = [
        *_agent_lines(document, target, paint),
        _uplink_line(document, target, paint),
        _mqtt_line(document, target, paint),
        _spool_line(document),
        *_rate_lines(document),
    ]
    ahead = float(document.get("clock_ahead_of_kafka_secs") or 0.0)
    if ahead > 0:
        lines.append(f"clock:  {paint('ahead', _ANSI_YELLOW)} of Kafka by {_fmt.duration(ahead)}")
    lines.extend(_error_lines(document))
    return "\n".join(lines) + "\n"


Paint: TypeAlias = "Callable[[str, str], str]"


def _agent_lines(document: Mapping[str, Any], target: Target, paint: Paint) -> list[str]:
    healthy = bool(document.get("healthy"))
    head = paint("healthy", _ANSI_GREEN) if healthy else paint("UNHEALTHY", _ANSI_RED)
    version = document.get("version") or "unknown version"
    uptime = _fmt.duration(float(document.get("uptime_secs", 0.0)))
    generation = document.get("config_generation")
    summary = (
        f"agent: {head}, edge-agent {version}, up {uptime}, config generation {generation}"
        f" ({target.url})"
    )
    lines = [summary]
    if not healthy:
        reasons = [name for name, ok in document.get("checks", {}).items() if not ok]
        if not document.get("loop", {}).get("healthy", True):
            reasons.append("event loop stalled")
        if reasons:
            lines.append(f"  why: {', '.join(reasons)}")
    return lines


def _uplink_line(document: Mapping[str, Any], target: Target, paint: Paint) -> str:
    uplink = document.get("uplink", {})
    kafka = f"kafka {target.kafka}" if target.kafka else "kafka"
    for_words = _fmt.duration(float(uplink.get("for_secs", 0.0)))
    if uplink.get("up"):
        return f"uplink: {paint('connected', _ANSI_GREEN)} to {kafka} for {for_words}"
    return f"uplink: {paint('DOWN', _ANSI_YELLOW)} ({kafka}) for {for_words}; spooling"


def _mqtt_line(document: Mapping[str, Any], target: Target, paint: Paint) -> str:
    mqtt = document.get("mqtt", {})
    broker = f"broker {target.mqtt}" if target.mqtt else "broker"
    for_words = _fmt.duration(float(mqtt.get("for_secs", 0.0)))
    if mqtt.get("connected"):
        subscribed = "subscribed" if mqtt.get("subscribed") else "not subscribed yet"
        return (
            f"mqtt:   {paint('connected', _ANSI_GREEN)} to {broker} for {for_words}, {subscribed}"
        )
    return f"mqtt:   {paint('DISCONNECTED', _ANSI_RED)} from {broker} for {for_words}"


def _spool_line(document: Mapping[str, Any]) -> str:
    spool = document.get("spool", {})
    records = int(spool.get("records", 0))
    if not records:
        return "spool:  empty"
    age = spool.get("oldest_age_secs")
    oldest = "" if age is None else f", oldest {_fmt.duration(float(age))}"
    return f"spool:  {_fmt.count(records)} records, {_fmt.size(int(spool.get('bytes', 0)))}{oldest}"


def _rate_lines(document: Mapping[str, Any]) -> list[str]:
    lines = []
    rates = document.get("rates", {})
    interval = float(rates.get("interval_secs") or 0.0)
    if interval > 0:
        received = _fmt.rate(float(rates.get("mqtt_received_per_sec") or 0.0))
        spooled = _fmt.rate(float(rates.get("records_spooled_per_sec") or 0.0))
        forwarded = _fmt.rate(float(rates.get("records_forwarded_per_sec") or 0.0))
        lines.append(
            f"rates:  {received} messages in, {spooled} records spooled, {forwarded} records"
            f" to kafka (last {_fmt.duration(interval)})"
        )
    totals = document.get("totals", {})
    if totals:
        lines.append(
            f"totals: {_fmt.count(int(totals.get('mqtt_received', 0)))} messages in,"
            f" {_fmt.count(int(totals.get('records_forwarded', 0)))} records to kafka,"
            f" {_fmt.count(int(totals.get('records_rejected', 0)))} to the dead-letter topic,"
            f" {_fmt.count(int(totals.get('records_dropped', 0)))} dropped,"
            f" {_fmt.count(int(totals.get('spool_quarantined_blocks', 0)))} blocks quarantined"
        )
    return lines


def _error_lines(document: Mapping[str, Any]) -> list[str]:
    errors = list(document.get("last_errors", []))
    if not errors:
        return ["last errors: none"]
    lines = [f"last errors ({len(errors)}, newest last):"]
    now_ms = int(document.get("now_ms", 0))
    for entry in errors[-ERRORS_SHOWN:]:
        ago = _fmt.duration((now_ms - int(entry.get("at_ms", now_ms))) / 1000)
        why = entry.get("error") or entry.get("reason")
        cause = f" ({why})" if why else ""
        lines.append(f"  {ago} ago {entry.get('level', '?')}: {entry.get('message', '')}{cause}")
    return lines


def _painter(*, enabled: bool) -> Paint:
    def paint(text: str, code: str) -> str:
        return f"{_ANSI_BOLD}{code}{text}{_ANSI_RESET}" if enabled else text

    return paint


def run_status(target: Target, *, output_format: str, out: TextIO, err: TextIO) -> int:
    """Ask once, print, and return the exit code."""
    try:
        document = fetch(target.url)
    except StatusError as exc:
        err.write(f"edge-agent: {exc}\n")
        return EXIT_UNREACHABLE
    if output_format == "json":
        out.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    else:
        out.write(render(document, target, color=out.isatty()))
    return exit_code(document)


def run_top(
    target: Target,
    *,
    interval_secs: float,
    iterations: int,
    out: TextIO,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Redraw the status every ``interval_secs`` (``iterations`` times, 0 = until Ctrl-C).

    On a terminal the screen is cleared and redrawn in colour; otherwise each refresh is
    printed plainly, separated by a blank line. An unreachable agent is shown, not fatal.
    Ctrl-C ends it with exit code 0.
    """
    tty = out.isatty()
    shown = 0
    try:
        while iterations <= 0 or shown < iterations:
            if shown:
                sleep(interval_secs)
            try:
                text = render(fetch(target.url), target, color=tty)
            except StatusError as exc:
                text = f"edge-agent: {exc}\n"
            stamp = time.strftime("%H:%M:%S")
            footer = f"refreshed {stamp}, every {_fmt.duration(interval_secs)}; Ctrl-C quits\n"
            if tty:
                out.write(_ANSI_CLEAR + text + "\n" + footer)
            else:
                out.write(("\n" if shown else "") + text)
            out.flush()
            shown += 1
    except KeyboardInterrupt:
        if tty:
            out.write("\n")
    return 0


def target_for(url: str | None, settings: Any | None) -> Target:  # noqa: ANN401 - AgentSettings, imported lazily
    """The URL to ask (``--url``, else from the config's ``http`` section, else the default)."""
    if settings is None:
        return Target(url or DEFAULT_URL)
    kafka = str(settings.kafka.bootstrap_servers) or None
    mqtt = f"{settings.mqtt.host}:{settings.mqtt.port}"
    if url is None:
        host = settings.http.listen_host
        if host in {"0.0.0.0", "", "::"}:  # noqa: S104 - listening everywhere: ask locally
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        url = f"http://{host}:{settings.http.port}"
    return Target(url, kafka, mqtt)

"""A tiny HTTP/1.1 endpoint on asyncio streams: metrics, health, readiness and status.

No dependency beyond the standard library. Deliberately small:

- One request per connection: every response says ``Connection: close``; request headers and
  bodies are not interpreted (nothing here needs them).
- GET and HEAD only (405 with ``Allow`` otherwise); unknown paths answer 404.
- Bounded: the request head must arrive within ``request_timeout_secs`` (408) and fit in
  ``max_request_bytes`` (431); writing the answer has the same timeout; at most
  ``max_connections`` are handled at once (the rest get 503 straight away).

``/healthz``, ``/readyz`` and ``/status`` render :mod:`agent.telemetry.health` (read its
docstring for what liveness can and cannot see from the loop it runs on). ``/status`` is the JSON
document ``edge-agent status`` and ``top`` read; while serving, the endpoint keeps the newest
warnings and errors the agent logs for it (:class:`~agent.telemetry.health.ErrorRing` on the root
logger) and samples the counters its rates come from once a second. Parsing and routing are
pure functions (:func:`parse_request`, :meth:`HttpServer.respond`); only :meth:`HttpServer.run`
does I/O.

Connections are handled by the tasks :func:`asyncio.start_server` creates; the server keeps track
of them and closes whatever is still open when :meth:`HttpServer.run` is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

from agent.errors import PermanentError
from agent.telemetry.health import StatusBoard

if TYPE_CHECKING:
    from agent.telemetry.health import LoopWatchdog, Readiness
    from agent.telemetry.metrics import Metrics
    from agent.telemetry.settings import HttpSettings

_log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECS: Final = 5.0
MAX_REQUEST_BYTES: Final = 8192
MAX_CONNECTIONS: Final = 16
LINGER_SECS: Final = 1.0
"""After answering, how long unread input from the client is discarded before closing (so the
kernel does not reset the connection and lose the answer)."""
LINGER_MAX_BYTES: Final = 65536

_JSON: Final = "application/json"
_TEXT: Final = "text/plain; charset=utf-8"
_ALLOWED: Final = ("GET", "HEAD")
PATHS: Final = ("/metrics", "/healthz", "/readyz", "/status")


@dataclass(frozen=True, slots=True)
class Request:
    """The request line; nothing else of a request is used.

    Attributes:
        method: As sent (methods are case-sensitive).
        path: The target without its query string.
    """

    method: str
    path: str


@dataclass(frozen=True, slots=True)
class Response:
    """One answer; always ``Connection: close``.

    Attributes:
        status: The HTTP status code.
        body: The body (sent for GET, left out for HEAD; ``Content-Length`` is the same).
        content_type: The ``Content-Type``.
        headers: Extra headers.
    """

    status: HTTPStatus
    body: bytes = b""
    content_type: str = _TEXT
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, *, head_only: bool = False) -> bytes:
        """The bytes on the wire."""
        lines = [
            f"HTTP/1.1 {self.status.value} {self.status.phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def _text(status: HTTPStatus, text: str, *headers: tuple[str, str]) -> Response:
    return Response(status, f"{text}\n".encode(), _TEXT, headers)


def parse_request(head: bytes) -> Request | None:
    """Parse the request line of a request head; None when it is not HTTP/1.x origin-form."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3:  # noqa: PLR2004 - method, target, version
        return None
    method, target, version = parts
    if not method.isalpha() or not target.startswith(b"/") or not version.startswith(b"HTTP/1."):
        return None
    try:
        path = target.split(b"?", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    return Request(method.decode("ascii"), path)


class HttpServer:
    """Serves the agent's metrics and health; see the module docstring."""

    def __init__(  # noqa: PLR0913 - the endpoint's parts and its three bounds
        self,
        settings: HttpSettings,
        metrics: Metrics,
        health: LoopWatchdog,
        readiness: Readiness,
        *,
        request_timeout_secs: float = REQUEST_TIMEOUT_SECS,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_connections: int = MAX_CONNECTIONS,
        status: StatusBoard | None = None,
    ) -> None:
        """Create the server; nothing listens before :meth:`run`.

        Args:
            settings: Address, port (0 picks a free one) and whether to serve at all.
            metrics: Rendered on ``/metrics``.
            health: Rendered on ``/healthz``.
            readiness: Rendered on ``/readyz``.
            request_timeout_secs: Longest wait for the request head, and for writing the answer.
            max_request_bytes: Largest request head (request line and headers).
            max_connections: Connections handled at once; more are answered 503 at once.
            status: Rendered on ``/status`` (default: one built from the three above).
        """
        self._settings = settings
        self._metrics = metrics
        self._health = health
        self._readiness = readiness
        self._status = status or StatusBoard(metrics, health, readiness)
        self._timeout = request_timeout_secs
        self._max_request_bytes = max_request_bytes
        self._max_connections = max_connections
        self._connections: dict[asyncio.Task[object], asyncio.StreamWriter] = {}
        self._listening = asyncio.Event()
        self._port: int | None = None

    @property
    def bound_port(self) -> int | None:
        """The port actually listened on (useful with port 0), or None before :meth:`run`."""
        return self._port

    async def wait_listening(self) -> int:
        """Wait until :meth:`run` listens; return :attr:`bound_port`."""
        await self._listening.wait()
        assert self._port is not None  # noqa: S101 - set before the event
        return self._port

    async def run(self) -> None:
        """Serve until cancelled, then close the listener and every open connection.

        Returns at once when ``settings.enabled`` is false.

        Raises:
            PermanentError: The address cannot be listened on (port in use, bad host).
        """
        host, port = self._settings.listen_host, self._settings.port
        if not self._settings.enabled:
            _log.info("HTTP endpoint disabled: no /metrics, /healthz, /readyz or /status.")
            return
        try:
            server = await asyncio.start_server(
                self._handle, host, port, limit=self._max_request_bytes, reuse_address=True
            )
        except OSError as exc:
            raise PermanentError(
                f"Cannot listen on {host}:{port} for /metrics and health ({exc.strerror}); "
                "free the port or change http.port."
            ) from exc
        root = logging.getLogger()
        root.addHandler(self._status.errors)
        try:
            self._port = int(server.sockets[0].getsockname()[1])
            self._listening.set()
            _log.info("HTTP endpoint listening.", extra={"host": host, "port": self._port})
            # Not serve_forever(): on cancellation it waits for open connections to finish
            # (Python 3.12+) before this block could cancel them.
            await self._status.run()
        finally:
            root.removeHandler(self._status.errors)
            server.close()
            await self._close_connections()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LINGER_SECS):
                    await server.wait_closed()
            self._listening.clear()

    async def _close_connections(self) -> None:
        """Close every open connection; its handler then ends by itself (EOF, reset).

        Handlers are cancelled only if they did not end within ``LINGER_SECS``: cancelling a
        stream handler makes asyncio log a spurious error on Python 3.11 and 3.12.
        """
        for writer in self._connections.values():
            writer.close()
        tasks = list(self._connections)
        if not tasks:
            return
        _, stuck = await asyncio.wait(tasks, timeout=LINGER_SECS)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)

    # ------------------------------------------------------------------ protocol
    def respond(self, request: Request) -> Response:
        """The answer to one request (no I/O)."""
        if request.path not in PATHS:
            return _text(
                HTTPStatus.NOT_FOUND, "Not found; try /metrics, /healthz, /readyz or /status."
            )
        if request.method not in _ALLOWED:
            return _text(
                HTTPStatus.METHOD_NOT_ALLOWED, "Only GET and HEAD.", ("Allow", ", ".join(_ALLOWED))
            )
        if request.path == "/metrics":
            return Response(HTTPStatus.OK, self._metrics.render(), self._metrics.content_type)
        if request.path == "/status":
            return Response(HTTPStatus.OK, self._status.to_json(), _JSON)
        if request.path == "/healthz":
            loop = self._health.status()
            status = HTTPStatus.OK if loop.healthy else HTTPStatus.SERVICE_UNAVAILABLE
            return Response(status, loop.to_json(), _JSON)
        report = self._readiness.evaluate()
        status = HTTPStatus.OK if report.ready else HTTPStatus.SERVICE_UNAVAILABLE
        return Response(status, report.to_json(), _JSON)

    # ------------------------------------------------------------------ I/O
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections[task] = writer
        try:
            if len(self._connections) > self._max_connections:
                await self._answer(reader, writer, _text(HTTPStatus.SERVICE_UNAVAILABLE, "Busy."))
            else:
                await self._serve_one(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or would not read the answer in time
        except Exception:  # noqa: BLE001 - the connection's top level: log, answer the next
            _log.warning("The HTTP endpoint failed to answer a request.", exc_info=True)
        finally:
            writer.close()
            if task is not None:
                self._connections.pop(task, None)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            response = _text(HTTPStatus.REQUEST_TIMEOUT, "The request took too long.")
        except asyncio.LimitOverrunError:
            response = _text(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"The request head is larger than {self._max_request_bytes} bytes.",
            )
        else:
            request = parse_request(head)
            if request is None:
                response = _text(HTTPStatus.BAD_REQUEST, "Not an HTTP/1.x request.")
            else:
                await self._answer(reader, writer, self._respond_safely(request), request.method)
                return
        await self._answer(reader, writer, response)

    def _respond_safely(self, request: Request) -> Response:
        try:
            return self.respond(request)
        except Exception:  # noqa: BLE001 - a bug behind one endpoint must not take the others down
            _log.warning(
                "The HTTP endpoint failed to build an answer.",
                exc_info=True,
                extra={"path": request.path},
            )
            return _text(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error; see the agent's log.")

    async def _answer(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        response: Response,
        method: str = "GET",
    ) -> None:
        """Write the answer, half-close, and discard what the client still sends for a moment."""
        writer.write(response.encode(head_only=method == "HEAD"))
        async with asyncio.timeout(self._timeout):
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_SECS):
                discarded = 0
                while discarded < LINGER_MAX_BYTES:
                    chunk = await reader.read(4096)
                    if not chunk:
                        break
                    discarded += len(chunk)

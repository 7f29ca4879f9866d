"""A fake Kubernetes API server for one ConfigMap: the real list and watch wire protocol.

``GET /api/v1/namespaces/{ns}/configmaps?fieldSelector=metadata.name%3D{name}`` answers a
``ConfigMapList`` with ``metadata.resourceVersion``; the same with ``watch=true`` answers a
chunked stream of JSON lines ``{"type": ..., "object": ...}``, scripted per test. Like an API
server enforcing a Role restricted to ``resourceNames: [name]``, it refuses (403) a list or watch
without the matching field selector. Every request is recorded with its query.
"""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_POLL_SECS = 0.02


@dataclass(frozen=True)
class Request:
    """One request the fake received."""

    path: str
    query: dict[str, str]

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch") == "true"


@dataclass(frozen=True)
class Event:
    """Send one watch event line."""

    type: str
    object: dict[str, Any]


@dataclass(frozen=True)
class Hang:
    """Send nothing more and keep the connection open (a partitioned or stuck server)."""


@dataclass(frozen=True)
class HttpStatus:
    """Answer the watch request itself with this HTTP status and a Status body."""

    code: int
    reason: str = "Expired"


Action = Event | Hang | HttpStatus


def status_object(code: int, reason: str, message: str) -> dict[str, Any]:
    """A ``v1.Status`` as the API server sends it in errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class FakeKubeApi:
    """The server; start with :meth:`start`, stop with :meth:`close`."""

    namespace: str = "edge"
    name: str = "edge-agent"
    requests: list[Request] = field(default_factory=list)
    configmap: dict[str, Any] | None = None
    list_resource_version: str = "1"
    _scripts: queue.Queue[list[Action]] = field(default_factory=queue.Queue)
    _list_failures: queue.Queue[int] = field(default_factory=queue.Queue)
    _release: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------ scripting
    def configmap_object(self, data: dict[str, str], resource_version: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": resource_version,
                "uid": "6f1c1c8e-0000-4000-8000-000000000001",
                "creationTimestamp": "2026-11-26T10:00:00Z",
            },
            "data": data,
        }

    def set_configmap(self, data: dict[str, str] | None, resource_version: str) -> None:
        """What a list returns from now on (None: the ConfigMap does not exist)."""
        with self._lock:
            self.configmap = None if data is None else self.configmap_object(data, resource_version)
            self.list_resource_version = resource_version

    def script_watch(self, *actions: Action) -> None:
        """The life of the next watch connection; after the actions the stream ends cleanly."""
        self._scripts.put(list(actions))

    def fail_next_list(self, code: int) -> None:
        """Answer the next list request with this HTTP status."""
        self._list_failures.put(code)

    def bookmark(self, resource_version: str) -> Event:
        return Event(
            "BOOKMARK",
            {
                "kind": "ConfigMap",
                "apiVersion": "v1",
                "metadata": {
                    "resourceVersion": resource_version,
                    "creationTimestamp": None,
                    "annotations": {"k8s.io/initial-events-end": "false"},
                },
            },
        )

    # ------------------------------------------------------------ observations
    @property
    def lists(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if not r.is_watch]

    @property
    def watches(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.is_watch]

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-kube-api",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------ server side
    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_script(self) -> list[Action] | None:
        while not self._release.is_set():
            try:
                return self._scripts.get(timeout=_POLL_SECS)
            except queue.Empty:
                continue
        return None

    def _list_body(self) -> dict[str, Any]:
        with self._lock:
            return {
                "apiVersion": "v1",
                "kind": "ConfigMapList",
                "metadata": {"resourceVersion": self.list_resource_version},
                "items": [] if self.configmap is None else [self.configmap],
            }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeKubeApi

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: the requests are recorded instead."""

    def do_GET(self) -> None:
        fake = self.server_fake
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        fake._record(Request(url.path, query))
        if url.path != f"/api/v1/namespaces/{fake.namespace}/configmaps":
            self._json(404, status_object(404, "NotFound", "the server could not find it"))
        elif query.get("fieldSelector") != f"metadata.name={fake.name}":
            message = "configmaps is forbidden: cannot list resource configmaps without selector"
            self._json(403, status_object(403, "Forbidden", message))
        elif query.get("watch") == "true":
            self._watch(fake)
        else:
            self._list(fake)

    def _list(self, fake: FakeKubeApi) -> None:
        try:
            code = fake._list_failures.get_nowait()
        except queue.Empty:
            self._json(200, fake._list_body())
            return
        self._json(code, status_object(code, "Scripted", f"scripted failure {code}"))

    def _watch(self, fake: FakeKubeApi) -> None:
        script = fake._next_script()
        if script is None:
            self.close_connection = True
            return
        if script and isinstance(script[0], HttpStatus):
            status = script[0]
            self._json(status.code, status_object(status.code, status.reason, "too old"))
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for action in script:
                if isinstance(action, Hang):
                    fake._release.wait()
                    self.close_connection = True
                    return
                if isinstance(action, Event):
                    line = json.dumps({"type": action.type, "object": action.object}) + "\n"
                    self._chunk(line.encode())
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # the client went away (read timeout, cancellation)
            self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _json(self, code: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
        self.wfile.flush()
